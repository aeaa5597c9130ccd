"""Both HTTP servers hold their limits against slow, many and vanishing clients (real sockets on loopback)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request

import pytest

from stream.health import Health
from stream.http import Limits, MetricsServer


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


def test_connections_over_the_cap_get_a_503_and_the_rest_keep_working(metrics_server):
    held = [socket.create_connection(("127.0.0.1", metrics_server.port)) for _ in range(20)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", metrics_server.port))
    extra.settimeout(3)
    answer = extra.recv(1024)
    assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
    for conn in held:
        conn.close()
    time.sleep(0.2)
    assert get(f"{metrics_server.url}/readyz")[0] == 200


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
