"""Nothing a client sends can stop the stream, on the real worker: slow and many HTTP clients, explanation load,
a page exposed without a token, a frozen broker."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
import urllib.request

import pytest

from sentiment.local import free_port
from sentiment.producing import produce_reviews
from tests.conftest import probe, wait_until
from tests.test_operator_integration import stored_ids

pytestmark = pytest.mark.integration

TIMEOUT = 2.0  # SENTIMENT_HTTP_TIMEOUT for these workers


def proc_status(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture()
def served(stream_settings, start_worker):
    settings = stream_settings.model_copy(update={"metrics_port": free_port(), "web_port": free_port()})
    worker = start_worker(settings, extra_env={"SENTIMENT_HTTP_TIMEOUT": str(TIMEOUT)})
    assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 200, 90, on_poll=worker.assert_alive), (
        worker.tail()
    )
    return settings, worker


def test_slow_clients_are_cut_off_and_cost_no_thread(served):
    settings, worker = served
    threads_before = proc_status(worker.process.pid, "Threads")
    slow = []
    for port in (settings.metrics_port, settings.web_port):
        for _ in range(100):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(conn)
    time.sleep(0.5)
    threads_with = proc_status(worker.process.pid, "Threads")
    deadline = time.monotonic() + TIMEOUT + 2
    closed = 0
    for conn in slow:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            while conn.recv(4096):
                pass
            closed += 1
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        conn.close()
    print(
        f"\nslow clients: {closed} of {len(slow)} closed within {TIMEOUT + 2:g} s; threads {threads_before} -> {threads_with}"
    )
    assert closed == len(slow)
    assert threads_with <= threads_before + 2
    assert probe(settings.metrics_port, "/readyz")[0] == 200
    assert "Traceback" not in worker.tail(300)


def test_explanations_do_not_stall_the_stream_nor_load_tensorflow(served, imdb_test_rows):
    settings, worker = served
    texts = [(r.text * 4)[:2000] for r in imdb_test_rows[:64]]
    body = json.dumps({"texts": texts, "explain": True}).encode()
    answered, failed, stop = [], [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"http://127.0.0.1:{settings.web_port}/api/score",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answered.append(json.loads(response.read())["results"][0]["explanation"]["sum"])
            except Exception as exc:  # noqa: BLE001 - counted, and the test says what
                failed.append(repr(exc))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    reviews = random.Random(5).sample(imdb_test_rows, 3000)
    started = time.monotonic()
    produce_reviews(settings, reviews, progress=False)
    assert wait_until(lambda: len(stored_ids(settings.database_url)) >= 3000, 120, on_poll=worker.assert_alive)
    took = time.monotonic() - started
    stop.set()
    for thread in clients:
        thread.join(70)
    peak_mb = proc_status(worker.process.pid, "VmHWM") / 1024
    maps = open(f"/proc/{worker.process.pid}/maps").read()
    print(f"\n3,000 reviews in {took:.1f} s beside 4 explain clients ({len(answered)} answered); peak {peak_mb:.0f} MB")
    assert not failed, failed[:3]
    assert answered, "no explanation was answered"
    assert peak_mb < 1024
    assert "libtensorflow" not in maps, "the worker loaded TensorFlow"


def test_a_page_beyond_loopback_needs_a_token(stream_settings, start_worker):
    worker = start_worker(
        stream_settings.model_copy(update={"web_port": free_port()}), extra_env={"SENTIMENT_WEB_HOST": "0.0.0.0"}
    )
    started = time.monotonic()
    assert worker.process.wait(30) == 2
    assert time.monotonic() - started < 15
    output = worker.tail()
    assert "SENTIMENT_WEB_TOKEN" in output and "Traceback" not in output


def test_a_frozen_broker_makes_the_worker_not_ready(stream_settings, start_worker, workdir):
    from sentiment.local import LocalBroker
    from stream.ingest.topics import create_topics

    own = LocalBroker(workdir, free_port()).start()
    try:
        settings = stream_settings.model_copy(update={"broker": own.url, "metrics_port": free_port()})
        create_topics(own.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
        worker = start_worker(settings)
        assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 200, 90, on_poll=worker.assert_alive)
        os.kill(own.process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 503, 15), worker.tail()
        reasons = probe(settings.metrics_port, "/readyz")[1]["reasons"]
        print(f"\nfrozen broker: not ready after {time.monotonic() - frozen:.1f} s: {reasons}")
        assert any("did not answer" in reason for reason in reasons), reasons
        os.kill(own.process.pid, signal.SIGCONT)
        assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 200, 60), worker.tail()
    finally:
        os.kill(own.process.pid, signal.SIGCONT)
        own.stop()
