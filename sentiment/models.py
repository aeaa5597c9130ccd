"""``sentiment model add|list|promote|shadow|rollback``: the model store as its user sees it (the SQL is in
``stream.model_store``, the checks in ``stream.model_gate``, the worker's side in ``stream.model_swap``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from core.errors import UserError
from core.settings import Settings
from stream import model_store
from stream.db import database_engine

NO_WORKER_HINT = "start `sentiment worker` on this database first, or pass --offline to set it for the next start"


def add(settings: Settings, folder: Path, out=None) -> str:
    """Add a run folder to the store; the first add also records the configured model as the live version (what
    workers run until a promote), so that a rollback can return to it. Returns the version. The folder is checked
    (and loaded with TensorFlow) before anything is written."""
    out = out or sys.stdout
    from model.scorer import MODEL_FILE, model_version

    model_store.artifact_files(folder)  # a folder that is no model fails before anything else is done
    engine = database_engine(settings)
    try:
        version = model_version(folder / MODEL_FILE)
        prepared = None if model_store.has_version(engine, version) else _prepare(folder, settings)
        seeded = seed_live(engine, settings, out)
        if seeded == version:
            return version
        if prepared is None or not _store(engine, prepared, folder, settings, out):
            print(f"{version} is already in the model store (a version is its content: nothing changed)", file=out)
        return version
    finally:
        engine.dispose()


def _prepare(folder: Path, settings: Settings):
    from stream.model_gate import prepare

    return prepare(folder, settings.cache_dir)


def _store(engine: Engine, prepared, folder: Path, settings: Settings, out) -> bool:
    added = model_store.add_version(
        engine, prepared.version, prepared.content, prepared.manifest, prepared.tables, model_store.who()
    )
    if added:
        print(f"added {prepared.version} from {folder}: {describe(prepared.manifest, len(prepared.content))}", file=out)
        canary = prepared.manifest["canary"]["accuracy"]
        if canary < settings.canary_min_accuracy:
            print(
                f"warning: its canary accuracy {canary:.3f} is below SENTIMENT_CANARY_MIN_ACCURACY "
                f"{settings.canary_min_accuracy}: workers will refuse it",
                file=sys.stderr,
            )
    return added


def seed_live(engine: Engine, settings: Settings, out) -> str | None:
    """A store with no live version gets the configured model (``SENTIMENT_MODEL``, what workers run meanwhile).
    Returns its version when it did this."""
    from model.scorer import ModelArtifact

    if model_store.wanted(engine).live is not None:
        return None
    version = ModelArtifact.at(settings.model).version
    if not model_store.has_version(engine, version):
        _store(engine, _prepare(settings.model, settings), settings.model, settings, out)
    model_store.assign(engine, "live", version, model_store.who(), "seed")
    print(
        f"the store had no live version: {version} ({settings.model}, what workers run until a promote) is live",
        file=out,
    )
    return version


def describe(manifest: dict, size: int) -> str:
    parts = [f"{len(manifest.get('files', []))} files, {size / 1e6:.1f} MB"]
    for split in ("validation", "test"):
        accuracy = (manifest.get(split) or {}).get("accuracy")
        if accuracy is not None:
            parts.append(f"{split} accuracy {accuracy:.4f}")
    parts.append(f"canary accuracy {manifest['canary']['accuracy']:.3f}")
    return ", ".join(parts)


def list_store(settings: Settings, as_json: bool, out=None) -> None:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        stored = model_store.versions(engine)
        wanted = model_store.wanted(engine)
        history = model_store.history(engine, 10)
        workers = model_store.running_workers(engine, worker_timeout(settings))
    finally:
        engine.dispose()
    if as_json:
        print(
            json.dumps(
                {
                    "versions": [
                        {
                            "version": v.version,
                            "sha256": v.sha256,
                            "bytes": v.size_bytes,
                            "added_at": v.added_at.isoformat(),
                            "added_by": v.added_by,
                            "roles": roles_of(v.version, wanted),
                            "manifest": {k: val for k, val in v.manifest.items() if k != "canary"}
                            | {"canary_accuracy": v.manifest["canary"]["accuracy"]},
                        }
                        for v in stored
                    ],
                    "live": _assignment_json(wanted.live),
                    "shadow": _assignment_json(wanted.shadow),
                    "history": [_assignment_json(a) for a in history],
                    "workers": [w.__dict__ | {"seen_at": w.seen_at.isoformat()} for w in workers],
                },
                indent=2,
                default=str,
            ),
            file=out,
        )
        return
    if not stored:
        print(f"the model store is empty; workers run the configured model ({settings.model})", file=out)
        print("  add one: sentiment model add runs/NAME-VERSION/", file=out)
        return
    print(
        f"{'version':<13} {'role':<11} {'added (UTC)':<17} {'by':<24} {'val acc':>7} {'test acc':>8} {'canary':>6}",
        file=out,
    )
    for v in stored:
        m = v.manifest
        role = ",".join(roles_of(v.version, wanted)) or "-"
        print(
            f"{v.version:<13} {role:<11} {v.added_at:%Y-%m-%d %H:%M} {v.added_by[:24]:<24} "
            f"{_accuracy(m.get('validation')):>7} {_accuracy(m.get('test')):>8} {m['canary']['accuracy']:>6.3f}",
            file=out,
        )
    for role, assignment in (("live", wanted.live), ("shadow", wanted.shadow)):
        if assignment is None:
            what = "never set (workers run the configured model)" if role == "live" else "off"
        else:
            what = f"{assignment.version or 'off'} since {assignment.set_at:%Y-%m-%d %H:%M:%S} by {assignment.set_by}"
        print(f"{role}: {what}", file=out)
    print("history (newest first):", file=out)
    for a in history:
        nothing = "none" if a.role == "live" else "off"
        print(
            f"  {a.set_at:%Y-%m-%d %H:%M:%S} {a.action:<8} {a.role:<6} {a.previous or nothing} -> {a.version or 'off'}"
            f"  by {a.set_by}",
            file=out,
        )
    print(f"workers seen in the last {worker_timeout(settings):.0f} s: {len(workers)}", file=out)
    for w in workers:
        refused = f"; refused {w.refused}" if w.refused else ""
        print(f"  {w.worker}: live {w.live}, shadow {w.shadow or 'off'}{refused}", file=out)
        if w.evidence:
            print(f"    {w.evidence}", file=out)


def roles_of(version: str, wanted: model_store.Wanted) -> list[str]:
    return [role for role, v in (("live", wanted.live_version), ("shadow", wanted.shadow_version)) if v == version]


def _accuracy(split: dict | None) -> str:
    value = (split or {}).get("accuracy")
    return "-" if value is None else f"{value:.4f}"


def _assignment_json(a: model_store.Assignment | None) -> dict | None:
    return None if a is None else a.__dict__ | {"set_at": a.set_at.isoformat()}


def worker_timeout(settings: Settings) -> float:
    """A worker that has not reported for this long is not running (it reports every poll interval)."""
    return max(10.0, 3 * settings.model_poll_interval)


def promote(settings: Settings, version: str, *, offline: bool, wait: float, out=None) -> int:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        version = model_store.resolve(engine, version)
        current = model_store.wanted(engine).live
        if current is not None and current.version == version:
            print(
                f"{version} is already live (since {current.set_at:%Y-%m-%d %H:%M:%S}, by {current.set_by})", file=out
            )
            return 0
        return _make_live(engine, settings, version, "promote", offline=offline, wait=wait, out=out)
    finally:
        engine.dispose()


def rollback(settings: Settings, *, offline: bool, wait: float, out=None) -> int:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        _, previous = model_store.rollback_target(engine)
        return _make_live(engine, settings, previous, "rollback", offline=offline, wait=wait, out=out)
    finally:
        engine.dispose()


def _make_live(
    engine: Engine, settings: Settings, version: str, action: str, *, offline: bool, wait: float, out
) -> int:
    workers = model_store.running_workers(engine, worker_timeout(settings))
    if not workers and not offline:
        raise UserError(
            f"no worker is running on this database (none reported in the last {worker_timeout(settings):.0f} s): "
            f"nothing would load {version}",
            NO_WORKER_HINT,
        )
    if model_store.wanted(engine).live is None:
        seed_live(engine, settings, out)
    done = model_store.assign(engine, "live", version, model_store.who(), action)
    print(f"{action}: live {done.previous or 'none'} -> {version}", file=out)
    if not workers or wait <= 0:
        if not workers:
            print("no worker is running: workers load it when they start", file=out)
        return 0
    return confirm(engine, settings, version, [w.worker for w in workers], wait, out)


def confirm(engine: Engine, settings: Settings, version: str, names: list[str], wait: float, out) -> int:
    """Wait until every worker that was running reports ``version`` as live, or refuses it."""
    started = time.monotonic()
    while True:
        seen = {w.worker: w for w in model_store.running_workers(engine, worker_timeout(settings))}
        switched = [n for n in names if n in seen and seen[n].live == version]
        refused = [seen[n] for n in names if n in seen and seen[n].refused and seen[n].refused.startswith(version)]
        gone = [n for n in names if n not in seen]
        elapsed = time.monotonic() - started
        if refused:
            for w in refused:
                print(f"{w.worker} refused it and keeps {w.live}: {w.refused}", file=sys.stderr)
            raise UserError(
                f"{len(refused)} of {len(names)} workers refused {version}",
                "see the reasons above; `sentiment model rollback` sets the live version before it again",
            )
        if len(switched) + len(gone) == len(names):
            print(f"{len(switched)} of {len(names)} workers run {version} after {elapsed:.1f} s", file=out)
            for n in gone:
                print(f"  {n} stopped reporting (it loads the live version when it starts)", file=out)
            return 0
        if elapsed > wait:
            waiting = [n for n in names if n not in switched and n not in gone]
            raise UserError(
                f"{len(waiting)} of {len(names)} workers did not switch to {version} within {wait:.0f} s: "
                f"{', '.join(waiting)}",
                "they keep trying; `sentiment model list` shows what each runs",
            )
        time.sleep(0.25)


def shadow(settings: Settings, version: str | None, out=None) -> int:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        if version is not None:
            version = model_store.resolve(engine, version)
        current = model_store.wanted(engine).shadow
        if (current.version if current else None) == version:
            print(f"the shadow is already {version or 'off'}", file=out)
            return 0
        done = model_store.assign(engine, "shadow", version, model_store.who(), "shadow")
    finally:
        engine.dispose()
    print(f"shadow: {done.previous or 'off'} -> {version or 'off'}", file=out)
    return 0


def add_and_promote(settings: Settings, folder: Path, out=None) -> None:
    """``sentiment train --promote``: the new run goes into the store and becomes live (for workers running now,
    at once; for the others, when they start)."""
    out = out or sys.stdout
    version = add(settings, folder, out)
    engine = database_engine(settings)
    try:
        if model_store.wanted(engine).live_version != version:
            _make_live(engine, settings, version, "promote", offline=True, wait=15.0, out=out)
    finally:
        engine.dispose()
