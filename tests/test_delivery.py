"""Delivery without a broker: batches are stored, published, acked and committed in the order they were taken, a
failed write is retried until it succeeds, and nothing is acked or committed before its results are stored and sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from schemas import Rejection, Sentiment
from stream.ingest.batch import BatchResult, Incoming
from stream.ingest.delivery import Delivery
from stream.observe.health import DATABASE_WRITES_FAILING, Health


def batch(name: str, reviews: int = 2, rejected: int = 0) -> tuple[list[str], list[Incoming], BatchResult]:
    """A scored batch: its events (here plain names), its messages and its result."""
    events = [f"{name}-{i}" for i in range(reviews + rejected)]
    messages = [Incoming(value=b"{}", topic="reviews", partition=0, offset=i) for i in range(len(events))]
    sentiments = [
        Sentiment(f"{name}-r{i}", "tt1", 0.9, "positive", "v1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        for i in range(reviews)
    ]
    rejections = [(m, Rejection("invalid_json", "not JSON")) for m in messages[reviews:]]
    return events, messages, BatchResult(sentiments=sentiments, rejected=rejections)


class World:
    """The delivery's collaborators as fakes that write what happens, in order, to one log."""

    def __init__(self, store_failures: int = 0, publish_failures: int = 0, store_seconds: float = 0.0) -> None:
        self.log: list[tuple[str, str]] = []
        self.store_failures = store_failures
        self.publish_failures = publish_failures
        self.store_seconds = store_seconds
        self.sleeps: list[float] = []
        self.health = Health()
        self.publish_blocks: asyncio.Event | None = None  # set: publishing waits for it
        self.before_sleep = lambda: None

    def write(self, sentiments, ratings=None) -> int:  # the sink; runs in a thread, like the SQL sink
        time.sleep(self.store_seconds)
        if self.store_failures:
            self.store_failures -= 1
            self.log.append(("store failed", sentiments[0].review_id))
            raise OSError("connection refused\nsecond line")
        self.log.append(("store", sentiments[0].review_id))
        return len(sentiments)

    async def publish(self, result: BatchResult) -> None:
        if self.publish_blocks is not None:
            await self.publish_blocks.wait()
        first = (result.sentiments[0].review_id if result.sentiments else "") or "rejected only"
        if self.publish_failures:
            self.publish_failures -= 1
            self.log.append(("publish failed", first))
            raise ConnectionError("broker away")
        self.log.append(("publish", first))

    async def ack(self, events: list[str]) -> None:
        self.log.extend(("ack", event) for event in events)

    async def commit(self) -> None:
        self.log.append(("commit", ""))

    def delivered(self, result: BatchResult, messages) -> None:
        self.log.append(("delivered", str(len(messages))))

    async def sleep(self, seconds: float) -> None:
        self.before_sleep()
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def delivery(self) -> Delivery:
        return Delivery(
            sink=self,  # write() above
            publish=self.publish,
            ack=self.ack,
            commit=self.commit,
            delivered=self.delivered,
            health=self.health,
            sleep=self.sleep,
        )

    def steps(self) -> list[str]:
        return [step for step, _ in self.log]


def test_a_batch_is_stored_then_published_then_acked_and_committed():
    world = World()
    delivery = world.delivery()

    async def run():
        await delivery.hand_over(*batch("a", reviews=2))
        await delivery.drain()

    asyncio.run(run())
    assert world.log == [
        ("store", "a-r0"),
        ("publish", "a-r0"),
        ("ack", "a-0"),
        ("ack", "a-1"),
        ("commit", ""),
        ("delivered", "2"),
    ]


def test_a_batch_of_rejected_messages_only_does_not_touch_the_database():
    world = World()
    delivery = world.delivery()

    async def run():
        await delivery.hand_over(*batch("a", reviews=0, rejected=2))
        await delivery.drain()

    asyncio.run(run())
    assert world.steps() == ["publish", "ack", "ack", "commit", "delivered"]


def test_batches_are_delivered_as_a_pipeline_each_stage_in_the_order_they_were_taken():
    world = World(store_seconds=0.05)  # the first batch's store is slow
    delivery = world.delivery()
    seen_while_scoring = []

    async def run():
        await delivery.hand_over(*batch("a"))
        seen_while_scoring.append(list(world.log))  # hand_over returned at once: the caller may score the next
        await delivery.hand_over(*batch("b"))  # returns at once too: two batches in flight
        seen_while_scoring.append(list(world.log))
        await delivery.hand_over(*batch("c"))  # a third waits until the oldest ("a") is delivered
        assert world.steps().count("delivered") >= 1
        await delivery.drain()

    asyncio.run(run())
    assert seen_while_scoring == [[], []]
    for step in ("store", "publish"):
        assert [what for kind, what in world.log if kind == step] == ["a-r0", "b-r0", "c-r0"]
    acked = [what for step, what in world.log if step == "ack"]
    assert acked == ["a-0", "a-1", "b-0", "b-1", "c-0", "c-1"]
    assert world.steps().count("commit") == 3  # once after each batch
    for name in "abc":  # each batch is stored before it is published, and published before it is acked
        assert world.log.index(("store", f"{name}-r0")) < world.log.index(("publish", f"{name}-r0"))
        assert world.log.index(("publish", f"{name}-r0")) < world.log.index(("ack", f"{name}-0"))
    for n, name in enumerate("abc"):  # nothing of a batch is acked before every batch before it is committed
        first_ack = world.log.index(("ack", f"{name}-0"))
        assert world.steps()[:first_ack].count("commit") == n


def test_a_batch_whose_delivery_fails_takes_the_batches_behind_it_down_unacked():
    world = World()
    delivery = world.delivery()
    world.before_sleep = lambda: world.health.update(stopping=True)  # SIGTERM while "a" is retried

    async def run():
        world.publish_failures = 100
        await delivery.hand_over(*batch("a"))
        await delivery.hand_over(*batch("b"))
        await delivery.stop(within=1.0)
        return [task.cancelled() or task.exception() is not None for task, _ in delivery.pending]

    assert asyncio.run(run()) == [True, True]
    assert "ack" not in world.steps() and "commit" not in world.steps()
    assert ("publish", "b-r0") not in world.log  # "b" may be stored, never published before "a"


def test_failed_writes_are_retried_with_backoff_and_nothing_is_acked_before_they_succeed():
    world = World(store_failures=3, publish_failures=2)
    delivery = world.delivery()
    health_while_failing = []
    world.before_sleep = lambda: health_while_failing.append(world.health.database_error)

    async def run():
        await delivery.hand_over(*batch("a"))
        await delivery.drain()

    asyncio.run(run())
    assert world.steps() == [
        "store failed",
        "store failed",
        "store failed",
        "store",
        "publish failed",
        "publish failed",
        "publish",
        "ack",
        "ack",
        "commit",
        "delivered",
    ]
    assert world.sleeps == [0.5, 1.0, 2.0, 0.5, 1.0]  # doubling, started again for the publish
    # /readyz says what is wrong in our words while the database is away, never the driver's text
    assert health_while_failing[:3] == [DATABASE_WRITES_FAILING] * 3
    assert world.health.database_error is None  # and clears once it answers


def test_stopping_during_a_retry_leaves_the_batch_unacked():
    world = World(store_failures=100)
    delivery = world.delivery()
    world.before_sleep = lambda: world.health.update(stopping=True)  # SIGTERM arrives while the write is retried

    async def run():
        await delivery.hand_over(*batch("a"))
        await asyncio.wait([delivery.in_flight])
        await delivery.stop(within=5.0)
        return delivery.in_flight.cancelled()

    assert asyncio.run(run())
    assert world.steps() == ["store failed", "store failed"]  # no publish, no ack, no commit


def test_on_stop_a_batch_that_cannot_finish_within_the_grace_stays_unacked():
    world = World()
    delivery = world.delivery()

    async def run():
        world.publish_blocks = asyncio.Event()  # the broker never answers
        await delivery.hand_over(*batch("a"))
        started = asyncio.get_running_loop().time()
        await delivery.stop(within=0.1)
        return asyncio.get_running_loop().time() - started

    waited = asyncio.run(run())
    assert 0.09 <= waited < 1.0
    assert "ack" not in world.steps() and "commit" not in world.steps()


def test_on_stop_a_batch_that_finishes_within_the_grace_is_acked():
    world = World()
    delivery = world.delivery()

    async def run():
        world.publish_blocks = asyncio.Event()
        await delivery.hand_over(*batch("a"))
        asyncio.get_running_loop().call_later(0.05, world.publish_blocks.set)  # the broker answers in time
        await delivery.stop(within=5.0)

    asyncio.run(run())
    assert world.steps() == ["store", "publish", "ack", "ack", "commit", "delivered"]


def test_a_delivery_that_fails_for_another_reason_raises_in_the_caller_at_its_next_batch():
    world = World()
    delivery = world.delivery()

    async def broken_commit() -> None:
        raise RuntimeError("commit refused")

    delivery.commit = broken_commit

    async def run():
        await delivery.hand_over(*batch("a"))
        await asyncio.sleep(0.05)  # "a" fails while the caller scores the next batch
        await delivery.hand_over(*batch("b"))

    with pytest.raises(RuntimeError, match="commit refused"):
        asyncio.run(run())
