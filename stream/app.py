"""The Faust app: its topics, its one agent, and the timers around it.

The agent is a short loop: take a micro-batch -> decode, validate and score it -> hand it to the delivery, which
writes the results (PostgreSQL, then the ``sentiments`` and dead-letter topics) and only then acks and commits, so
that offsets advance only past messages whose results are stored and delivered (stream/ingest/delivery.py). The batch
observer keeps the metrics, drift, progress and live charts (stream/observer.py). On SIGTERM or Ctrl-C the worker
stops within ``shutdown_grace`` seconds in every state; an unfinished batch stays unacked and is scored again after
a restart (stream/worker.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import faust

from core.messages import first_line, redact
from core.settings import Settings, faust_credentials
from model.scorer import ModelArtifact, Scorer, load_configured_scorer
from stream.ingest.batch import BatchResult, BatchScorer, Incoming
from stream.ingest.consumer import incoming, lean_app_options, lean_topic, tuned_consumer
from stream.ingest.delivery import Delivery
from stream.ingest.publish import ResultPublisher, Undeliverable
from stream.ingest.sinks import SqlSink
from stream.lifecycle.model_gate import LoadedModel
from stream.lifecycle.model_swap import ModelSwitch, ModelWatcher
from stream.observe import metrics
from stream.observe.health import health
from stream.observe.probes import probe_readiness
from stream.observer import BatchObserver
from stream.sql.db import make_engine
from stream.worker import ScorerWorker

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stream.preflight import Ready
    from stream.web import LiveState

log = logging.getLogger("sentiment.worker")

LARGEST_REQUEST_BYTES = 16 * 1024 * 1024  # a produce request: a dead letter is far below it
PUBLISH_BATCH_BYTES = 512 * 1024  # a whole micro-batch of results for one partition fits one producer batch
PROBE_INTERVAL = 5.0  # seconds between readiness probes of the database and the broker


def create_app(settings: Settings, ready: Ready | None = None) -> faust.App:
    app = faust_app(settings)
    reviews = app.topic(
        settings.topic_reviews, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    sentiments = app.topic(settings.topic_sentiments, value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic_dlq, value_serializer="raw", key_serializer="raw")

    followed, refused, metrics_url = None, None, None
    if ready is None:
        artifact = ModelArtifact.at(settings.model)
        first = LoadedModel(artifact, load_configured_scorer(artifact, settings))
        engine = make_engine(settings.database_url, settings.connect_timeout)
    else:
        first, engine = LoadedModel(ready.artifact, ready.scorer), ready.engine
        followed, refused = ready.live_assignment, ready.refused
        metrics_url = ready.server.url if ready.server is not None else None
        # From here on the switch below owns the model: a reference kept anywhere else (here, in a closure) would
        # keep the first model in memory after every swap.
        ready.artifact = ready.scorer = None
    health.update(model_loaded=True)
    batch_scorer = BatchScorer(
        first.scorer,
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
        uncertain_band=settings.uncertain_band,
        min_known_share=settings.min_known_share,
    )
    sink = SqlSink(engine)
    observer = BatchObserver.for_model(
        first.artifact, first.scorer, settings, health, consumer=lambda: GroupOffsets(app.consumer)
    )
    models = ModelSwitch(first, batch_scorer, observer)
    del first
    watcher = ModelWatcher(engine, settings, models, refused=refused, evidence=observer.shadow_evidence)
    if followed is not None:
        watcher.tried.add(("live", followed))
    if ready is not None and ready.shadow is not None:  # set before start: it scores the backlog too
        watcher.start_with("shadow", ready.shadow, ready.shadow_assignment)
        ready.shadow = None
    # Faust's producer underneath: its aiokafka producer takes whole batches (stream/ingest/publish.py)
    results = ResultPublisher(
        sentiments,
        dead_letters,
        lambda: app.producer._ensure_producer(),
        settings.dlq_max_payload_bytes,
        Undeliverable(settings.undeliverable_file),
    )

    async def probe() -> None:
        metrics.refresh()
        observer.sample_live()
        observer.watch()
        await probe_readiness(health, engine, settings)

    async def score(messages: list[Incoming]) -> BatchResult:
        observer.taken(messages)
        async with models.scoring:  # a model swap happens between two batches, never during one
            models.apply()
            started = time.perf_counter()
            result = await asyncio.to_thread(batch_scorer.process, messages)
        observer.scored_in(time.perf_counter() - started)
        return result

    @app.task
    async def announce() -> None:
        log_start(settings, models.live, metrics_url)
        await warm_up(models.current(), results)
        freeze_startup_objects()
        await probe()

    @app.timer(PROBE_INTERVAL)
    async def probe_regularly() -> None:
        await probe()

    @app.timer(settings.model_poll_interval)
    async def follow_model_store() -> None:
        await watcher.poll()

    if settings.web_port:

        @app.task
        async def serve_page() -> None:
            await start_page(settings, models, engine, observer.live)

    if settings.progress_interval:

        @app.timer(settings.progress_interval)
        async def log_progress() -> None:
            if line := observer.progress_line():  # (None: idle, and nothing changed since the last line)
                log.info(line)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs) -> None:
        log_assignment(settings.topic_reviews, assigned)
        health.update(joined=True)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs) -> None:
        health.update(joined=False)

    @app.agent(reviews, name="score-reviews")
    async def score_reviews(stream):
        delivery = Delivery(
            sink=sink,
            publish=results.send,
            ack=stream.ack_batch if settings.lean_path else partial(ack_each, stream),
            commit=lambda: app.consumer.commit(),
            delivered=observer.delivered,
            health=health,
        )
        try:
            # the lean path takes whole batches off the stream's queue; stock Faust feeds noack_take one at a time
            batches = (
                stream.take_batches(settings.batch_size, settings.batch_wait)
                if settings.lean_path
                else stream.noack_take(settings.batch_size, within=settings.batch_wait)
            )
            async for events in batches:
                messages = [incoming(event) for event in events]
                result = await score(messages)
                await delivery.hand_over(events, messages, result)  # delivered while the next batch is scored
            await delivery.drain()
        finally:
            await delivery.stop(within=settings.shutdown_grace / 2)

    return app


async def ack_each(stream, events) -> None:
    """Stock Faust's way: ``Stream.ack`` for each event of a batch."""
    for event in events:
        await stream.ack(event)


class DeclaredOnceTopic(faust.Topic):
    """Faust's topic, declared on the broker once per process: Faust's own ``maybe_declare`` asks the broker again,
    and logs "Creating topic", every time it is called, which was once per published batch."""

    declared = False

    async def declare(self) -> None:
        if not self.declared:
            await super().declare()
            self.declared = True


def faust_app(settings: Settings) -> faust.App:
    """The Faust app, configured for the worker."""
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url(),
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # a dead letter carries at most SENTIMENT_DLQ_MAX_PAYLOAD_BYTES of its message, so whatever arrives (Kafka
        # hands over at least one message per fetch, however large) can be dead-lettered without a larger request
        producer_max_request_size=LARGEST_REQUEST_BYTES,
        producer_max_batch_size=PUBLISH_BATCH_BYTES,
        consumer_max_fetch_size=settings.fetch_max_bytes,
        broker_max_poll_records=settings.fetch_max_records or None,
        stream_buffer_maxsize=settings.stream_buffer,
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        store="memory://",
        # on stop, do not wait for the current batch to be processed: it stays unacked and is scored again later
        stream_wait_empty=False,
        Topic=lean_topic(DeclaredOnceTopic) if settings.lean_path else DeclaredOnceTopic,
        **lean_app_options(settings.lean_path),
    )
    # Faust's consumer with the fetch wait of the settings; on the lean path, draining each fetch in batches
    app.transport.Consumer = tuned_consumer(settings.fetch_max_wait_ms, lean=settings.lean_path)
    return app


class GroupOffsets:
    """What the observer asks of Faust's consumer for the lag: the assignment, the high watermark of the last Fetch,
    and the committed offset Faust keeps (set when it joins, then by each commit)."""

    def __init__(self, consumer) -> None:
        self.consumer = consumer

    def assignment(self):
        return self.consumer.assignment()

    def highwater(self, tp) -> int | None:
        return self.consumer.highwater(tp)

    def committed(self, tp) -> int | None:
        return self.consumer._committed_offset.get(tp)

    def fetch_age(self, tp) -> float | None:
        """Seconds since a Fetch answer last told the partition's high watermark (aiokafka's last_poll_timestamp);
        None before the first. While the agent is blocked no fetch is made, and the high watermark goes stale."""
        stamp = self.consumer._thread._ensure_consumer().last_poll_timestamp(tp)
        return None if stamp is None else max(0.0, time.time() - stamp / 1000)


def log_start(settings: Settings, model: LoadedModel, where: str | None) -> None:
    artifact, scorer = model.artifact, model.scorer
    log.info(
        "model %s from %s, scored %s; group %s; batches of up to %d reviews or %.2f s (%s); writes topic %s "
        "(refused reviews to %s) and database %s; metrics %s",
        scorer.version,
        artifact.folder,
        "compiled (checked against TensorFlow)" if scorer.scoring == "compiled" else "with TensorFlow",
        settings.app_id,
        settings.batch_size,
        settings.batch_wait,
        "lean path" if settings.lean_path else "Faust's per-message path",
        settings.topic_sentiments,
        settings.topic_dlq,
        redact(settings.database_url),
        f"{where}/metrics (and /healthz, /readyz)" if where else "off (SENTIMENT_METRICS_PORT=0)",
    )


def freeze_startup_objects() -> None:
    """Leave what start-up made (modules, the model's tables, Faust's services) out of the garbage collector's
    full passes: they live as long as the process, and every full pass walked them all again."""
    gc.collect()
    gc.freeze()


async def warm_up(scorer: Scorer, results: ResultPublisher) -> None:
    """Do the first-time work before the first review waits for it: without this, the reviews of the first
    tenth of a second after start waited up to 0.5 s (numba loading its compiled code, the results topic's
    metadata), which was the whole of the p99 at 200 reviews/s."""
    await asyncio.to_thread(scorer.inspect, ["warm up: a first call loads the compiled code"])
    try:
        await results.warm_up()
    except Exception as exc:  # noqa: BLE001 - the first batch will do it (and retry) if this cannot yet
        log.info("warm-up of %s deferred to the first batch: %s", results.topic, first_line(exc))


async def start_page(settings: Settings, models: ModelSwitch, engine: Engine, live: LiveState) -> None:
    """The page follows the live version: it asks ``models`` for the current scorer on every request."""
    from stream.web import page_app
    from stream.web.http import Limits, Listener

    page = page_app(settings, models, engine=engine, health=health, live=live)
    await Listener(page, Limits.from_settings(settings)).start(settings.web_host, settings.web_port)
    log.info("scoring page and API on http://%s:%d/", settings.web_host, settings.web_port)


def log_assignment(topic: str, assigned) -> None:
    ours = sorted(tp.partition for tp in assigned if tp.topic == topic)
    if ours:
        log.info("partitions assigned: %s %s", topic, ", ".join(map(str, ours)))
    else:
        log.info(
            "no partition of %s assigned: this group has more workers than the topic has partitions; "
            "this worker stands by",
            topic,
        )


def run_worker(settings: Settings, ready: Ready | None = None, verbose: bool = False) -> int:
    """Run one worker process until SIGINT/SIGTERM; returns its exit code. ``verbose``: Faust's and the Kafka
    client's own info lines too."""
    app = create_app(settings, ready)
    server = ready.server if ready is not None else None
    worker = ScorerWorker(app, loglevel=settings.log_level.upper(), grace=settings.shutdown_grace, verbose=verbose)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if server is not None:
            server.stop()
    return 0
