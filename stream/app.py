"""The Faust app and its one agent.

The agent is a short loop: take a micro-batch -> decode, validate and score it -> write the
results (PostgreSQL, then the ``sentiments`` and dead-letter topics) -> ack, so that offsets
advance only past messages whose results are stored and delivered. A failed write is retried
with backoff, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import faust

from model.scorer import load_scorer
from sentiment.settings import Settings
from stream.batch import BatchResult, BatchScorer, Incoming, dead_letter_headers
from stream.db import make_engine
from stream.sinks import SqlSink

log = logging.getLogger("sentiment.worker")

T = TypeVar("T")


async def retry_with_backoff(
    what: str, attempt: Callable[[], Awaitable[T]], *, first_delay: float = 0.5, max_delay: float = 10.0
) -> T:
    """Run ``attempt`` until it succeeds, sleeping longer after each failure (cancellation ends it)."""
    delay = first_delay
    failures = 0
    while True:
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a write is retried
            failures += 1
            log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, failures, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            if failures:
                log.info("%s succeeded after %d failed attempts", what, failures)
            return result


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url(),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        store="memory://",
    )
    reviews = app.topic(settings.topic_reviews, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    sentiments = app.topic(settings.topic_sentiments, value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic_dlq, value_serializer="raw", key_serializer="raw")

    scorer = load_scorer(settings.model)
    batch_scorer = BatchScorer(
        scorer, max_text_chars=settings.max_text_chars, max_message_bytes=settings.max_message_bytes
    )
    sink = SqlSink(make_engine(settings.database_url))
    log.info("model %s loaded from %s", scorer.version, settings.model)

    async def publish(result: BatchResult) -> None:
        deliveries = [
            await sentiments.send(key=s.movie_id.encode(), value=s.to_json(), force=True) for s in result.sentiments
        ]
        deliveries += [
            await dead_letters.send(key=m.key, value=m.value, headers=dead_letter_headers(m, why), force=True)
            for m, why in result.rejected
        ]
        await asyncio.gather(*deliveries)

    @app.agent(reviews, name="score-reviews")
    async def score_reviews(stream):
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait):
            messages = [
                Incoming(
                    value=e.message.value,
                    key=e.message.key,
                    timestamp=e.message.timestamp,
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                )
                for e in events
            ]
            result = await asyncio.to_thread(batch_scorer.process, messages)
            if result.sentiments:
                await retry_with_backoff("database write", lambda: asyncio.to_thread(sink.write, result.sentiments))
            await retry_with_backoff("publish", lambda: publish(result))
            for event in events:
                await stream.ack(event)
            for message, why in result.rejected:
                log.warning(
                    "rejected %s[%d]@%d to %s: %s",
                    message.topic, message.partition, message.offset, settings.topic_dlq, why.reason,
                )

    return app


def run_worker(settings: Settings) -> None:
    """Run one worker process until SIGINT/SIGTERM."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()
