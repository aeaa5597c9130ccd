"""A worker follows the model store without a restart.

The :class:`ModelWatcher` looks at the store every ``SENTIMENT_MODEL_POLL_INTERVAL`` seconds (one short query, off
the event loop). When the live or shadow version there is not the one this worker runs, it fetches, unpacks, loads
and checks that version in a thread (``stream.lifecycle.model_gate.load_checked``) while the stream goes on with the old one,
then offers it to the :class:`ModelSwitch`. The switch changes models only between two batches: the agent applies
what is offered before it scores a batch, under the same lock the scoring holds, so no batch is scored by two
versions and every result carries the version that scored it. A version that fails its check is refused (a log line,
``sentiment_model_swap_failures_total``) and the old one kept; it is tried again only when it is assigned again.
Each poll also reports what this worker runs to ``model_workers``, which ``sentiment model promote`` reads.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from core.messages import first_line
from core.settings import Settings
from model.scorer import ModelArtifact, Scorer
from stream.lifecycle import model_store
from stream.lifecycle.model_gate import LoadedModel, Refused, load_checked
from stream.observe import metrics

log = logging.getLogger("sentiment.worker")


class Scoring(Protocol):
    scorer: Scorer
    shadow: Scorer | None


class Watching(Protocol):
    def live_changed(self, artifact: ModelArtifact, scorer: Scorer) -> None: ...

    def shadow_changed(self, version: str | None) -> None: ...


class ModelSwitch:
    """The versions the stream scores with, and those waiting to take over between two batches."""

    def __init__(self, live: LoadedModel, batch_scorer: Scoring, observer: Watching | None = None) -> None:
        self.live = live
        self.shadow: LoadedModel | None = None
        self.batch_scorer = batch_scorer
        self.observer = observer
        self.pending: dict[str, LoadedModel | None] = {}
        self.scoring = asyncio.Lock()  # held while a batch is scored; a swap happens only outside it
        map_large_blocks()
        self.swaps = 0
        self.to_release = False  # a model was switched out: its memory is to be given back (by the watcher)

    def current(self) -> Scorer:
        """The live scorer now (the page and ``/api/score`` ask for it on every request)."""
        return self.live.scorer

    def version_of(self, role: str) -> str | None:
        """The version a role has, or will have once what is offered is applied."""
        if role in self.pending:
            model = self.pending[role]
        else:
            model = self.live if role == "live" else self.shadow
        return model.version if model is not None else None

    def offer(self, role: str, model: LoadedModel | None) -> None:
        self.pending[role] = model

    def apply(self) -> list[tuple[str, str | None, str | None]]:
        """Switch to what is offered; call it only between batches (under :attr:`scoring`). Returns the changes:
        (role, old version, new version)."""
        if not self.pending:
            return []
        started = time.perf_counter()
        pending, self.pending = self.pending, {}
        changes = []
        if "live" in pending and pending["live"] is not None:
            old, self.live = self.live, pending["live"]
            self.batch_scorer.scorer = self.live.scorer
            if self.observer is not None:
                self.observer.live_changed(self.live.artifact, self.live.scorer)
            changes.append(("live", old.version, self.live.version))
        if "shadow" in pending:
            old_shadow, self.shadow = self.shadow, pending["shadow"]
            self.batch_scorer.shadow = self.shadow.scorer if self.shadow is not None else None
            if self.observer is not None:
                self.observer.shadow_changed(self.shadow.version if self.shadow is not None else None)
            changes.append(("shadow", old_shadow.version if old_shadow else None, self.version_of("shadow")))
        pause = time.perf_counter() - started
        metrics.MODEL_SWAP_PAUSE_SECONDS.observe(pause)
        self.forget_series(changes)
        self.to_release = True
        for role, old_version, new_version in changes:
            self.swaps += 1
            metrics.MODEL_SWAPS.labels(role=role).inc()
            log.info(
                "%s model %s -> %s, switched between two batches (pause %.2f ms)",
                role,
                old_version or "none",
                new_version or "none (shadow off)",
                pause * 1000,
            )
        return changes

    def forget_series(self, changes: list[tuple[str, str | None, str | None]]) -> None:
        """The series labelled by a version that no role has any more leave the metrics (its accuracy, shadow
        agreement, score histogram): a version's figures are exported only while it scores."""
        kept = {self.live.version, self.shadow.version if self.shadow else None}
        for _, old_version, _ in changes:
            if old_version is not None and old_version not in kept:
                metrics.forget_version(old_version)

    async def apply_between_batches(self) -> None:
        """Apply what is offered as soon as no batch is being scored (an idle stream switches too), then give the
        memory of what was switched out back, whoever switched it (here, or the agent before its next batch)."""
        if self.pending:
            async with self.scoring:
                self.apply()
        if self.to_release:
            self.to_release = False
            await asyncio.to_thread(release_memory)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
M_ARENA_MAX = -8


def map_large_blocks(threshold: int = 4 * 1024 * 1024, arenas: int = 2) -> None:
    """Have glibc serve every block over ``threshold`` bytes with its own mapping, returned to the system when freed.
    By default glibc raises that threshold each time such a block is freed (up to 32 MB), after which a model's
    arrays come from the heap and its holes stay resident after a swap: the settled memory crept up swap by swap.
    At most ``arenas`` malloc arenas: a model loads in one thread while batches are scored in another, and each
    thread's own arena kept its share of holes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc
        pass


def release_memory() -> None:
    """Give the old model's memory back: collect what only cycles hold, and ask glibc to return free pages."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages, the memory is still reused
        pass


def worker_name(settings: Settings) -> str:
    return f"{settings.app_id}@{socket.gethostname()}:{os.getpid()}"


class ModelWatcher:
    """Polls the store, loads and checks new versions off the event loop, offers them to the switch, and reports
    what this worker runs (and, while it loads one, what and since when: its heartbeat goes on meanwhile). One load
    at a time: a poll that comes while another loads only reports."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        switch: ModelSwitch,
        load: Callable[[Engine, str, Settings], LoadedModel] = load_checked,
        refused: str | None = None,
        evidence: Callable[[], str | None] = lambda: None,
        health=None,
    ) -> None:
        self.engine = engine
        self.evidence = evidence  # shadow against live on rated reviews, in words, once measured (reported)
        self.settings = settings
        self.switch = switch
        self.load = load
        self.name = worker_name(settings)
        self.tried: set[tuple[str, int]] = set()  # (role, assignment id) already loaded or refused
        self.refused = refused  # the last refusal, as reported to the store
        self.refused_assignment: int | None = None
        self.loading: tuple[str, datetime] | None = None  # the version being loaded, since when
        self.busy = False
        self.store_away = False
        self.health = health

    def start_with(self, role: str, model: LoadedModel, assignment: int) -> None:
        """A version loaded and checked before the stream started (the shadow set before start): applied before
        the first batch is scored (the agent applies what is offered first), and not loaded again."""
        self.switch.offer(role, model)
        self.tried.add((role, assignment))

    async def poll(self) -> None:
        if self.busy:  # another poll is loading a version: this one only says the worker is alive
            await self.report()
            return
        self.busy = True
        try:
            await self._poll()
        finally:
            self.busy = False

    async def _poll(self) -> None:
        try:
            wanted = await asyncio.to_thread(model_store.wanted, self.engine)
        except SQLAlchemyError as exc:
            if not self.store_away:
                log.warning("cannot read the model store (keeping the models in use): %s", first_line(exc))
            self.store_away = True
            return
        self.store_away = False
        await self.follow("live", wanted.live)
        await self.follow("shadow", wanted.shadow)
        await self.switch.apply_between_batches()
        self.say_readiness(wanted)
        await self.report()

    def say_readiness(self, wanted: model_store.Wanted) -> None:
        """A worker that does not run the store's live version says so: ``/readyz`` and
        ``sentiment_model_live_mismatch``."""
        from stream.observe.health import health as worker_health

        live = wanted.live_version
        running = self.switch.live.version
        problem = None
        if live is not None and live != running:
            why = self.refused if self.refused and self.refused.startswith(live) else "not loaded yet"
            problem = f"runs {running}, not the store's live version {live} ({why})"
        (self.health or worker_health).update(model_error=problem)
        metrics.MODEL_LIVE_MISMATCH.set(0 if problem is None else 1)

    async def report(self) -> None:
        state = model_store.WorkerState(
            self.name,
            self.switch.live.version,
            self.switch.shadow.version if self.switch.shadow else None,
            self.refused,
            model_store.now(),
            self.evidence(),
            self.loading[0] if self.loading else None,
            self.loading[1] if self.loading else None,
            self.refused_assignment,
        )
        try:
            await asyncio.to_thread(model_store.report_worker, self.engine, state)
        except SQLAlchemyError as exc:
            log.debug("cannot report to model_workers: %s", first_line(exc))

    async def follow(self, role: str, assignment: model_store.Assignment | None) -> None:
        if assignment is None:  # never set: the live role stays the configured model, the shadow off
            return
        target = assignment.version
        if target == self.switch.version_of(role) or (role, assignment.id) in self.tried:
            return
        self.tried.add((role, assignment.id))  # loaded or refused once: not again until the store changes
        if target is None:
            self.switch.offer(role, None)
            return
        log.info("model store: %s version is %s (set by %s); loading it", role, target, assignment.set_by)
        started = time.perf_counter()
        try:
            model = await self._load_reporting(target)
        except SQLAlchemyError as exc:  # the store went away while fetching: try again at the next poll
            self.tried.discard((role, assignment.id))
            log.warning("cannot fetch model %s from the store (will try again): %s", target, first_line(exc))
            return
        except Refused as exc:
            self.refuse(role, target, exc, assignment.id)
            return
        except Exception as exc:  # noqa: BLE001 - any other failure to load is a refusal too, never a crash
            self.refuse(role, target, Refused("load_failed", first_line(exc)), assignment.id)
            return
        metrics.MODEL_LOAD_SECONDS.observe(time.perf_counter() - started)
        log.info("model %s loaded and checked in %.1f s; switching %s at the next batch", target,
                 time.perf_counter() - started, role)  # fmt: skip
        self.switch.offer(role, model)

    async def _load_reporting(self, target: str) -> LoadedModel:
        """Load ``target`` in a thread while the heartbeat says "loading TARGET since T" every poll interval."""
        self.loading = (target, model_store.now())
        beating = asyncio.create_task(self._heartbeat())
        try:
            return await asyncio.to_thread(self.load, self.engine, target, self.settings)
        except BaseException:
            await asyncio.to_thread(release_memory)  # what a refused version's check left goes back to the system
            raise
        finally:
            beating.cancel()
            self.loading = None

    async def _heartbeat(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self.settings.model_poll_interval)

    def refuse(self, role: str, version: str, why: Refused, assignment: int | None = None) -> None:
        metrics.MODEL_SWAP_FAILURES.labels(version=version, reason=why.reason).inc()
        kept = self.switch.version_of(role)
        log.warning(
            "refused model %s as %s (%s): %s; keeping %s", version, role, why.reason, why.detail, kept or "no shadow"
        )
        self.refused = f"{version} as {role}: {why.reason}: {why.detail}"[:500]
        self.refused_assignment = assignment
