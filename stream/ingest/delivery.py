"""Deliver scored batches: store -> publish -> ack -> commit, in the order they were taken.

Offsets advance only past messages whose results are stored and delivered (Quix Streams' checkpoint: the sink is
flushed, then the offsets are committed). A failed store or publish is retried with backoff, never skipped. One
batch is delivered while the caller scores the next (two batches in flight); a batch starts its delivery only when
the one before it is done. Nothing here knows Kafka: the sink, the publisher, ack and commit are handed in.
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
        ack: Callable[[Any], Awaitable[object]],
        commit: Callable[[], Awaitable[object]],
        delivered: Callable[[BatchResult, Sequence[Incoming]], None],
        health: Health,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """``ack`` takes one event (the stream's ack), ``commit`` commits the acked offsets, ``delivered`` hears of
        each batch once it is committed; ``health`` tells whether the worker is stopping and hears how the database
        is; ``sleep`` waits between retries."""
        self.sink = sink
        self.publish = publish
        self.ack = ack
        self.commit = commit
        self.delivered = delivered
        self.health = health
        self.sleep = sleep
        self.in_flight: asyncio.Future | None = None  # the batch being delivered, at most one

    async def hand_over(self, events: Sequence[Any], messages: Sequence[Incoming], result: BatchResult) -> None:
        """Wait until the batch before is delivered, then start delivering this one and return at once."""
        if self.in_flight is not None:
            await self.in_flight
        self.in_flight = asyncio.ensure_future(self.deliver(events, messages, result))

    async def drain(self) -> None:
        """Wait until the last batch handed over is delivered."""
        if self.in_flight is not None:
            await self.in_flight

    async def stop(self, within: float) -> None:
        """Stopping: let the batch in flight finish if it can (fewer replays) within ``within`` seconds, else
        cancel it; it then stays unacked and is scored again after a restart."""
        if self.in_flight is not None and not self.in_flight.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.in_flight), timeout=within)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - it stays unacked
                self.in_flight.cancel()

    async def deliver(self, events: Sequence[Any], messages: Sequence[Incoming], result: BatchResult) -> None:
        """Store, publish and only then ack and commit one scored batch."""
        retry = partial(retry_with_backoff, stopping=lambda: self.health.stopping, sleep=self.sleep)
        if result.sentiments:
            new_rows = await retry(
                "database write", partial(asyncio.to_thread, self._store, result), on_failure=self._database_failed
            )
            metrics.DB_ROWS_WRITTEN.inc(new_rows)
        await retry("publish", partial(self.publish, result))
        for event in events:
            await self.ack(event)
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
