"""`sentiment serve`: the page and the API with the model alone, no broker."""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy.engine import Engine

from core.errors import UserError
from core.network import check_port_free
from core.settings import Settings
from stream.sql.db import database_engine
from stream.web.http import Limits, Listener, check_exposure

WEB_PORT_HINT = "set SENTIMENT_WEB_PORT / --web-port to a free port (0: no page)"


def serve(settings: Settings, with_database: bool = True) -> int:
    if not settings.web_port:
        raise UserError("SENTIMENT_WEB_PORT is 0: nothing to serve", "set it to a port, e.g. --web-port 8088")
    check_exposure(settings)
    check_port_free(settings.web_host, settings.web_port, WEB_PORT_HINT)
    engine, films_off = film_database(settings, with_database)
    if films_off:
        print(f"film lookups are off: {films_off}")
    from model.scorer import ModelArtifact, load_configured_scorer
    from stream.web import LiveState, page_app

    artifact = ModelArtifact.at(settings.model)
    scorer = load_configured_scorer(artifact, settings)
    live = LiveState(reference_scores=artifact.reference_scores(), psi_threshold=settings.psi_threshold)
    app = page_app(settings, scorer, engine=engine, live=live, films_off=films_off)
    print(f"model {scorer.version}: the page is on http://{settings.web_host}:{settings.web_port}/ (Ctrl-C stops it)")
    try:
        asyncio.run(_listen(app, settings))
    except KeyboardInterrupt:
        pass
    return 0


def film_database(settings: Settings, with_database: bool) -> tuple[Engine | None, str | None]:
    """The engine for film lookups, or None and why they are off, in the words the page shows."""
    if not with_database:
        return None, "started without a database (sentiment serve --no-database)"
    try:
        return database_engine(settings), None
    except UserError as exc:  # unreachable or not migrated at start: serve scores anyway, and says so
        return None, f"started without a database, as it could not use one: {exc.message}"


async def _listen(app, settings: Settings) -> None:
    """Serve until Ctrl-C or SIGTERM, under the same limits as the worker's page."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    listener = Listener(app, Limits.from_settings(settings))
    await listener.start(settings.web_host, settings.web_port)
    try:
        await stop.wait()
    finally:
        await listener.stop()
