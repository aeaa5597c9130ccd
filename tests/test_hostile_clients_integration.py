"""Stream first, round two, on real parts (Tansu, PostgreSQL, a worker process): no request, client or event slows
the stream, nothing a client sends ends up in a log, and the worker stops on time with its broker gone."""

from __future__ import annotations

import time

import pytest

from sentiment.local import LocalBroker, free_port
from stream.topics import create_topics
from tests.conftest import probe, wait_until

pytestmark = pytest.mark.integration


def test_sigterm_with_the_broker_gone_stops_within_the_grace(stream_settings, start_worker, workdir):
    own = LocalBroker(workdir, free_port()).start()
    try:
        settings = stream_settings.model_copy(update={"broker": own.url, "metrics_port": free_port()})
        create_topics(own.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
        worker = start_worker(settings)
        port = settings.metrics_port
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
        own.stop()
        time.sleep(3)  # the worker notices: its fetches and heartbeats fail
        started = time.monotonic()
        worker.process.terminate()
        code = worker.process.wait(30)
        took = time.monotonic() - started
        print(f"\nSIGTERM with the broker gone: exited {code} after {took:.2f} s\n{worker.tail(30)}")
        assert took < 10.0, worker.tail()
    finally:
        own.stop()
