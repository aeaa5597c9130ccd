"""The Faust app and its one agent.

The agent is a short loop: take a micro-batch -> decode, validate and score it -> write the
results (PostgreSQL, then the ``sentiments`` and dead-letter topics) -> ack, so that offsets
advance only past messages whose results are stored and delivered. A failed write is retried
with backoff, never skipped. On SIGTERM or Ctrl-C the worker stops within ``shutdown_grace``
seconds in every state; an unfinished batch stays unacked and is scored again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.messages import first_line, redact
from core.network import broker_unreachable
from core.settings import Settings, faust_credentials
from model.scorer import ModelArtifact, load_configured_scorer
from stream import metrics
from stream.batch import BatchResult, BatchScorer, Incoming, dead_letter_headers
from stream.db import make_engine
from stream.drift import DriftMonitor, InputDriftMonitor, drift_verdict
from stream.health import health
from stream.publish import BatchPublisher
from stream.sinks import SqlSink
from stream.web import LiveState

if TYPE_CHECKING:
    from stream.preflight import Ready

log = logging.getLogger("sentiment.worker")

T = TypeVar("T")
DEAD_LETTER_MAX_BYTES = 16 * 1024 * 1024
PUBLISH_BATCH_BYTES = 512 * 1024  # a whole micro-batch of results for one partition fits one producer batch
PROBE_INTERVAL = 5.0  # seconds between readiness probes of the database and the broker


async def retry_with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    on_failure: Callable[[Exception], None] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, sleeping longer after each failure (cancellation or stopping ends it)."""
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
                on_failure(exc)
            if health.stopping:
                log.warning("%s failed while stopping; the batch stays unacked: %s", what, first_line(exc))
                raise asyncio.CancelledError() from exc
            log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, failures, delay, first_line(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            if failures:
                log.info("%s succeeded after %d failed attempts", what, failures)
            return result


def probe_database(engine: Engine) -> str | None:
    """None when the database answers ``SELECT 1``, else the first line of why not."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return first_line(exc)
    return None


def probe_broker(settings: Settings) -> str | None:
    """None when a bootstrap server accepts a TCP connection, else why not."""
    reasons = broker_unreachable(settings, min(settings.connect_timeout, 3.0))
    return None if reasons is None else f"unreachable: {reasons}"


@dataclass
class Progress:
    """Running totals for the periodic progress line of the log."""

    scored: int = 0
    rejected: int = 0
    lag: float = float("nan")
    at_last_line: tuple[float, int, int] = field(default_factory=lambda: (time.monotonic(), 0, 0))

    def line(self) -> str:
        now = time.monotonic()
        then, scored, rejected = self.at_last_line
        self.at_last_line = (now, self.scored, self.rejected)
        rate = (self.scored - scored) / max(now - then, 1e-9)
        lag = "unknown" if self.lag != self.lag else f"{self.lag:,.0f}"
        return (
            f"progress: {rate:,.1f} reviews/s, scored {self.scored - scored:,} and rejected {self.rejected - rejected:,} "
            f"in the last {now - then:,.0f} s ({self.scored:,} and {self.rejected:,} in all), lag {lag}, "
            f"{'ready' if health.ready else 'NOT ready: ' + '; '.join(health.reasons())}"
        )


# How long a fetch may wait at the broker when no data is ready. Faust fixes 1,500 ms for its consumer; Apache Kafka
# answers as soon as a record is there, but Tansu holds each fetch until it runs out, which made the latency at
# 200 reviews/s p50 464 ms / p99 849 ms (bench/performance.py); at 100 ms a bare consumer sees p50 27 / p99 55 ms.
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts (aiokafka's Fetcher)
        return consumer


class _Consumer(AIOKafkaConsumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def create_app(settings: Settings, ready: Ready | None = None) -> faust.App:
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
        producer_max_batch_size=PUBLISH_BATCH_BYTES,
        consumer_max_fetch_size=DEAD_LETTER_MAX_BYTES,
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        store="memory://",
        # on stop, do not wait for the current batch to be processed: it stays unacked and is scored again later
        stream_wait_empty=False,
    )
    app.transport.Consumer = _Consumer  # Faust's own, with a shorter fetch wait
    reviews = app.topic(
        settings.topic_reviews, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    sentiments = app.topic(settings.topic_sentiments, value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic_dlq, value_serializer="raw", key_serializer="raw")

    if ready is None:
        artifact = ModelArtifact.at(settings.model)
        scorer = load_configured_scorer(artifact, settings)
        engine = make_engine(settings.database_url, settings.connect_timeout)
    else:
        artifact, scorer, engine = ready.artifact, ready.scorer, ready.engine
    health.update(model_loaded=True)
    batch_scorer = BatchScorer(
        scorer,
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
        uncertain_band=settings.uncertain_band,
    )
    sink = SqlSink(engine)
    drift = DriftMonitor(
        artifact.reference_scores(), window=settings.drift_window, min_scores=settings.drift_min_scores
    )
    reference_inputs = artifact.reference_inputs()
    if reference_inputs is None:
        log.warning(
            "model %s has no reference_inputs.json: input drift is off (python -m training.reference)", scorer.version
        )
    inputs_drift = (
        InputDriftMonitor(reference_inputs, window=settings.drift_window, min_reviews=settings.drift_min_scores)
        if reference_inputs is not None
        else None
    )
    for gauge in (
        metrics.INPUT_OOV_SHIFT,
        metrics.INPUT_LENGTH_SHIFT,
        metrics.INPUT_EMBEDDING_SHIFT,
        metrics.INPUT_MEAN_NGRAMS,
        metrics.DRIFT_VERDICT,
    ):
        gauge.set(float("nan"))
    progress = Progress()
    live = LiveState(
        streaming=True,
        window_scores=lambda: list(drift.window),
        reference_scores=drift.reference,
        psi_threshold=settings.psi_threshold,
    )
    latest_verdict = [float("nan")]
    metrics.MODEL_INFO.labels(version=scorer.version).set(1)
    metrics.SCORING_INFO.labels(path=scorer.scoring).set(1)
    metrics.PSI_THRESHOLD.set(settings.psi_threshold)
    metrics.DRIFT_MIN_SCORES.set(drift.min_scores)
    metrics.SCORE_PSI.set(float("nan"))
    metrics.SCORE_KS.set(float("nan"))

    async def probe() -> None:
        health.beat()
        live.sample(progress.scored, drift.psi(), latest_verdict[0])
        database_error, broker_error = await asyncio.gather(
            asyncio.to_thread(probe_database, engine), asyncio.to_thread(probe_broker, settings)
        )
        was_ready = health.ready
        health.update(database_error=database_error, broker_error=broker_error)
        if was_ready and not health.ready:
            log.warning("not ready: %s", "; ".join(health.reasons()))
        elif health.ready and not was_ready:
            log.info("ready")

    @app.task
    async def announce() -> None:
        where = ready.server.url if ready is not None and ready.server is not None else None
        log.info(
            "model %s from %s, scored %s; group %s; batches of up to %d reviews or %.2f s; database %s; metrics %s",
            scorer.version,
            artifact.folder,
            "compiled (checked against TensorFlow)" if scorer.scoring == "compiled" else "with TensorFlow",
            settings.app_id,
            settings.batch_size,
            settings.batch_wait,
            redact(settings.database_url),
            f"{where}/metrics (and /healthz, /readyz)" if where else "off (SENTIMENT_METRICS_PORT=0)",
        )
        await warm_up()
        await probe()

    async def warm_up() -> None:
        """Do the first-time work before the first review waits for it: without this, the reviews of the first
        tenth of a second after start waited up to 0.5 s (numba loading its compiled code, the results topic's
        metadata), which was the whole of the p99 at 200 reviews/s."""
        await asyncio.to_thread(scorer.inspect, ["warm up: a first call loads the compiled code"])
        try:
            await sentiments.maybe_declare()
            await app.producer._ensure_producer().partitions_for(settings.topic_sentiments)
        except Exception as exc:  # noqa: BLE001 - the first batch will do it (and retry) if this cannot yet
            log.info("warm-up of %s deferred to the first batch: %s", settings.topic_sentiments, first_line(exc))

    @app.timer(PROBE_INTERVAL)
    async def probe_regularly() -> None:
        await probe()

    if settings.web_port:

        @app.task
        async def serve_page() -> None:
            from aiohttp import web as aiohttp_web

            from stream.web import page_app

            page = page_app(settings, scorer, engine=engine, health=health, live=live)
            runner = aiohttp_web.AppRunner(page, handle_signals=False)
            await runner.setup()
            await aiohttp_web.TCPSite(runner, settings.web_host, settings.web_port).start()
            log.info("scoring page and API on http://%s:%d/", settings.web_host, settings.web_port)

    if settings.progress_interval:

        @app.timer(settings.progress_interval)
        async def log_progress() -> None:
            progress.lag = consumer_lag(app, last_offsets)
            log.info(progress.line())

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs) -> None:
        ours = sorted(tp.partition for tp in assigned if tp.topic == settings.topic_reviews)
        if ours:
            log.info("partitions assigned: %s %s", settings.topic_reviews, ", ".join(map(str, ours)))
        else:
            log.info(
                "no partition of %s assigned: this group has more workers than the topic has partitions; "
                "this worker stands by",
                settings.topic_reviews,
            )
        health.update(joined=True)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs) -> None:
        health.update(joined=False)

    # Faust's producer underneath: its aiokafka producer takes whole batches (stream/publish.py)
    publisher = BatchPublisher(lambda: app.producer._ensure_producer())

    async def publish(result: BatchResult) -> None:
        await sentiments.maybe_declare()  # creates the topic as Topic.send did (once: Faust remembers)
        await publisher.send(
            settings.topic_sentiments, [(s.movie_id.encode(), s.to_json(), None) for s in result.sentiments]
        )
        # rejected messages are few, and may be large: one by one, through Faust
        deliveries = [
            await dead_letters.send(key=m.key, value=m.value, headers=dead_letter_headers(m, why), force=True)
            for m, why in result.rejected
        ]
        await asyncio.gather(*deliveries)

    def write_to_database(result: BatchResult) -> int:
        started = time.perf_counter()
        new_rows = sink.write(result.sentiments)
        metrics.DB_WRITE_SECONDS.observe(time.perf_counter() - started)
        health.update(database_error=None)
        return new_rows

    def not_ready(exc: Exception) -> None:
        health.update(database_error=first_line(exc))

    async def deliver(stream, events: list, messages: list[Incoming], result: BatchResult) -> None:
        """Store, publish and only then ack one scored batch."""
        if result.sentiments:
            new_rows = await retry_with_backoff(
                "database write", partial(asyncio.to_thread, write_to_database, result), on_failure=not_ready
            )
            metrics.DB_ROWS_WRITTEN.inc(new_rows)
        await retry_with_backoff("publish", partial(publish, result))
        for event in events:
            await stream.ack(event)
        # commit now rather than at Faust's next 2.8 s tick: after a crash, only the batches in flight are scored and
        # dead-lettered again, not seconds of them (one OffsetCommit per batch; Faust lets one commit run at a time)
        await app.consumer.commit()
        record_batch(result, messages)

    @app.agent(reviews, name="score-reviews")
    async def score_reviews(stream):
        # Two batches in flight: batch k+1 is scored while batch k is stored and published. Batches are still
        # delivered and acked one after another, in the order they were taken.
        delivering: asyncio.Future | None = None
        try:
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
                if delivering is not None:
                    await delivering
                delivering = asyncio.ensure_future(deliver(stream, events, messages, result))
            if delivering is not None:
                await delivering
        finally:
            if delivering is not None and not delivering.done():
                # stopping: let the batch already scored finish if it can (fewer replays), within half the grace
                try:
                    await asyncio.wait_for(asyncio.shield(delivering), timeout=settings.shutdown_grace / 2)
                except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - it stays unacked
                    delivering.cancel()

    last_offsets: dict[tuple[str, int], int] = {}

    def record_batch(result: BatchResult, messages: list[Incoming]) -> None:
        now = time.time()
        scores = [s.score for s in result.sentiments]
        metrics.REVIEWS_SCORED.inc(len(scores))
        progress.scored += len(scores)
        progress.rejected += len(result.rejected)
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
        metrics.DRIFT_READY.set(1 if drift.ready else 0)
        if drift.ready:  # until then PSI and KS stay NaN: a few hundred scores say nothing reliable
            metrics.SCORE_PSI.set(drift.psi())
            metrics.SCORE_KS.set(drift.ks())
        if inputs_drift is not None and result.inputs is not None:
            inputs_drift.add(result.inputs.ngrams, result.inputs.known, result.inputs.pooled)
            metrics.INPUT_MEAN_NGRAMS.set(inputs_drift.mean_ngrams())
            if inputs_drift.ready:
                oov, length = inputs_drift.oov_shift(), inputs_drift.length_shift()
                metrics.INPUT_OOV_SHIFT.set(oov)
                metrics.INPUT_LENGTH_SHIFT.set(length)
                metrics.INPUT_EMBEDDING_SHIFT.set(inputs_drift.embedding_shift())
                verdict, _ = drift_verdict(
                    oov, length, oov_scale=settings.drift_oov_scale, length_scale=settings.drift_length_scale
                )
                metrics.DRIFT_VERDICT.set(verdict)
                latest_verdict[0] = verdict
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


class ScorerWorker(faust.Worker):
    """Faust's worker with a deadline on stopping: after the first SIGTERM or Ctrl-C it has ``grace`` seconds, then
    it exits at once. Offsets only ever cover stored and delivered results, so nothing unstored is acknowledged
    either way; a second Ctrl-C exits at once too."""

    def __init__(self, *args, grace: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # no terminal spinner in a service: with it, Faust lowers the root logger to DEBUG (so that every record
        # spins it), and each debug line of aiokafka, one per request, is built and then dropped
        self.spinner = None
        self.grace = grace
        self._deadline: threading.Timer | None = None

    def _on_sigint(self) -> None:
        self._begin_stop("Ctrl-C")
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._begin_stop("SIGTERM")
        super()._on_sigterm()

    def _begin_stop(self, why: str) -> None:
        health.update(stopping=True)
        if self._deadline is not None:
            self._exit_now(f"{why} again: stopping now")
        log.info("%s: stopping (at most %.0f s); an unfinished batch stays unacked", why, self.grace)
        self._deadline = threading.Timer(
            self.grace, self._exit_now, args=(f"not stopped within {self.grace:.0f} s (SENTIMENT_SHUTDOWN_GRACE)",)
        )
        self._deadline.daemon = True
        self._deadline.start()

    @staticmethod
    def _exit_now(why: str) -> None:
        log.warning("%s; exiting: offsets cover only stored and delivered results", why)
        for stream_ in (sys.stdout, sys.stderr):
            stream_.flush()
        os._exit(1)


def run_worker(settings: Settings, ready: Ready | None = None) -> int:
    """Run one worker process until SIGINT/SIGTERM; returns its exit code."""
    app = create_app(settings, ready)
    server = ready.server.start() if ready is not None and ready.server is not None else None
    worker = ScorerWorker(app, loglevel=settings.log_level.upper(), grace=settings.shutdown_grace)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if server is not None:
            server.stop()
    return 0
