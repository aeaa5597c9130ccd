"""The model lifecycle: adding a version, and switching a role to one, each as one operation that returns what
happened (the CLI, ``sentiment/models.py``, only prints it).

A switch resolves the version, assigns the role (serialized with every other assignment: ``model_store``), waits
until every worker that was running reports it, and keeps it only then. A worker that refuses it, is still loading
it when the wait ends, or stops reporting makes the switch fail: the role goes back to the version it had (unless
someone assigned it again meanwhile), so the store's ``live`` is always what the workers run. Promoting the shadow
version makes it live and turns the shadow off (it would score every event twice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from core.errors import UserError
from core.settings import Settings
from stream.lifecycle import model_store

NO_WORKER_HINT = "start `sentiment worker` on this database first, or pass --offline to set it for the next start"


def worker_timeout(settings: Settings) -> float:
    """A worker that has not reported for this long is not running (it reports every poll interval, loading or
    not)."""
    return max(10.0, 3 * settings.model_poll_interval)


# --- adding ------------------------------------------------------------------------------------------------------


@dataclass
class Added:
    version: str
    manifest: dict | None = None  # None: it was in the store already
    size: int = 0
    seeded: str | None = None  # the configured model, recorded as live because the store had no live version
    seeded_from: Path | None = None
    left_out: list[str] = field(default_factory=list)  # files of the folder that are no run file


def add(
    engine: Engine, settings: Settings, folder: Path, *, allow_tensorflow: bool = False, without_metrics: bool = False
) -> Added:
    """Check a run folder as a worker would and store it; refuses (:class:`UserError`, exit 2, store unchanged) a
    version workers would refuse. The first add to a store without a live version records the configured model as
    live (what workers run until a promote), so that a rollback can return to it."""
    from model.scorer import MODEL_FILE

    files = model_store.artifact_files(folder, settings.model_max_bytes)  # before anything else is done
    version = model_store.sha256_of(model_store.read_own_file(folder / MODEL_FILE))[:12]
    added = Added(version, left_out=_left_out(folder, files))
    if not model_store.has_version(engine, version):
        prepared = _prepare(folder, settings, allow_tensorflow, without_metrics)
        _store(engine, prepared)
        added.manifest, added.size = prepared.manifest, len(prepared.content)
    added.seeded = seed_live(engine, settings)
    added.seeded_from = settings.model if added.seeded else None
    return added


def _left_out(folder: Path, files: list[Path]) -> list[str]:
    kept = {p.name for p in files}
    return sorted(p.name for p in folder.iterdir() if p.name not in kept and not p.name.startswith("."))


def _prepare(folder: Path, settings: Settings, allow_tensorflow: bool, without_metrics: bool):
    from stream.lifecycle.model_gate import prepare

    return prepare(folder, settings, allow_tensorflow=allow_tensorflow, without_metrics=without_metrics)


def _store(engine: Engine, prepared) -> bool:
    return model_store.add_version(
        engine, prepared.version, prepared.content, prepared.manifest, prepared.tables, model_store.who()
    )


def seed_live(engine: Engine, settings: Settings) -> str | None:
    """A store with no live version gets the configured model (``SENTIMENT_MODEL``, what workers run meanwhile).
    Returns its version when it did this."""
    from model.scorer import ModelArtifact

    if model_store.wanted(engine).live is not None:
        return None
    version = ModelArtifact.at(settings.model).version
    if not model_store.has_version(engine, version):
        _store(engine, _prepare(settings.model, settings, False, False))
    model_store.assign(engine, "live", version, model_store.who(), "seed")
    return version


# --- switching ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One worker's answer to a switch: ``runs`` it, or why not (``says``)."""

    worker: str
    runs: bool
    says: str
    final: bool = True  # False: it may still switch (loading, or not started)


@dataclass
class Outcome:
    action: str
    role: str
    version: str | None
    previous: str | None = None
    already: bool = False  # the role had that version: nothing was done
    workers: list[Answer] = field(default_factory=list)
    waited: float = 0.0
    confirmed: bool = True  # every running worker runs it (or none runs, or no wait was asked for)
    no_workers: bool = False
    reverted_to: str | None = None  # the role went back to this version, since the workers did not switch
    reverted: bool = False
    seeded: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.confirmed else 1


def promote(engine: Engine, settings: Settings, prefix: str, *, wait: float, offline: bool) -> Outcome:
    return switch(engine, settings, "live", model_store.resolve(engine, prefix), "promote", wait=wait, offline=offline)


def rollback(engine: Engine, settings: Settings, *, wait: float, offline: bool) -> Outcome:
    _, previous = model_store.rollback_target(engine)
    return switch(engine, settings, "live", previous, "rollback", wait=wait, offline=offline)


def shadow(engine: Engine, settings: Settings, prefix: str | None, *, wait: float) -> Outcome:
    version = None if prefix is None else model_store.resolve(engine, prefix)
    return switch(engine, settings, "shadow", version, "shadow", wait=wait, offline=True)


def switch(
    engine: Engine, settings: Settings, role: str, version: str | None, action: str, *, wait: float, offline: bool
) -> Outcome:
    """Assign ``role`` to ``version``, wait until every running worker runs it, keep it or put the role back."""
    wanted = model_store.wanted(engine)
    current = wanted.live if role == "live" else wanted.shadow
    outcome = Outcome(action, role, version, previous=current.version if current else None)
    if outcome.previous == version and (current is not None or role == "shadow"):
        outcome.already = True
        return outcome
    running = model_store.running_workers(engine, worker_timeout(settings))
    if role == "live" and not running and not offline:
        raise UserError(
            f"no worker is running on this database (none reported in the last {worker_timeout(settings):.0f} s): "
            f"nothing would load {version}",
            NO_WORKER_HINT,
        )
    if role == "live":
        outcome.seeded = seed_live(engine, settings)
    changes = {role: version}
    if role == "live" and wanted.shadow_version == version:
        changes["shadow"] = None  # promoted from shadow: it no longer scores every event a second time
    assigned = model_store.assign_roles(engine, changes, model_store.who(), action)
    outcome.previous = assigned[0].previous
    if not running or wait <= 0:
        outcome.no_workers = not running
        return outcome
    started = time.monotonic()
    outcome.workers = wait_for_workers(engine, settings, [w.worker for w in running], assigned[0], wait)
    outcome.waited = time.monotonic() - started
    outcome.confirmed = all(a.runs for a in outcome.workers)
    if not outcome.confirmed:
        _revert(engine, outcome, assigned)
    return outcome


def _revert(engine: Engine, outcome: Outcome, assigned: list[model_store.Assignment]) -> None:
    """Put every role this switch changed back (unless assigned again meanwhile)."""
    back = {a.role: a.previous for a in assigned}
    if back.get("live", "") is None:  # the live role was never set before: it stays (nothing to go back to)
        return
    done = model_store.assign_roles(
        engine, back, model_store.who(), "revert", only_if_newest={a.role: a.id for a in assigned}
    )
    outcome.reverted = bool(done)
    outcome.reverted_to = outcome.previous if done else None


def wait_for_workers(
    engine: Engine, settings: Settings, names: list[str], assignment: model_store.Assignment, wait: float
) -> list[Answer]:
    """Each named worker's answer once every one is final (runs it, refused it, stopped reporting), or when
    ``wait`` seconds have passed (then a worker still loading says since when)."""
    deadline = time.monotonic() + wait
    while True:
        seen = {w.worker: w for w in model_store.workers(engine)}
        answers = [answer(seen.get(n), n, assignment, worker_timeout(settings)) for n in names]
        if all(a.final for a in answers) or time.monotonic() > deadline:
            return answers
        time.sleep(0.25)


def answer(state: model_store.WorkerState | None, name: str, assignment, timeout: float) -> Answer:
    """What one worker's row says about ``assignment``."""
    role, version = assignment.role, assignment.version
    shown = version or "no shadow"
    if state is None:
        return Answer(name, False, "stopped reporting (no row in model_workers)")
    silent = (model_store.now() - state.seen_at).total_seconds()
    if getattr(state, role) == version:
        return Answer(name, True, f"runs {shown}")
    if state.refused_assignment == assignment.id and state.refused:
        return Answer(name, False, f"refused {state.refused}")
    if silent > timeout:
        return Answer(name, False, f"stopped reporting {silent:.0f} s ago (last heartbeat {_at(state.seen_at)})")
    if state.loading == version and state.loading_since is not None:
        return Answer(name, False, f"loading {shown} since {_at(state.loading_since)}", final=False)
    return Answer(name, False, f"runs {getattr(state, role) or 'no shadow'}, has not loaded {shown}", final=False)


def _at(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"
