"""Deliver scored batches: store -> publish -> ack -> commit, in the order they were taken.

Offsets advance only past messages whose results are stored and delivered (Quix Streams' checkpoint: the sink is
flushed, then the offsets are committed). A failed store or publish is retried with backoff, never skipped.

Deliveries are a pipeline of three stages, each taken by one batch at a time and in the order the batches were
taken: store, publish, then ack and commit. While batch N is published or committed, batch N+1 is stored and batch
N+2 scored: at most ``IN_FLIGHT`` batches are being delivered (memory stays bounded), and none of them is acked
before the batch before it is committed. A batch's results are in the database before they are on the topic, and a
batch is published only after the one before it, so the results keep the order of the reviews in each partition.
Nothing here knows Kafka: the sink, the publisher, ack and commit are handed in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from schemas import Sentiment
from stream.ingest.batch import BatchResult, Incoming
from stream.ingest.retry import retry_with_backoff
from stream.observe import metrics
from stream.observe.health import DATABASE_WRITES_FAILING, Health

# Batches being delivered at once (each in another stage), besides the one being scored. One stage at a time was
# 1 batch: the worker then waited for the database and the broker between two batches (bench/throughput_goals.py).
IN_FLIGHT = 2


class _Stages:
    """One batch's way through the pipeline: a future for each stage it has passed (the next batch waits on them)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.stored = loop.create_future()
        self.published = loop.create_future()

    def fail(self, exc: BaseException) -> None:
        """The batch will not pass its remaining stages: the batches after it must not either (they stay unacked)."""
        for stage in (self.stored, self.published):
            if stage.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                stage.cancel()
            else:
                stage.set_exception(exc)
                stage.exception()  # marked as seen: there may be no batch after this one to await it


class Sink(Protocol):
    def write(self, sentiments: Sequence[Sentiment], ratings: Sequence[int | None] | None = None) -> int:
        """Store the results, each with its review's rating, in one transaction; return how many rows were new."""
        ...


class Delivery:
    def __init__(
        self,
        *,
        sink: Sink,
        publish: Callable[[BatchResult], Awaitable[None]],
        ack: Callable[[Sequence[Any]], Awaitable[object]],
        commit: Callable[[], Awaitable[object]],
        delivered: Callable[[BatchResult, Sequence[Incoming]], None],
        health: Health,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """``ack`` takes a batch's events (the stream acks them), ``commit`` commits the acked offsets, ``delivered``
        hears of each batch once it is committed; ``health`` tells whether the worker is stopping and hears how the database
        is; ``sleep`` waits between retries."""
        self.sink = sink
        self.publish = publish
        self.ack = ack
        self.commit = commit
        self.delivered = delivered
        self.health = health
        self.sleep = sleep
        self.pending: list[tuple[asyncio.Future, _Stages]] = []  # the batches being delivered, oldest first

    @property
    def in_flight(self) -> asyncio.Future | None:
        """The newest batch's delivery (it ends after every batch before it), None before the first."""
        return self.pending[-1][0] if self.pending else None

    async def hand_over(self, events: Sequence[Any], messages: Sequence[Incoming], result: BatchResult) -> None:
        """Start delivering this batch behind the ones in flight and return at once; first, when ``IN_FLIGHT``
        batches are already being delivered, wait until the oldest is done."""
        for task, _ in self.pending:
            if task.done():
                task.result()  # a delivery that failed raises here, in the caller, as it did before the pipeline
        self.pending = [(task, stages) for task, stages in self.pending if not task.done()]
        if len(self.pending) >= IN_FLIGHT:
            await self.pending[0][0]
            self.pending.pop(0)
        before = self.pending[-1] if self.pending else None
        stages = _Stages()
        task = asyncio.ensure_future(self.deliver(events, messages, result, stages, before))
        self.pending.append((task, stages))

    async def drain(self) -> None:
        """Wait until the last batch handed over is delivered (and so every batch before it)."""
        if self.in_flight is not None:
            await self.in_flight

    async def stop(self, within: float) -> None:
        """Stopping: let the batches in flight finish if they can (fewer replays) within ``within`` seconds, else
        cancel them; they then stay unacked and are scored again after a restart."""
        last = self.in_flight
        if last is not None and not last.done():
            try:
                await asyncio.wait_for(asyncio.shield(last), timeout=within)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - they stay unacked
                for task, _ in self.pending:
                    task.cancel()

    async def deliver(
        self,
        events: Sequence[Any],
        messages: Sequence[Incoming],
        result: BatchResult,
        stages: _Stages,
        before: tuple[asyncio.Future, _Stages] | None,
    ) -> None:
        """Store, publish and only then ack and commit one scored batch; each stage after the batch ``before``
        has passed it."""
        retry = partial(retry_with_backoff, stopping=lambda: self.health.stopping, sleep=self.sleep)
        try:
            if before is not None:
                await before[1].stored
            if result.sentiments:
                new_rows = await retry(
                    "database write", partial(asyncio.to_thread, self._store, result), on_failure=self._database_failed
                )
                metrics.DB_ROWS_WRITTEN.inc(new_rows)
            stages.stored.set_result(None)
            if before is not None:
                await before[1].published
            await retry("publish", partial(self.publish, result))
            stages.published.set_result(None)
            if before is not None:
                await before[0]
        except BaseException as exc:
            stages.fail(exc)
            raise
        await self.ack(events)
        # commit now rather than at Faust's next 2.8 s tick: after a crash, only the batches in flight are scored and
        # dead-lettered again, not seconds of them (one OffsetCommit per batch; Faust lets one commit run at a time)
        await self.commit()
        self.delivered(result, messages)

    def _store(self, result: BatchResult) -> int:
        started = time.perf_counter()
        new_rows = self.sink.write(result.sentiments, result.ratings)
        metrics.DB_WRITE_SECONDS.observe(time.perf_counter() - started)
        self.health.update(database_error=None)
        return new_rows

    def _database_failed(self, exc: Exception) -> None:
        self.health.update(database_error=DATABASE_WRITES_FAILING)  # retry_with_backoff logs what the driver said
