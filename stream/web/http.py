"""The worker's HTTP: one hardened aiohttp stack for both of its servers, and the probes they share.

- The **metrics server** (``SENTIMENT_METRICS_PORT``, every interface, as exporters do) serves ``/metrics``,
  ``/healthz`` and ``/readyz`` and nothing else. It runs on an event loop of its own in one thread, so a scrape
  never waits for the stream's loop and the stream never waits for a scrape; it answers from the first second of
  start-up, while the model loads. No API client can crowd it out: it takes no request body, and when all of its
  ``SENTIMENT_HTTP_MAX_CONNECTIONS`` are open, a new connection closes the oldest one that is not in the middle of a
  request (a slow header, an idle keep-alive) instead of being turned away.
- The **page** (``stream/web``) runs on the worker's loop with the same limits, and per-client ones: at most
  ``SENTIMENT_HTTP_CLIENT_CONNECTIONS`` connections, ``SENTIMENT_HTTP_CLIENT_RATE`` requests and
  ``SENTIMENT_HTTP_CLIENT_BODY_RATE`` body bytes per second from one address (429 with ``Retry-After``). A client is
  its IP address, never a header (which anyone can write).

Limits, because no client may hold the stream's resources: a connection that has not sent a whole request within
``SENTIMENT_HTTP_TIMEOUT`` seconds is closed (slow headers, an idle keep-alive), so is a body that does not arrive
within it; at most ``SENTIMENT_HTTP_MAX_CONNECTIONS`` connections at once per server. A request is admitted before
any work: its declared size, its client's rates and the bodies already held are checked before its body is read.

Errors are data: every refused request gets a 4xx (or a 503 when the server is full) with a one-line JSON reason,
is counted in ``sentiment_http_rejected_total{server, reason}``, and is logged at most once per client per
``REJECTION_LOG_INTERVAL`` seconds in a line of our own words: nothing a client sent (a header, a path, a token) is
written to the log. A client that goes away mid-request is logged at DEBUG, not as an error. Access logs are off
unless ``SENTIMENT_ACCESS_LOG`` is on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import UserError
from stream.observe import metrics
from stream.observe.health import Health

log = logging.getLogger("sentiment.http")

REJECTION_LOG_INTERVAL = 60.0  # seconds between two log lines about one client's refused requests
REJECTION_LOG_LINES = 20  # at most this many such lines per interval, over all clients
CLIENTS_KEPT = 4096  # clients whose rates and log state are remembered; the quietest are forgotten first


def _canned(status: str, error: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP answer that closes the connection, for a connection refused before aiohttp sees it."""
    body = json.dumps({"error": error}).encode() + b"\n"
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{retry}"
        f"Connection: close\r\n\r\n"
    ).encode() + body


BUSY = _canned("503 Service Unavailable", "too many connections, retry later", 1)
CLIENT_BUSY = _canned("429 Too Many Requests", "too many connections from your address; close some first", 1)


@dataclass(frozen=True)
class Limits:
    """How long a client may take and how many may be connected; from the settings of the same names. The
    ``client_*`` limits are per client address (None: none, as on the metrics server)."""

    timeout: float = 5.0
    max_connections: int = 100
    access_log: bool = False
    client_connections: int | None = 16
    client_rate: float | None = 20.0  # requests per second, bursts of twice as many
    client_body_rate: float | None = 4_000_000.0  # body bytes per second, bursts of one largest body

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(
            settings.http_timeout,
            settings.http_max_connections,
            settings.access_log,
            settings.http_client_connections,
            settings.http_client_rate,
            settings.http_client_body_rate,
        )

    def for_metrics(self) -> Limits:
        """The same timeouts and cap without per-client limits: the scraper may share its address with anyone."""
        return Limits(self.timeout, self.max_connections, self.access_log, None, None, None)


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount``: 0 when taken, else the seconds until it could be (nothing is taken then)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


@dataclass
class Client:
    """What one client address has spent, and its refusals not yet logged."""

    requests: Bucket | None = None
    body_bytes: Bucket | None = None
    refused: dict[str, int] = field(default_factory=dict)  # "413 too_large" -> count, since the last log line
    logged_at: float = -math.inf


class Clients:
    """Every client address seen lately (at most ``CLIENTS_KEPT``; the least recently seen are forgotten first)."""

    def __init__(self, limits: Limits, max_body: int = 0) -> None:
        self.limits = limits
        self.max_body = max_body
        self.by_address: OrderedDict[str, Client] = OrderedDict()

    def get(self, address: str) -> Client:
        client = self.by_address.get(address)
        if client is None:
            now = time.monotonic()
            client = self.by_address[address] = Client()
            if self.limits.client_rate:
                client.requests = Bucket(self.limits.client_rate, 2 * self.limits.client_rate, now)
            if self.limits.client_body_rate:
                rate = self.limits.client_body_rate
                client.body_bytes = Bucket(rate, max(self.max_body, rate), now)
            if len(self.by_address) > CLIENTS_KEPT:
                self._forget(now)
        else:
            self.by_address.move_to_end(address)
        return client

    def _forget(self, now: float) -> None:
        for address in list(self.by_address)[: len(self.by_address) - CLIENTS_KEPT // 2]:
            del self.by_address[address]


class Rejections:
    """Counts every refused request by server and reason, and tells the log about it at most once per client per
    ``interval`` (and at most ``lines`` times per interval in all): the status and our reason code, with how many
    more were refused since the last line. Nothing of the request itself."""

    def __init__(self, server: str, clients: Clients, interval: float = REJECTION_LOG_INTERVAL) -> None:
        self.server = server
        self.clients = clients
        self.interval = interval
        self.window_start = -math.inf
        self.lines_in_window = 0

    def note(self, address: str, status: int, reason: str, error: BaseException | None = None) -> None:
        metrics.HTTP_REJECTED.labels(server=self.server, reason=reason).inc()
        client = self.clients.get(address)
        key = f"{status} {reason}"
        client.refused[key] = client.refused.get(key, 0) + 1
        now = time.monotonic()
        if now - client.logged_at < self.interval:
            return
        if now - self.window_start >= self.interval:
            self.window_start, self.lines_in_window = now, 0
        if self.lines_in_window >= REJECTION_LOG_LINES:
            return
        self.lines_in_window += 1
        refused = ", ".join(f"{what} x{n}" for what, n in sorted(client.refused.items()))
        since = "" if client.logged_at == -math.inf else f" in the last {now - client.logged_at:,.0f} s"
        client.refused.clear()
        client.logged_at = now
        level = logging.ERROR if status >= 500 and reason == "internal_error" else logging.WARNING
        log.log(
            level,
            "%s server refused requests from %s%s: %s (at most one such line per client per %.0f s)%s",
            self.server,
            address,
            since,
            refused,
            self.interval,
            f"; the last error: {type(error).__name__}" if error is not None else "",
            exc_info=error if error is not None and log.isEnabledFor(logging.DEBUG) else None,
        )


def peer_address(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


def client_address(request: web.Request) -> str:
    """The client's IP address, from the connection (never from a header such as X-Forwarded-For)."""
    return peer_address(request.transport)


# The reason code of a refused request, by status, when the refusal gives none of its own (a metric label)
REASON_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "busy",
    504: "timeout",
}


def reason_for(status: int) -> str:
    return REASON_BY_STATUS.get(status, "client_error" if status < 500 else "server_error")


def malformed_http(exc: BaseException | None) -> tuple[str, str]:
    """(reason code, one line for the client) of a request aiohttp could not read, in our words: its own message
    may quote the request (a header, part of a token), so it is neither sent nor logged."""
    if isinstance(exc, LineTooLong):
        return "header_too_large", "a request line or a header is too long"
    if isinstance(exc, BadHttpMethod):
        return "malformed_http", "this is not an HTTP request"
    return "malformed_http", "the request is not valid HTTP"


class _Handler(RequestHandler):
    """aiohttp's connection handler, whose errors are one JSON line each, counted and logged by :class:`Rejections`
    (aiohttp's own logs the request's text, with a traceback, for each)."""

    rejections: Rejections  # set on the subclass each Listener makes

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message=None):
        if status >= 500 and exc is not None and not isinstance(exc, HttpProcessingError):
            reason, error = "internal_error", "internal error; see the server log"
        elif status == 504:
            reason, error = "timeout", "the request took too long"
        else:
            reason, error = malformed_http(exc)
        self.rejections.note(peer_address(self.transport), status, reason, exc if reason == "internal_error" else None)
        if request.writer.output_size > 0:  # some of an answer is out: the connection is broken
            raise ConnectionError("response already started; cannot send the error")
        response = json_response({"error": error}, status)
        response.force_close()
        return response


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, admitted by the :class:`Listener` once its address is known, which
    tells the listener when the connection is gone."""

    def __init__(self, make_handler: Callable[[], RequestHandler], listener: Listener) -> None:
        self.make_handler = make_handler
        self.handler: RequestHandler = None  # type: ignore[assignment] - made once admitted: a refusal costs less
        self.listener = listener
        self.transport: asyncio.BaseTransport | None = None
        self.address: str | None = None  # counted against this client
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.address = peer_address(transport)
        refusal = self.listener.admit(self)
        if refusal is not None:
            transport.write(refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        self.handler = self.make_handler()
        self.started = True
        self.handler.connection_made(transport)

    def idle(self) -> bool:
        """True when no request is being handled: a header still arriving, or a keep-alive between requests."""
        handler = self.handler
        return self.started and not handler._request_in_progress and not handler._messages

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.gone(self)
        if self.started:
            self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.started:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.started else None

    def pause_writing(self) -> None:
        if self.started:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.started:
            self.handler.resume_writing()


class Listener:
    """An aiohttp application listening on ``host:port`` under :class:`Limits` (on the running loop). ``server``
    names it in the rejections metric ("page" or "metrics").

    At the connection cap a new connection is not simply turned away: the client holding the most connections gives
    up its oldest idle one (a slow header, a keep-alive between requests), unless the newcomer holds half as many or
    more (that client itself, or one of its like), which is then refused. So whoever holds a server full cannot keep anyone else out (a scrape always gets in), nor churn
    its own connections to do so; only when every connection is busy with a request does a newcomer get a 503."""

    def __init__(self, app: web.Application, limits: Limits, *, server: str = "page", max_body: int = 0) -> None:
        self.limits = limits
        self.clients: Clients = app.get(CLIENTS_KEY) or Clients(limits, max_body)
        self.rejections: Rejections = app.get(REJECTIONS_KEY) or Rejections(server, self.clients)
        self.runner = web.AppRunner(
            app,
            handle_signals=False,
            # Closes a connection that has sent no whole request within the timeout: aiohttp arms this timer when
            # the connection opens, so it covers slow headers as well as an idle keep-alive.
            keepalive_timeout=limits.timeout,
            access_log=logging.getLogger("sentiment.http.access") if limits.access_log else None,
            handler_cancellation=True,
            # after an early answer (a 408, a 413), close instead of reading the rest of a slow body for 10 s
            lingering_time=0,
        )
        self.server: asyncio.AbstractServer | None = None
        self.connections: OrderedDict[_Counted, None] = OrderedDict()  # admitted and not yet closed, oldest first
        self.by_address: dict[str, int] = {}  # admitted connections per client address

    @property
    def open(self) -> int:
        return len(self.connections)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0)."""
        await self.runner.setup()
        server = self.runner.server
        assert server is not None
        handler_class = type("Handler", (_Handler,), {"rejections": self.rejections})
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return _Counted(lambda: handler_class(server, loop=loop, **server._kwargs), self)

        self.server = await loop.create_server(protocol, host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    def admit(self, connection: _Counted) -> bytes | None:
        """Count ``connection`` in, or the answer that refuses it. Counted from the accept to the close, not by
        aiohttp (which counts a connection only once its handler has started: a burst accepted at once, or on a
        starved loop, slipped past the cap)."""
        address = connection.address or "unknown"
        held = self.by_address.get(address, 0)
        cap = self.limits.client_connections
        if cap is not None and held >= cap:
            self.rejections.note(address, 429, "too_many_connections")
            return CLIENT_BUSY
        if len(self.connections) >= self.limits.max_connections and not self._make_room(address, held):
            self.rejections.note(address, 503, "too_many_connections")
            return BUSY
        self.connections[connection] = None
        self.by_address[address] = held + 1
        return None

    def _make_room(self, newcomer: str, newcomer_holds: int) -> bool:
        """Close the oldest idle connection of the client that holds the most, if it holds more than twice as many
        as the newcomer (so that clients holding about as many do not churn each other's connections)."""
        heaviest, most = max(self.by_address.items(), key=lambda item: item[1])
        if most <= 2 * newcomer_holds or heaviest == newcomer:
            return False
        for connection in self.connections:
            if connection.address == heaviest and connection.idle():
                self.gone(connection)
                connection.transport.close()  # type: ignore[union-attr]
                return True
        return False

    def gone(self, connection: _Counted) -> None:
        if self.connections.pop(connection, False) is None:
            left = self.by_address[connection.address] - 1
            if left:
                self.by_address[connection.address] = left
            else:
                del self.by_address[connection.address]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.runner.cleanup()


CLIENTS_KEY = web.AppKey("clients", Clients)
REJECTIONS_KEY = web.AppKey("rejections", Rejections)


def accounting(server: str, limits: Limits, max_body: int = 0) -> tuple[Callable, Clients, Rejections]:
    """The outermost middleware of an app: every answer of 400 or more is counted and logged (throttled) as a
    rejection; an exception no handler caught is a 500 with one line, its traceback in the log only with --debug.
    Returns the middleware and the client table and rejection log it shares with the app's :class:`Listener`."""
    clients = Clients(limits, max_body)
    rejections = Rejections(server, clients)

    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = json_response({"error": exc.reason}, exc.status)
        except (asyncio.CancelledError, ConnectionResetError, ClientConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - the client gets one line, the log the type (trace with --debug)
            rejections.note(client_address(request), 500, "internal_error", exc)
            return json_response({"error": "internal error; see the server log"}, 500)
        # (a probe's 503 is its answer, "not ready" or "not alive", not a refusal: no count, no line)
        if response.status >= 400 and not (request.path in PROBES and REASON not in response):
            reason = response.get(REASON) or reason_for(response.status)
            rejections.note(client_address(request), response.status, reason)
        return response

    return middleware, clients, rejections


REASON = web.ResponseKey("sentiment_reason", str)  # the reason code a refusal carries, for the rejections metric


def refusal(status: int, error: str, reason: str | None = None, **kwargs) -> web.Response:
    response = json_response({"error": error}, status, **kwargs)
    if reason is not None:
        response[REASON] = reason
    return response


SMALL_UNREAD_BODY = 65_536  # a refused request's body up to this size is read before the answer; a larger one is not


async def drained(request: web.Request, response: web.Response) -> web.Response:
    """``response`` to a request refused before its body was read. A small body is read first (briefly): closing a
    connection with unread bytes resets it, and the client may lose the answer; a large one is left unread, and the
    connection closed."""
    size = request.content_length
    if request.body_exists and size is not None and size <= SMALL_UNREAD_BODY:
        try:
            async with asyncio.timeout(1.0):
                await request.read()
        except Exception:  # noqa: BLE001 - the answer goes out anyway; the client may not get it
            pass
    return response


def client_rates(clients: Clients, open_paths: frozenset[str] = frozenset()) -> Callable:
    """Middleware: each client's request rate, and the body bytes it declares, within its buckets (else 429 with
    ``Retry-After``), checked before anything else is done for the request. The probes are not counted."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path in open_paths:
            return await handler(request)
        client = clients.get(client_address(request))
        now = time.monotonic()
        wait = client.requests.take(1, now) if client.requests is not None else 0.0
        size = request.content_length
        # (a body larger than the bucket can ever hold is over the size limit: client_limits answers it 413)
        if not wait and client.body_bytes is not None and size and size <= client.body_bytes.burst:
            wait = client.body_bytes.take(size, now)
            if wait and client.requests is not None:
                client.requests.tokens += 1  # refused: the request is not counted
        if wait:
            return await drained(request, refusal(
                429,
                f"too many requests from your address; retry after {math.ceil(wait)} s",
                "rate_limited",
                headers={"Retry-After": str(math.ceil(wait))},
            ))  # fmt: skip
        return await handler(request)

    return middleware


class BodyBudget:
    """The request bytes held in memory at once by one server (declared sizes of bodies being read or waiting for
    their turn); over it, a request is refused before its body is read."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0


def client_limits(
    limits: Limits,
    max_body: int | Callable[[web.Request], int],
    budget: BodyBudget | None = None,
    json_paths: frozenset[str] = frozenset(),
) -> Callable:
    """Middleware: a request is admitted before its body is read: on ``json_paths`` it must say it is JSON (415) and
    how long it is (411); it may declare at most ``max_body`` bytes (413) and fit in the ``budget`` of bytes held
    (503). Then the body must arrive within the timeout (else 408) and be as long as declared; a client that goes
    away mid-request is a DEBUG line, not an error with a traceback."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        most = max_body(request) if callable(max_body) else max_body
        if request.path in json_paths and request.method == "POST":
            if request.content_type != "application/json":
                shown = request.content_type if _PRINTABLE.fullmatch(request.content_type or "") else "another type"
                return await drained(
                    request, refusal(415, f"send JSON with Content-Type: application/json, not {shown or 'none'}")
                )
            if request.content_length is None:
                return refusal(411, "send the body with a Content-Length header (not chunked)")
        if not request.body_exists:
            return await handler(request)
        size = request.content_length
        if size is not None and size > most:
            return refusal(413, f"the body is {size} bytes; at most {most}" if most else "this path takes no body")
        held = size if size is not None else most
        if budget is not None:
            if budget.held + held > budget.most:
                return await drained(request, refusal(
                    503, "the server holds too many request bodies; retry later", "busy", headers={"Retry-After": "1"}
                ))  # fmt: skip
            budget.held += held
        try:
            try:
                async with asyncio.timeout(limits.timeout):
                    await request.read()  # kept by aiohttp: the handler's read() or json() gets it at once
            except TimeoutError:
                return refusal(408, f"the request body did not arrive within {limits.timeout:g} s")
            except web.HTTPRequestEntityTooLarge:
                return refusal(413, f"the body is over {most} bytes")
            except (ConnectionResetError, ClientConnectionResetError):
                log.debug("client went away during a request")
                return refusal(400, "connection lost", "connection_lost")  # written nowhere: the client is gone
            except HttpProcessingError as exc:  # a body that breaks off mid-chunk, or a malformed one
                log.debug("unreadable body: %s", type(exc).__name__)
                return refusal(400, "the request body could not be read")
            return await handler(request)
        finally:
            if budget is not None:
                budget.held -= held

    return middleware


_PRINTABLE = re.compile(r"[A-Za-z0-9!#$&^_.+\-/]{1,100}")  # a media type as RFC 6838 spells it
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750's b64token: what a bearer token may be made of
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr]")
PROBES = frozenset({"/healthz", "/readyz"})


def bearer_token(token: str | None, open_paths: frozenset[str] = PROBES) -> Callable:
    """Middleware: with a token set, every path but ``open_paths`` needs ``Authorization: Bearer <token>`` (the
    scheme in any case, RFC 7235); compared in constant time. A token in the query string (``?token=``, accepted
    once) is refused with a 401 that says to send the header: a query string lands in every proxy's log."""
    expected = token.encode() if token else None

    def unauthorized(error: str, problem: str = "invalid_token") -> web.Response:
        return refusal(401, error, "unauthorized", headers={"WWW-Authenticate": f'Bearer error="{problem}"'})

    @web.middleware
    async def middleware(request: web.Request, handler):
        response = await check(request, handler)
        return await drained(request, response) if response.status == 401 else response

    async def check(request: web.Request, handler):
        if expected is None or request.path in PROBES:
            return await handler(request)
        if "token" in request.query:
            return unauthorized(
                "the token is not taken from the query string (?token=): send it as Authorization: Bearer <token> "
                "(the page: open it as /#token=<token>)",
                "invalid_request",
            )
        if request.path in open_paths:
            return await handler(request)
        given = request.headers.get("Authorization")
        if given is None:
            return unauthorized(
                "this server needs its token: send Authorization: Bearer <SENTIMENT_WEB_TOKEN>", "invalid_request"
            )
        scheme, _, credentials = given.strip().partition(" ")
        credentials = credentials.strip()
        if not _BEARER.fullmatch(scheme) or not _TOKEN68.fullmatch(credentials):
            return unauthorized(
                "the Authorization header is malformed: send Authorization: Bearer <SENTIMENT_WEB_TOKEN>",
                "invalid_request",
            )
        if not hmac.compare_digest(credentials.encode("ascii"), expected):
            return unauthorized("the token is not this server's (SENTIMENT_WEB_TOKEN)")
        return await handler(request)

    return middleware


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_exposure(settings) -> None:
    """The page and API scored on any interface but loopback need a token: refuse to start without one."""
    if settings.web_port and settings.web_host not in LOOPBACK and settings.web_token is None:
        raise UserError(
            f"SENTIMENT_WEB_HOST={settings.web_host} opens the page and API beyond this machine without a token",
            "set SENTIMENT_WEB_TOKEN (clients send Authorization: Bearer <token>), or listen on 127.0.0.1",
            exit_code=2,
        )


def json_response(body: dict, status: int = 200, **kwargs) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", **kwargs)


def add_probes(app: web.Application, health: Health | None) -> None:
    """``/healthz`` (alive: the worker's event loop turns) and ``/readyz`` (ready, and if not, why, in our words).
    Without a worker (``sentiment serve``) the server itself is what is alive and ready."""

    async def healthz(request: web.Request) -> web.Response:
        alive = health.alive if health is not None else True
        return json_response({"alive": alive}, 200 if alive else 503)

    async def readyz(request: web.Request) -> web.Response:
        reasons = health.reasons() if health is not None else []
        return json_response({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def metrics_app(health: Health, limits: Limits, collect: Callable[[], bytes] = generate_latest) -> web.Application:
    """``collect``: the exposition (this process's metrics; under --processes, every child's: stream/supervisor.py)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(collect)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def unknown(request: web.Request) -> web.Response:
        return json_response({"error": "no such path; try /metrics, /healthz or /readyz"}, 404)

    accounted, clients, rejections = accounting("metrics", limits)
    # no body at all: a request that declares one is answered 413 before any of it is read, and the connection closed
    app = web.Application(middlewares=[accounted, client_limits(limits, 0)], client_max_size=1024)
    app[CLIENTS_KEY], app[REJECTIONS_KEY] = clients, rejections
    app.router.add_get("/metrics", metrics)
    add_probes(app, health)
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on an event loop of its own, in one thread for all connections.
    It listens from construction on, so a port in use fails at start, and answers while the model loads."""

    def __init__(
        self,
        health: Health,
        host: str,
        port: int,
        limits: Limits = Limits(),
        collect: Callable[[], bytes] = generate_latest,
    ) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        limits = limits.for_metrics()
        self.listener = Listener(metrics_app(health, limits, collect), limits, server="metrics")
        self.thread = threading.Thread(target=self.loop.run_forever, name="metrics-http", daemon=True)
        self.thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self.listener.start(host, port), self.loop).result(10)
        except OSError as exc:
            self.stop()
            raise UserError(
                f"cannot listen on {host}:{port} for /metrics: {exc.strerror or exc} (another worker on this host?)",
                "give each worker its own SENTIMENT_METRICS_PORT (9108, 9109, ...), or 0 to turn the endpoint off",
            ) from exc

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(5)
            except Exception:  # noqa: BLE001 - stopping: what is left goes with the process
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
