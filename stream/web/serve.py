"""`sentiment serve`: the page and the API with the model alone, no broker."""

from __future__ import annotations

import socket

from sentiment.checks import database_engine
from sentiment.errors import UserError
from sentiment.settings import Settings


def check_port(host: str, port: int) -> None:
    """Fail at start, in one line, when the port is taken (the server would otherwise fail after the model loads)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} for the page: {exc.strerror or exc}",
                "set SENTIMENT_WEB_PORT / --web-port to a free port",
            ) from exc


def serve(settings: Settings, with_database: bool = True) -> int:
    from aiohttp import web

    if not settings.web_port:
        raise UserError("SENTIMENT_WEB_PORT is 0: nothing to serve", "set it to a port, e.g. --web-port 8088")
    check_port(settings.web_host, settings.web_port)
    engine = None
    if with_database:
        try:
            engine = database_engine(settings)
        except UserError as exc:
            print(f"film lookups are off: {exc.message}")
    from model.explain import Explainer
    from model.scorer import ModelArtifact, load_scorer
    from stream.web import LiveState, build_web_app

    artifact = ModelArtifact.at(settings.model)
    scorer = load_scorer(artifact)
    app = build_web_app(
        live=LiveState(reference_scores=artifact.reference_scores(), psi_threshold=settings.psi_threshold),
        scorer=scorer,
        explainer_factory=lambda: Explainer(scorer),
        uncertain_band=settings.uncertain_band,
        max_texts=settings.api_max_texts,
        max_text_chars=settings.max_text_chars,
        engine=engine,
    )
    print(f"model {scorer.version}: the page is on http://{settings.web_host}:{settings.web_port}/ (Ctrl-C stops it)")
    web.run_app(app, host=settings.web_host, port=settings.web_port, print=None, handle_signals=True)
    return 0
