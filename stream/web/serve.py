"""`sentiment serve`: the page and the API with the model alone, no broker."""

from __future__ import annotations

import asyncio
import signal

from core.errors import UserError
from core.network import check_port_free
from core.settings import Settings
from stream.db import database_engine
from stream.http import Limits, Listener, check_exposure

WEB_PORT_HINT = "set SENTIMENT_WEB_PORT / --web-port to a free port (0: no page)"


def serve(settings: Settings, with_database: bool = True) -> int:
    if not settings.web_port:
        raise UserError("SENTIMENT_WEB_PORT is 0: nothing to serve", "set it to a port, e.g. --web-port 8088")
    check_exposure(settings)
    check_port_free(settings.web_host, settings.web_port, WEB_PORT_HINT)
    engine = None
    if with_database:
        try:
            engine = database_engine(settings)
        except UserError as exc:
            print(f"film lookups are off: {exc.message}")
    from model.scorer import ModelArtifact, load_configured_scorer
    from stream.web import LiveState, page_app

    artifact = ModelArtifact.at(settings.model)
    scorer = load_configured_scorer(artifact, settings)
    live = LiveState(reference_scores=artifact.reference_scores(), psi_threshold=settings.psi_threshold)
    app = page_app(settings, scorer, engine=engine, live=live)
    print(f"model {scorer.version}: the page is on http://{settings.web_host}:{settings.web_port}/ (Ctrl-C stops it)")
    try:
        asyncio.run(_listen(app, settings))
    except KeyboardInterrupt:
        pass
    return 0


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
