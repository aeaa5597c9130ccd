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


def test_connections_over_the_cap_get_a_503_and_the_rest_keep_working():
    health = Health()
    health.update(model_loaded=True, joined=True, database_error=None, broker_error=None)
    # a timeout long enough that the held connections stay open on a loaded machine
    server = MetricsServer(health, "127.0.0.1", 0, Limits(timeout=30.0, max_connections=20))
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.settimeout(10)
        answer = extra.recv(1024)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        for conn in held:
            conn.close()
        assert wait_until(lambda: get(f"{server.url}/readyz")[0] == 200, 10)
    finally:
        server.stop()


def test_a_client_that_vanishes_mid_body_is_not_an_error(metrics_server, caplog):
    caplog.set_level(logging.DEBUG, logger="sentiment.http")
    conn = socket.create_connection(("127.0.0.1", metrics_server.port))
    conn.sendall(b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b"x" * 10)
    time.sleep(0.2)
    conn.close()
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert get(f"{metrics_server.url}/healthz")[0] == 200


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


@pytest.fixture()
def page_with_token():
    import asyncio

    from stream.http import Listener
    from stream.web import build_web_app

    app = build_web_app(
        scorer=FakeScorer(),
        explainer_factory=None,
        uncertain_band=0.1,
        max_texts=4,
        max_text_chars=100,
        token="t0k",
        limits=Limits(timeout=1.0),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = Listener(app, Limits(timeout=1.0))
    port = asyncio.run_coroutine_threadsafe(listener.start("127.0.0.1", 0), loop).result(5)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_with_a_token_the_api_and_page_need_it_and_the_probes_do_not(page_with_token):
    status, body = post(f"{page_with_token}/api/score", {"texts": ["good"]})
    assert status == 401 and "SENTIMENT_WEB_TOKEN" in body["error"]
    assert post(f"{page_with_token}/api/score", {"texts": ["good"]}, {"Authorization": "Bearer wrong"})[0] == 401
    status, body = post(f"{page_with_token}/api/score", {"texts": ["good"]}, {"Authorization": "Bearer t0k"})
    assert status == 200 and body["results"][0]["label"] == "positive"
    assert get(f"{page_with_token}/")[0] == 401
    assert get(f"{page_with_token}/?token=t0k")[0] == 200
    assert get(f"{page_with_token}/healthz")[0] == 200


def test_a_body_that_does_not_arrive_gets_a_408_within_the_timeout(page_with_token):
    port = int(page_with_token.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port))
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
    busy = 0
    for conn in burst:
        conn.settimeout(0.2)
        try:
            busy += conn.recv(1024).startswith(b"HTTP/1.1 503")
        except TimeoutError:
            pass
        conn.close()
    assert busy >= 40  # the cap is 20: at most 20 are held, every other one is told to come back later
