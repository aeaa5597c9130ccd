"""The scoring page and its HTTP API, served by the worker (``SENTIMENT_WEB_PORT``) and by ``sentiment serve``.

``GET /`` the page · ``POST /api/score`` scores, labels, uncertainty, the share of known n-grams (a text below
``SENTIMENT_MIN_KNOWN_SHARE`` is not readable) and, on request, word attributions ·
``GET /api/movies/{movie_id}`` a film's aggregate from SQL · ``GET /api/live`` the worker's recent throughput, drift
and score histogram · ``GET /healthz``, ``GET /readyz`` · ``GET /openapi.json`` the API's description
(``schemas/openapi.json``). Every error is JSON with an ``error`` field and a 4xx status; never a stack trace.
What the stream refuses in a review (its JSON, a text, a film id) is refused here by the same rules from
``schemas``, with the stream's reason code in a ``reason`` field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
from aiohttp import web
from sqlalchemy.engine import Engine

from core.messages import first_line
from schemas import (
    REJECTION_REASONS,
    SCHEMA_DIR,
    Rejection,
    duplicate_key,
    id_problem,
    is_readable,
    is_uncertain,
    json_object,
    label_for,
    text_problem,
)
from stream.observe.health import Health
from stream.sql.queries import film_sentiment
from stream.web.http import (
    CLIENTS_KEY,
    REASON,
    REJECTIONS_KEY,
    BodyBudget,
    Limits,
    accounting,
    add_probes,
    bearer_token,
    client_limits,
    client_rates,
    reason_for,
)

log = logging.getLogger("sentiment.web")
PAGE = Path(__file__).resolve().parent / "index.html"
HISTORY_SECONDS = 600  # how far back the page's live charts reach
MIN_INTERVAL = 0.5  # seconds: the shortest interval a reviews/s point is measured over


@dataclass
class LiveState:
    """What the page's charts show, sampled by the worker every few seconds (empty under ``sentiment serve``).

    A sample holds the reviews scored since ``started`` (a running total): a point of the reviews/s chart is the
    reviews scored between two consecutive samples over the seconds between them, so every review scored counts in
    exactly one interval, however it arrived between samples. The first interval starts at ``started`` (the backlog a
    worker scores before its first sample is in the chart); the intervals touch (no gaps). At most the last
    ``HISTORY_SECONDS`` of samples at the worker's pace are kept (a fixed number: bounded memory)."""

    streaming: bool = False
    samples: deque = field(default_factory=lambda: deque(maxlen=HISTORY_SECONDS // 5 + 1))
    window_scores: object = None  # a callable returning the drift window's scores
    reference_scores: np.ndarray | None = None
    psi_threshold: float = 0.0
    accuracy: object = None  # a callable returning the live accuracy's state (stream/observe/accuracy.py, as_json)
    # (time, {"live <version>": accuracy, ...}): the accuracy of each version measured at each sample
    accuracy_samples: deque = field(default_factory=lambda: deque(maxlen=HISTORY_SECONDS // 5 + 1))
    shadow: object = None  # a callable returning the shadow's agreement and score difference so far, or None
    started: float = field(default_factory=lambda: time.time())  # when the running total of ``sample`` was 0

    def sample(self, scored_total: float, psi: float, verdict: float, accuracy: dict | None = None) -> None:
        now = time.time()
        if not self.samples:  # the first interval runs from the start: what was scored before it is counted
            self.samples.append((min(self.started, now - MIN_INTERVAL), 0, float("nan"), float("nan")))
        elif len(self.samples) > 1 and now - self.samples[-1][0] < MIN_INTERVAL:
            # two samples a moment apart (the worker's first probe, then its timer) would make a rate of a few
            # reviews over a few milliseconds: the later one takes the earlier one's place, its interval grows
            self.samples.pop()
            self.accuracy_samples.pop()
        self.samples.append((now, scored_total, psi, verdict))
        self.accuracy_samples.append((now, accuracy or {}))

    def as_json(self) -> dict:
        history = []
        for (t0, n0, _, _), (t1, n1, psi, verdict) in zip(self.samples, list(self.samples)[1:]):
            history.append(
                {
                    "start": t0,  # the interval the rate is measured over: (start, time]
                    "time": t1,
                    "reviews_per_second": max(n1 - n0, 0) / max(t1 - t0, 1e-9),
                    "psi": None if psi != psi else psi,
                    "verdict": None if verdict != verdict else verdict,
                }
            )
        edges = np.linspace(0, 1, 11)
        window = np.asarray(self.window_scores() if self.window_scores else [], dtype=np.float64)
        reference = self.reference_scores if self.reference_scores is not None else np.empty(0)
        share = lambda xs: (np.histogram(xs, edges)[0] / max(len(xs), 1)).round(4).tolist()  # noqa: E731
        return {
            "streaming": self.streaming,
            "now": time.time(),  # the right end of the charts' time axis, by the server's clock
            "history_seconds": HISTORY_SECONDS,
            "scored": self.samples[-1][1] if self.samples else 0,  # reviews scored since the worker started
            "history": history,
            "psi_threshold": self.psi_threshold,
            "histogram": {"edges": edges.round(2).tolist(), "window": share(window), "reference": share(reference)},
            "window_scores": len(window),
            "accuracy": self.accuracy() if self.accuracy else None,
            "accuracy_history": [{"time": t, "accuracy": by_series} for t, by_series in self.accuracy_samples],
        }


def scorer_now(scorer):
    """The scorer for one answer: a holder that follows the live model version (the worker's
    ``stream.lifecycle.model_swap.ModelSwitch``) gives its current one; a plain scorer is itself."""
    current = getattr(scorer, "current", None)
    return current() if callable(current) else scorer


def shadow_now(scorer) -> str | None:
    """The shadow version the stream runs, if the holder knows of one."""
    shadow = getattr(scorer, "shadow", None)
    return getattr(shadow, "version", None)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ApiError(Exception):
    """A 4xx for the client: its message is one line, whatever of the request it quotes (a key, a JSON path)."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # the stream's reason code, when the request breaks one of its rules

    @classmethod
    def refused(cls, rejection: Rejection, status: int = 400) -> ApiError:
        return cls(status, rejection.detail, rejection.reason)


@web.middleware
async def json_errors(request: web.Request, handler):
    """An :class:`ApiError` as ``{"error": ..., "reason": ...}`` with its status (its reason code also labels the
    rejections metric); anything unexpected goes on to ``stream.web.http.accounting``: a 500, one line, no trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        body = {"error": exc.message} | ({"reason": exc.reason} if exc.reason else {})
        response = web.json_response(body, status=exc.status)
        response[REASON] = exc.reason if exc.reason in REJECTION_REASONS else reason_for(exc.status)
        return response


def read_json_object(raw: bytes) -> dict:
    """``raw`` read as the stream reads a message: no duplicate key, too deep is bad JSON, no NaN or Infinity (a text
    is one level deeper here: in "texts")."""
    body = json_object(raw, "the body", framing=1)
    if isinstance(body, Rejection):
        raise ApiError.refused(body)
    return body


# A body that msgspec cannot take as a request is read again by the stream's own JSON reading, for the reason in
# the stream's words, when it is at most this long (longer, msgspec's reason is given: the stream's reading is
# slower on a large body, and a large malformed body deserves no more work).
SMALL_BODY = 65_536


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    texts: list[str]
    explain: bool | msgspec.UnsetType = msgspec.UNSET


_REQUEST = msgspec.json.Decoder(_Request)


def page_app(
    settings,
    scorer,
    *,
    engine: Engine | None,
    live: LiveState,
    health: Health | None = None,
    films_off: str | None = None,
):
    """The application with the settings' limits and band, and the explainer built on first use; ``films_off`` says
    why there is no ``engine`` (the page and the 503 of a film lookup say it). ``scorer`` is a scorer, or a holder
    whose ``current()`` is the live one (then every answer uses the version live at that moment)."""
    from model.explain import Explainer

    token = settings.web_token.get_secret_value() if settings.web_token else None
    return build_web_app(
        limits=Limits.from_settings(settings),
        token=token,
        max_concurrent=settings.api_max_concurrent,
        cpu_share=settings.api_cpu_share,
        scorer=scorer,
        explainer_factory=Explainer,
        uncertain_band=settings.uncertain_band,
        min_known_share=settings.min_known_share,
        max_texts=settings.api_max_texts,
        max_text_chars=settings.max_text_chars,
        engine=engine,
        health=health,
        live=live,
        drift_min_scores=min(settings.drift_min_scores, settings.drift_window),
        films_off=films_off,
    )


def build_web_app(
    *,
    scorer,
    explainer_factory,
    uncertain_band: float,
    max_texts: int,
    min_known_share: float = 0.3,
    max_text_chars: int,
    engine: Engine | None = None,
    health: Health | None = None,
    live: LiveState | None = None,
    limits: Limits | None = None,
    token: str | None = None,
    max_concurrent: int = 1,
    cpu_share: float = 1.0,
    drift_min_scores: int = 0,
    films_off: str | None = None,
) -> web.Application:
    """The aiohttp application; ``explainer_factory`` builds the explainer on first use."""
    api = ScoringApi(
        scorer,
        explainer_factory,
        uncertain_band=uncertain_band,
        min_known_share=min_known_share,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
        max_concurrent=max_concurrent,
        cpu_share=cpu_share,
    )
    films = FilmLookup(engine, None if engine is not None else films_off or "started without a database")
    state = LiveAnswer(live or LiveState(), scorer, health, uncertain_band, drift_min_scores, films.off)
    page_html = PAGE.read_text(encoding="utf-8")  # read once, not per request
    openapi_json = (SCHEMA_DIR / "openapi.json").read_text(encoding="utf-8")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html", charset="utf-8")

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=openapi_json, content_type="application/json")

    limits = limits or Limits()
    accounted, clients, rejections = accounting("page", limits, api.max_bytes)
    probes = frozenset({"/healthz", "/readyz"})
    # Admission, outermost first: each client's rates; the token; the declared size, type and the bytes held; only
    # then is the body read, and parsed off the event loop in the API's turn (ScoringApi.score).
    app = web.Application(
        middlewares=[
            accounted,
            json_errors,
            client_rates(clients, probes),
            bearer_token(token, probes | {"/"}),  # the page itself is static: its calls to the API carry the token
            client_limits(
                limits,
                lambda request: api.max_bytes if request.path == "/api/score" else 1024,
                BodyBudget(max(2 * api.max_bytes, 16 * 1024 * 1024)),
                json_paths=frozenset({"/api/score"}),
            ),
        ],
        client_max_size=api.max_bytes,
    )
    app[CLIENTS_KEY], app[REJECTIONS_KEY] = clients, rejections
    app.router.add_get("/", page)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/api/score", api.score)
    app.router.add_get("/api/movies/{movie_id:[^/]+}", films.movie)  # aiohttp's default pattern refuses { and }
    app.router.add_get("/api/live", state.answer)
    add_probes(app, health)
    return app


class ScoringApi:
    """``POST /api/score``: the same rules as the stream for every text, then scores (and on request explanations)
    computed off the event loop, requests taking turns under a cost budget so that the stream keeps the machine."""

    def __init__(
        self,
        scorer,
        explainer_factory,
        *,
        uncertain_band: float,
        min_known_share: float,
        max_texts: int,
        max_text_chars: int,
        max_concurrent: int,
        cpu_share: float,
    ) -> None:
        self.scorer = scorer
        self.explainer_factory = explainer_factory  # a scorer -> its explainer
        # each scorer's explainer, for as long as the scorer lives: a switched-out model's tables go with it, whether
        # or not anyone asks for an explanation after the swap
        self.explainers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.uncertain_band = uncertain_band
        self.min_known_share = min_known_share
        self.max_texts = max_texts
        self.max_text_chars = max_text_chars
        self.max_bytes = max_texts * (max_text_chars * 4 + 64) + 1024
        self.cpu_share = cpu_share
        # the stream's batches never queue behind more than this many requests' work
        self.turns = asyncio.Semaphore(max_concurrent)

    async def score(self, request: web.Request) -> web.Response:
        raw = await request.read()  # already read, within its size and time limits, by stream.web.http.client_limits
        await self.turns.acquire()
        started = time.perf_counter()
        try:
            body = await asyncio.to_thread(self.answer_body, raw)
        finally:
            # The cost budget: HTTP work (reading the JSON as much as scoring it) may take at most ``cpu_share`` of
            # the wall clock, so that the stream's batches (same process, same interpreter lock) keep the rest. This
            # answer goes out now; the next request waits until this one's work has been paid for.
            spent = time.perf_counter() - started
            asyncio.get_running_loop().call_later(spent * (1 / self.cpu_share - 1), self.turns.release)
        return web.Response(body=body, content_type="application/json")

    def answer_body(self, raw: bytes) -> bytes:
        texts, explain = self.parse(raw)
        return self.answer(texts, explain)

    def parse(self, raw: bytes) -> tuple[list[str], bool]:
        """The request's texts and whether to explain them, or the 4xx that says what is wrong. The number of texts
        is bounded before anything is parsed (every string opens with a quote that no backslash precedes), and the
        parser (msgspec, with the request's shape) stops at the first value of a wrong type, so that no body within
        the size limit costs more than reading ``max_texts`` strings: a 12.8 MB ``[[],[],...]`` is refused at its
        first byte."""
        strings = raw.count(b'"') - raw.count(b'\\"')
        if strings > 2 * (self.max_texts + 2):
            if len(raw) <= SMALL_BODY:  # a body the stream refuses (nested too deep, ...) gets the stream's reason
                read_json_object(raw)
            raise ApiError(
                413, f"more than {self.max_texts} texts; at most {self.max_texts} in one request", "too_many_texts"
            )
        try:
            request = _REQUEST.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            if len(raw) <= SMALL_BODY:  # the stream's reading says what is wrong in its words
                return self.texts_of(read_json_object(raw))
            raise ApiError(400, f"the body is not a scoring request: {str(exc)[:200]}", "invalid_json") from None
        fields = 1 + (request.explain is not msgspec.UNSET)
        if raw.count(b":") != fields + sum(t.count(":") for t in request.texts) or b"\\u003" in raw:
            if key := duplicate_key(raw):  # msgspec keeps the last of two equal keys; the stream refuses both
                raise ApiError(400, f"the body has a duplicate key {key[:100]}", "invalid_json")
        explain = False if request.explain is msgspec.UNSET else request.explain
        return self.texts_of({"texts": request.texts, "explain": explain})

    def texts_of(self, body: dict) -> tuple[list[str], bool]:
        """The request's texts and whether to explain them, or the 4xx that says what is wrong."""
        unknown = sorted(set(body) - {"texts", "explain"})
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts:
            raise ApiError(400, '"texts" must be a non-empty list of strings')
        if len(texts) > self.max_texts:
            raise ApiError(413, f"{len(texts)} texts; at most {self.max_texts} in one request")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ApiError(400, f"texts[{i}] is {type(t).__name__}, not a string", "wrong_type")
            if problem := text_problem(t, self.max_text_chars):  # what the stream would dead-letter is no score here
                raise ApiError.refused(problem.at(f"texts[{i}]"), 413 if problem.reason == "text_too_long" else 400)
        explain = body.get("explain", False)
        if not isinstance(explain, bool):
            raise ApiError(400, '"explain" must be true or false')
        return texts, explain

    def answer(self, texts: list[str], explain: bool) -> bytes:
        """The whole answer, JSON-encoded, computed off the event loop (it runs the stream too)."""
        scorer = scorer_now(self.scorer)  # one version for the whole answer, whatever a swap does meanwhile
        inputs = scorer.inspect(texts)
        results = [
            {
                "score": score,
                "label": label_for(score),
                "uncertain": is_uncertain(score, self.uncertain_band),
                "known_share": share,
                "readable": is_readable(share, self.min_known_share),
            }
            for score, share in zip(inputs.scores.tolist(), inputs.known_shares().tolist())
        ]
        if explain:
            explainer = self.explainers.get(scorer)
            if explainer is None:  # the version that scored these texts explains them
                explainer = self.explainers[scorer] = self.explainer_factory(scorer)
            for result, t in zip(results, texts):
                result["explanation"] = explanation_json(explainer.explain(t))
        return json.dumps(
            {
                "model_version": scorer.version,
                "uncertain_band": self.uncertain_band,
                "min_known_share": self.min_known_share,
                "results": results,
            }
        ).encode()


def explanation_json(e) -> dict:
    return {
        "method": "integrated gradients, baseline: no known n-gram",
        "base": e.base,
        "sum": e.total,
        "words": [{"word": w, "attribution": a} for w, a in zip(e.words, e.word_attributions)],
        "ngrams": [{"ngram": g, "attribution": a} for g, a in e.ngrams],
    }


@dataclass
class FilmLookup:
    """``GET /api/movies/{movie_id}``: a film's row of ``movie_sentiment``; ``off`` says why there is no engine."""

    engine: Engine | None
    off: str | None

    async def movie(self, request: web.Request) -> web.Response:
        movie_id = request.match_info["movie_id"]
        if problem := id_problem(movie_id):  # an id no review can carry is the client's mistake, not an outage
            raise ApiError.refused(problem.at("movie_id"))
        if self.engine is None:
            raise ApiError(503, f"film lookups are off: {self.off}")
        try:
            row = await asyncio.to_thread(film_sentiment, self.engine, movie_id)
        except Exception as exc:  # noqa: BLE001 - the database being away is a 503, not a 500
            raise ApiError(503, f"the database did not answer: {first_line(exc)}") from exc
        if row is None:
            raise ApiError(404, f"no reviews of film {movie_id!r} scored yet")
        row["updated_at"] = (
            row["updated_at"].isoformat() if hasattr(row["updated_at"], "isoformat") else row["updated_at"]
        )
        return web.json_response(row)


@dataclass
class LiveAnswer:
    """``GET /api/live``: the charts' samples, the model, and whether the worker is ready and if not, why."""

    live: LiveState
    scorer: object
    health: Health | None
    uncertain_band: float
    drift_min_scores: int
    films_off: str | None

    async def answer(self, request: web.Request) -> web.Response:
        state = self.live.as_json()
        state |= {
            "model_version": scorer_now(self.scorer).version,
            "shadow_version": shadow_now(self.scorer),
            "shadow": self.live.shadow() if self.live.shadow else None,
            "uncertain_band": self.uncertain_band,
            "window_min_scores": self.drift_min_scores,  # PSI and the verdict are measured from this many scores on
            "films_off": self.films_off,  # why film lookups are off, or null
        }
        reasons = self.health.reasons() if self.health is not None else []
        state |= {"ready": not reasons if self.health is not None else None, "reasons": reasons}
        return web.json_response(state)
