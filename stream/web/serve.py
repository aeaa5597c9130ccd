"""`sentiment serve`: the page and the API with the model alone, no broker."""

from __future__ import annotations

from core.errors import UserError
from core.network import check_port_free
from core.settings import Settings
from stream.db import database_engine

WEB_PORT_HINT = "set SENTIMENT_WEB_PORT / --web-port to a free port (0: no page)"


def serve(settings: Settings, with_database: bool = True) -> int:
    from aiohttp import web

    if not settings.web_port:
        raise UserError("SENTIMENT_WEB_PORT is 0: nothing to serve", "set it to a port, e.g. --web-port 8088")
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
    web.run_app(app, host=settings.web_host, port=settings.web_port, print=None, handle_signals=True)
    return 0
