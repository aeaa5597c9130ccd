"""The Faust app and its one agent.

The agent is a short loop: take a micro-batch -> decode, validate and score it -> write the
results (PostgreSQL, then the ``sentiments`` and dead-letter topics) -> ack, so that offsets
advance only past messages whose results are stored and delivered. A failed write is retried
with backoff, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import faust

from model.scorer import ModelArtifact, load_scorer
from sentiment.settings import Settings, faust_credentials
from stream import metrics
from stream.batch import BatchResult, BatchScorer, Incoming, dead_letter_headers
from stream.db import make_engine
from stream.drift import DriftMonitor
from stream.sinks import SqlSink

log = logging.getLogger("sentiment.worker")

T = TypeVar("T")
DEAD_LETTER_MAX_BYTES = 16 * 1024 * 1024


async def retry_with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    on_failure: Callable[[], None] | None = None,
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
            if on_failure is not None:
                on_failure()
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
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # a rejected message goes to the dead-letter topic unchanged, so the producer must carry anything
        # the consumer can read
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        consumer_max_fetch_size=DEAD_LETTER_MAX_BYTES,
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        store="memory://",
    )
    reviews = app.topic(
        settings.topic_reviews, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    sentiments = app.topic(settings.topic_sentiments, value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic_dlq, value_serializer="raw", key_serializer="raw")

    artifact = ModelArtifact.at(settings.model)
    scorer = load_scorer(artifact)
    batch_scorer = BatchScorer(
        scorer, max_text_chars=settings.max_text_chars, max_message_bytes=settings.max_message_bytes
    )
    sink = SqlSink(make_engine(settings.database_url))
    drift = DriftMonitor(artifact.reference_scores(), window=settings.drift_window)
    metrics.MODEL_INFO.labels(version=scorer.version).set(1)
    metrics.PSI_THRESHOLD.set(settings.psi_threshold)
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

    def write_to_database(result: BatchResult) -> int:
        started = time.perf_counter()
        new_rows = sink.write(result.sentiments)
        metrics.DB_WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.READY.set(1)
        return new_rows

    def not_ready() -> None:
        metrics.READY.set(0)

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
            metrics.REVIEWS_CONSUMED.inc(len(messages))
            metrics.BATCH_SIZE.observe(len(messages))
            started = time.perf_counter()
            result = await asyncio.to_thread(batch_scorer.process, messages)
            metrics.BATCH_SCORING_SECONDS.observe(time.perf_counter() - started)
            if result.sentiments:
                new_rows = await retry_with_backoff(
                    "database write", partial(asyncio.to_thread, write_to_database, result), on_failure=not_ready
                )
                metrics.DB_ROWS_WRITTEN.inc(new_rows)
            await retry_with_backoff("publish", partial(publish, result))
            for event in events:
                await stream.ack(event)
            record_batch(result, messages)

    last_offsets: dict[tuple[str, int], int] = {}

    def record_batch(result: BatchResult, messages: list[Incoming]) -> None:
        now = time.time()
        scores = [s.score for s in result.sentiments]
        metrics.REVIEWS_SCORED.inc(len(scores))
        metrics.EVENTS_SENT.labels(topic="sentiments").inc(len(scores))
        metrics.EVENTS_SENT.labels(topic="dead_letter").inc(len(result.rejected))
        for message, why in result.rejected:
            metrics.REVIEWS_REJECTED.labels(reason=why.reason).inc()
            log.warning(
                "rejected %s[%d]@%d to %s: %s",
                message.topic,
                message.partition,
                message.offset,
                settings.topic_dlq,
                why.reason,
            )
        for message in messages:
            if message.timestamp is not None:
                metrics.END_TO_END_SECONDS.observe(max(0.0, now - message.timestamp))
        for score in scores:
            metrics.SCORE.observe(score)
        drift.add(scores)
        metrics.DRIFT_WINDOW.set(len(drift.window))
        metrics.POSITIVE_RATIO.set(drift.positive_ratio())
        if drift.ready:
            metrics.SCORE_PSI.set(drift.psi())
            metrics.SCORE_KS.set(drift.ks())
        for m in messages:
            key = (m.topic, m.partition)
            last_offsets[key] = max(m.offset, last_offsets.get(key, -1))
        metrics.CONSUMER_LAG.set(consumer_lag(app, last_offsets))
        metrics.mark_batch_done()

    return app


def consumer_lag(app: faust.App, last_offsets: dict[tuple[str, int], int]) -> float:
    """Messages waiting behind the last processed offset of each partition, from the Fetch high
    watermark (not from ListOffsets, which Tansu answers wrongly for multi-record batches)."""
    assigned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
    last = {key: offset for key, offset in last_offsets.items() if key in assigned}
    lag = 0
    try:
        for (topic, partition), offset in last.items():
            highwater = app.consumer.highwater(faust.types.TP(topic, partition))
            if highwater is not None:
                lag += max(0, highwater - offset - 1)
    except Exception:  # noqa: BLE001 - lag is best effort; the broker may not know it yet
        return float("nan")
    return float(lag)


def run_worker(settings: Settings) -> None:
    """Run one worker process until SIGINT/SIGTERM."""
    app = create_app(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()
