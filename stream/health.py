"""Is the worker alive, and can it do its job? One state object, and the HTTP endpoint that tells Prometheus and
Kubernetes-style probes: ``/metrics``, ``/healthz`` (alive: the event loop turns) and ``/readyz`` (ready).

Ready means: the model is loaded, the worker has joined its consumer group, and both the database and the broker
answer. It stays ready while idle (the database and the broker are probed every few seconds, not only when a batch
is written), and it is not ready while either of them is away.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import UserError
from stream import metrics

# /healthz fails when the event loop has not turned for this long (a blocked or dead loop).
LOOP_STALL_SECONDS = 30.0


class Health:
    def __init__(self) -> None:
        self.model_loaded = False
        self.joined = False
        self.database_error: str | None = "not checked yet"
        self.broker_error: str | None = "not checked yet"
        self.last_loop_beat = time.monotonic()
        self.stopping = False
        self._lock = threading.Lock()

    def reasons(self) -> list[str]:
        """Why the worker is not ready (empty when it is)."""
        with self._lock:
            found = []
            if self.stopping:
                found.append("stopping")
            if not self.model_loaded:
                found.append("model not loaded")
            if not self.joined:
                found.append("not in its consumer group (joining or rebalancing)")
            if self.database_error:
                found.append(f"database: {self.database_error}")
            if self.broker_error:
                found.append(f"broker: {self.broker_error}")
            return found

    @property
    def ready(self) -> bool:
        return not self.reasons()

    def update(self, **state) -> None:
        with self._lock:
            for key, value in state.items():
                setattr(self, key, value)
        metrics.READY.set(1 if self.ready else 0)

    def beat(self) -> None:
        self.last_loop_beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_loop_beat < LOOP_STALL_SECONDS


# One worker per process: its readiness, read by /readyz and the sentiment_ready gauge.
health = Health()


class _Handler(BaseHTTPRequestHandler):
    health: Health

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            alive = self.health.alive
            self._json(200 if alive else 503, {"alive": alive})
        elif path == "/readyz":
            reasons = self.health.reasons()
            self._json(503 if reasons else 200, {"ready": not reasons, "reasons": reasons})
        else:
            self._json(404, {"error": f"no such path {path}; try /metrics, /healthz or /readyz"})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - scrapes and probes are not worth a log line
        pass


class HealthServer:
    """The HTTP endpoint on its own thread. Binding happens at construction, so a port in use fails at start."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"health": health})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} for /metrics: {exc.strerror or exc} (another worker on this host?)",
                "give each worker its own SENTIMENT_METRICS_PORT (9108, 9109, ...), or 0 to turn the endpoint off",
            ) from exc
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="health-http", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
