"""Readiness probes: does the database answer, does the broker accept a connection? Run every few seconds, also
while idle, so that ``sentiment_ready`` and ``/readyz`` say the truth before a batch has to find out."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.messages import first_line
from core.network import broker_unreachable
from core.settings import Settings
from stream.observe.health import DATABASE_DOWN, Health

log = logging.getLogger("sentiment.worker")


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


async def probe_readiness(health: Health, engine: Engine, settings: Settings) -> None:
    """Mark the event loop alive, probe the database and the broker at once, and log when readiness changes."""
    health.beat()
    database_error, broker_error = await asyncio.gather(
        asyncio.to_thread(probe_database, engine), asyncio.to_thread(probe_broker, settings)
    )
    was_ready = health.ready
    # /readyz may be read from anywhere (the metrics port listens on every interface): it says what is wrong in our
    # words; what the driver said goes to the log only
    health.update(database_error=DATABASE_DOWN if database_error else None, broker_error=broker_error)
    if was_ready and not health.ready:
        said = f" (the database said: {database_error})" if database_error else ""
        log.warning("not ready: %s%s", "; ".join(health.reasons()), said)
    elif health.ready and not was_ready:
        log.info("ready")
