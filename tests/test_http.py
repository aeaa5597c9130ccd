"""Both HTTP servers hold their limits against slow, many and vanishing clients (real sockets on loopback)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

from model.scorer import Inspection
from stream.health import Health
from stream.http import Limits, MetricsServer
from tests.conftest import wait_until


@pytest.fixture()
def metrics_server():
    health = Health()
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    server = MetricsServer(health, "127.0.0.1", 0, Limits(timeout=1.0, max_connections=20))
    yield server
    server.stop()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_and_probes_answer(metrics_server):
    status, body = get(f"{metrics_server.url}/metrics")
    assert status == 200 and b"sentiment_ready" in body
    assert get(f"{metrics_server.url}/readyz") == (200, b'{"ready": true, "reasons": []}')
    assert get(f"{metrics_server.url}/healthz")[0] == 200
    status, body = get(f"{metrics_server.url}/debug/vars")
    assert status == 404 and b"/metrics" in body


def test_slow_clients_are_closed_within_the_timeout_without_a_thread_each(metrics_server):
    before = threading.active_count()
    slow = []
    for i in range(50):
        conn = socket.create_connection(("127.0.0.1", metrics_server.port))
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"POST /metrics HTTP/1.1\r\n")
        slow.append(conn)
    time.sleep(0.3)
    assert threading.active_count() <= before + 1  # one loop for all of them, not a thread per connection
    deadline = time.monotonic() + 4
    closed = 0
    for conn in slow:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while conn.recv(1024):  # the server may answer 408/400 first; then it must close
                pass
            closed += 1  # end of stream: the server closed it
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass  # still open after the timeout: counted as not closed
        conn.close()
    assert closed == 50
    assert get(f"{metrics_server.url}/healthz")[0] == 200


def test_a_full_metrics_server_makes_room_for_a_scrape_by_closing_the_oldest_idle_connection():
    health = Health()
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    # a timeout long enough that the held connections stay open on a loaded machine
    server = MetricsServer(health, "127.0.0.1", 0, Limits(timeout=30.0, max_connections=20))
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        for conn in held:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a header, then nothing
        time.sleep(0.2)
        for _ in range(5):  # each scrape closes one of the slow ones; none is refused
            assert get(f"{server.url}/metrics")[0] == 200
        assert server.listener.open <= 20
        held[0].settimeout(5)
        assert held[0].recv(1024) == b""  # the oldest was closed to make room
        for conn in held:
            conn.close()
    finally:
        server.stop()


def test_a_client_that_vanishes_mid_body_is_not_an_error(page, caplog):
    caplog.set_level(logging.DEBUG, logger="sentiment.http")
    conn = socket.create_connection(("127.0.0.1", page.port))
    conn.sendall(
        b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n" + b"x" * 10
    )
    time.sleep(0.2)
    conn.close()
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert get(f"{page.url}/healthz")[0] == 200


def test_the_metrics_server_takes_no_body(metrics_server):
    conn = socket.create_connection(("127.0.0.1", metrics_server.port))
    conn.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    conn.settimeout(2)
    assert conn.recv(1024).startswith(b"HTTP/1.1 413")
    conn.close()


def test_readiness_says_why_not(metrics_server):
    health = Health()
    other = MetricsServer(health, "127.0.0.1", 0)
    try:
        status, body = get(f"{other.url}/readyz")
        assert status == 503 and "model not loaded" in json.loads(body)["reasons"]
    finally:
        other.stop()


class FakeScorer:
    version = "test"

    def inspect(self, texts):
        n = len(texts)
        return Inspection(np.full(n, 0.9, np.float32), np.ones(n, np.int32), np.ones(n, np.int32), np.zeros((n, 8)))


class Served:
    """An app on a Listener on a loop of its own thread (as the worker's metrics server runs)."""

    def __init__(self, app, limits: Limits) -> None:
        import asyncio

        from stream.http import Listener

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.listener = Listener(app, limits)
        self.port = asyncio.run_coroutine_threadsafe(self.listener.start("127.0.0.1", 0), self.loop).result(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def serve_page(token: str | None = "t0k", max_texts: int = 4, max_text_chars: int = 100, **limits) -> Served:
    from stream.web import build_web_app

    limits = Limits(**{"timeout": 1.0, **limits})
    app = build_web_app(
        scorer=FakeScorer(),
        explainer_factory=None,
        uncertain_band=0.1,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
        token=token,
        limits=limits,
    )
    return Served(app, limits)


@pytest.fixture()
def page():
    served = serve_page(client_rate=1000.0, client_body_rate=1e9)
    yield served
    served.stop()


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_with_a_token_the_api_needs_it_in_the_header_and_the_probes_do_not(page):
    url = page.url
    status, body = post(f"{url}/api/score", {"texts": ["good"]})
    assert status == 401 and "SENTIMENT_WEB_TOKEN" in body["error"]
    assert post(f"{url}/api/score", {"texts": ["good"]}, {"Authorization": "Bearer wrong"})[0] == 401
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):  # RFC 7235: the scheme in any case
        status, body = post(f"{url}/api/score", {"texts": ["good"]}, {"Authorization": f"{scheme} t0k"})
        assert status == 200 and body["results"][0]["label"] == "positive", scheme
    # the old way, the token in the query string (which every proxy logs), fails and says what to do
    status, body = post(f"{url}/api/score?token=t0k", {"texts": ["good"]})
    assert status == 401 and "Authorization: Bearer" in body["error"] and "?token=" in body["error"]
    status, body = get(f"{url}/?token=t0k")
    assert status == 401 and b"#token=" in body
    assert get(f"{url}/api/live")[0] == 401
    assert get(f"{url}/")[0] == 200  # the page is static; its calls to the API carry the token (/#token=...)
    assert get(f"{url}/healthz")[0] == 200


def test_a_body_that_does_not_arrive_gets_a_408_within_the_timeout(page):
    conn = socket.create_connection(("127.0.0.1", page.port))
    conn.sendall(
        b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    conn.settimeout(4)
    started = time.monotonic()
    answer = conn.recv(1024)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
    conn.close()


def test_the_page_beyond_loopback_needs_a_token():
    from core.errors import UserError
    from core.settings import Settings
    from stream.http import check_exposure

    check_exposure(Settings(web_host="127.0.0.1"))
    check_exposure(Settings(web_host="0.0.0.0", web_port=0))
    check_exposure(Settings(web_host="0.0.0.0", web_token="secret"))
    with pytest.raises(UserError) as caught:
        check_exposure(Settings(web_host="0.0.0.0"))
    assert caught.value.exit_code == 2 and "SENTIMENT_WEB_TOKEN" in caught.value.hint


def test_a_burst_of_connections_never_passes_the_cap(metrics_server):
    """Connections accepted in one pass of the loop are counted before their handlers start."""
    burst = [socket.create_connection(("127.0.0.1", metrics_server.port)) for _ in range(60)]
    time.sleep(0.5)
    assert metrics_server.listener.open <= 20
    for conn in burst:
        conn.close()
    assert get(f"{metrics_server.url}/healthz")[0] == 200
