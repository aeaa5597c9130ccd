"""Before the worker starts: every part it needs is there, or it stops within seconds with one line saying which.

Order: the cheap checks first (a page beyond loopback has a token, the model folder, the page's and the metrics
ports, then the broker and its topics, the database reachable and migrated), then loading the model: the model
store's live version when one is set and passes its check, else the configured one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from core.errors import UserError
from core.network import broker_timeout_error, check_broker, check_port_free
from core.settings import Settings, kafka_client_options
from stream.observe.health import health
from stream.sql.db import database_engine
from stream.web.http import Limits, MetricsServer, check_exposure


@dataclass
class Ready:
    artifact: Any  # model.scorer.ModelArtifact (imported late: it imports TensorFlow)
    scorer: Any  # model.scorer.Scorer
    engine: Engine
    server: MetricsServer | None
    live_assignment: int | None = None  # the model store's live assignment the model follows (None: none set)
    refused: str | None = None  # the store's live version, when it was refused at start
    shadow: Any = None  # lifecycle.model_gate.LoadedModel: the store's shadow version, loaded before the first batch
    shadow_assignment: int | None = None


def preflight(settings: Settings, answered: Callable[[], None] | None = None) -> Ready:
    """The quick checks, then the model; ``answered`` is called once the broker and the database answer, before the
    model loads (the worker's first line says so)."""
    check_exposure(settings)
    if not (settings.model.is_file() or (settings.model / "model.keras").is_file()):
        raise UserError(
            f"no model at {settings.model} (no model.keras in it)", "set SENTIMENT_MODEL / --model to a model folder"
        )
    if settings.web_port:
        from stream.web.serve import WEB_PORT_HINT

        check_port_free(settings.web_host, settings.web_port, WEB_PORT_HINT)
    # listening from here on: a port in use fails before the slower checks, and /healthz answers while they run
    server = (
        MetricsServer(health, settings.metrics_host, settings.metrics_port, Limits.from_settings(settings))
        if settings.metrics_port
        else None
    )
    try:
        return _checked(settings, server, answered)
    except BaseException:
        if server is not None:
            server.stop()
        raise


def _checked(settings: Settings, server: MetricsServer | None, answered: Callable[[], None] | None) -> Ready:
    from kafka.errors import KafkaError

    from stream.ingest.topics import create_topics

    check_broker(settings)
    try:
        create_topics(
            settings.bootstrap_servers(),
            [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq],
            settings.topic_partitions,
            timeout=settings.connect_timeout,
            **kafka_client_options(settings),
        )
    except KafkaError as exc:
        raise broker_timeout_error(settings, exc) from exc
    engine = database_engine(settings)
    if answered is not None:
        answered()
    from stream.lifecycle.model_gate import starting_model

    try:
        start = starting_model(engine, settings)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"cannot load the model at {settings.model}: {exc}", "set SENTIMENT_MODEL / --model") from exc
    health.update(model_loaded=True)
    return Ready(
        start.live.artifact, start.live.scorer, engine, server, start.live_assignment, start.refused,
        start.shadow, start.shadow_assignment,
    )  # fmt: skip
