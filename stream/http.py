"""The worker's HTTP: one hardened aiohttp stack for both of its servers, and the probes they share.

- The **metrics server** (``SENTIMENT_METRICS_PORT``, every interface, as exporters do) serves ``/metrics``,
  ``/healthz`` and ``/readyz`` and nothing else. It runs on an event loop of its own in one thread, so a scrape
  never waits for the stream's loop and the stream never waits for a scrape; it answers from the first second of
  start-up, while the model loads.
- The **page** (``stream/web``) runs on the worker's loop with the same limits.

Limits, because no client may hold the stream's resources: a connection that has not sent a whole request within
``SENTIMENT_HTTP_TIMEOUT`` seconds is closed (slow headers, an idle keep-alive), so is a body that does not arrive
within it; at most ``SENTIMENT_HTTP_MAX_CONNECTIONS`` connections at once per server, the next ones get a 503 and
are closed. A client that goes away mid-request is logged at DEBUG, not as an error. Access logs are off unless
``SENTIMENT_ACCESS_LOG`` is on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import UserError
from stream.health import Health

log = logging.getLogger("sentiment.http")

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 47\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "too many connections, retry later"}\n'
)


@dataclass(frozen=True)
class Limits:
    """How long a client may take and how many may be connected; from the settings of the same names."""

    timeout: float = 5.0
    max_connections: int = 100
    access_log: bool = False

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.http_timeout, settings.http_max_connections, settings.access_log)


class _Busy(asyncio.Protocol):
    """What a connection over the cap gets: a 503 and the door."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY)  # type: ignore[attr-defined]
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, which tells the :class:`Listener` when the connection is gone."""

    def __init__(self, handler: asyncio.Protocol, listener: Listener) -> None:
        self.handler = handler
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.open -= 1
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class Listener:
    """An aiohttp application listening on ``host:port`` under :class:`Limits` (on the running loop)."""

    def __init__(self, app: web.Application, limits: Limits) -> None:
        self.limits = limits
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
        self.open = 0  # connections accepted and not yet closed

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0)."""
        await self.runner.setup()
        handlers = self.runner.server
        assert handlers is not None

        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            # counted from the accept to the close, not by aiohttp (which counts a connection only once its
            # handler has started: a burst accepted at once, or on a starved loop, slipped past the cap)
            if self.open >= self.limits.max_connections:
                return _Busy()
            self.open += 1
            return _Counted(handlers(), self)

        self.server = await loop.create_server(protocol, host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.runner.cleanup()


def client_limits(limits: Limits, max_body: int) -> Callable:
    """Middleware: the body must arrive within the timeout (else 408) and hold at most ``max_body`` bytes (else
    413), and a client that goes away mid-request is a DEBUG line, not an error with a traceback."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.body_exists:
            if request.content_length is not None and request.content_length > max_body:
                return json_response({"error": f"the body is {request.content_length} bytes; at most {max_body}"}, 413)
            try:
                async with asyncio.timeout(limits.timeout):
                    await request.read()  # kept by aiohttp: the handler's read() or json() gets it at once
            except TimeoutError:
                return json_response({"error": f"the request body did not arrive within {limits.timeout:g} s"}, 408)
            except web.HTTPRequestEntityTooLarge:
                return json_response({"error": f"the body is over {max_body} bytes"}, 413)
            except (ConnectionResetError, ClientConnectionResetError):
                log.debug("client went away during %s %s", request.method, request.path)
                return json_response({"error": "connection lost"}, 400)  # written nowhere: the client is gone
            except HttpProcessingError as exc:  # a body that breaks off mid-chunk, or a malformed one
                log.debug("bad body on %s %s: %s", request.method, request.path, exc)
                return json_response({"error": "the request body could not be read"}, 400)
        return await handler(request)

    return middleware


def bearer_token(token: str | None) -> Callable:
    """Middleware: with a token set, every path but the probes needs ``Authorization: Bearer <token>`` (or
    ``?token=`` for the page itself, so that a browser can open it); compared in constant time."""
    expected = token.encode() if token else None
    open_paths = {"/healthz", "/readyz"}

    @web.middleware
    async def middleware(request: web.Request, handler):
        if expected is None or request.path in open_paths:
            return await handler(request)
        given = request.headers.get("Authorization", "")
        presented = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
        if not hmac.compare_digest(presented.encode(), expected):
            return json_response(
                {"error": "this server needs its token: send Authorization: Bearer <SENTIMENT_WEB_TOKEN>"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
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

    app = web.Application(middlewares=[client_limits(limits, 1024)], client_max_size=1024)
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
        self.listener = Listener(metrics_app(health, limits, collect), limits)
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
