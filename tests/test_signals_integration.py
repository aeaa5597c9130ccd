"""Signals that tell the truth, on real parts (Tansu, PostgreSQL, a worker process): the lag gauge and readiness
while nothing can be delivered, and a log that stays readable while the broker is away and on stop."""

from __future__ import annotations

import random
import re
import time

import pytest

from sentiment.local import LocalBroker, LocalPostgres, free_port, read_metric
from sentiment.producing import produce_reviews
from stream.ingest.topics import create_topics
from stream.sql.db import upgrade
from tests.conftest import probe, stored_count, wait_until

pytestmark = pytest.mark.integration


def test_the_lag_and_readiness_tell_the_truth_while_the_database_is_away(
    stream_settings, start_worker, imdb_test_rows, workdir
):
    pg = LocalPostgres(workdir / f"pg-stall-{stream_settings.app_id}").start()
    try:
        upgrade(pg.url)
        settings = stream_settings.model_copy(update={"database_url": pg.url, "metrics_port": free_port()})
        port = settings.metrics_port
        worker = start_worker(settings, {"SENTIMENT_STALL_SECONDS": "8"})
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
        pg.stop()
        reviews = random.Random(9).sample(imdb_test_rows, 2000)
        produce_reviews(settings, reviews, progress=False)
        started = time.monotonic()

        def lag() -> float:
            return read_metric(port, "sentiment_consumer_lag_messages") or 0.0

        # no batch completes, and the gauge still says what waits (within one probe, every 5 s)
        assert wait_until(lambda: lag() >= 0.95 * len(reviews), 20, on_poll=worker.assert_alive), worker.tail()
        took_lag = time.monotonic() - started

        def not_advancing() -> bool:
            return any(r.startswith("not advancing:") for r in probe(port, "/readyz")[1].get("reasons", []))

        assert wait_until(not_advancing, 30, on_poll=worker.assert_alive), (probe(port, "/readyz"), worker.tail())
        took_stall = time.monotonic() - started
        reasons = probe(port, "/readyz")[1]["reasons"]
        print(f"\nlag {lag():,.0f} after {took_lag:.1f} s; not ready after {took_stall:.1f} s: {reasons}")
        assert re.search(r"not advancing: [\d,]+ reviews waiting, no progress for \d+ s", " ".join(reasons))
        assert read_metric(port, "sentiment_ready") == 0.0
        assert read_metric(port, "sentiment_seconds_since_progress") >= 8

        pg.restart()
        assert wait_until(lambda: stored_count(pg.url) == len(reviews), 120, on_poll=worker.assert_alive), worker.tail()
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200 and lag() == 0, 30), (
            probe(port, "/readyz"),
            worker.tail(),
        )
        assert read_metric(port, "sentiment_seconds_since_progress") == 0
        assert "not advancing: 2,000 reviews waiting" in worker.log.read_text()
    finally:
        pg.stop()


def test_the_broker_away_then_sigterm_leaves_a_short_log_without_tracebacks(
    stream_settings, start_worker, imdb_test_rows, workdir
):
    own = LocalBroker(workdir, free_port()).start()
    try:
        settings = stream_settings.model_copy(update={"broker": own.url, "metrics_port": free_port()})
        create_topics(own.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
        worker = start_worker(settings)
        port = settings.metrics_port
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
        reviews = random.Random(5).sample(imdb_test_rows, 1000)
        produce_reviews(settings, reviews, progress=False)
        assert wait_until(lambda: read_metric(port, "sentiment_reviews_scored_total") == len(reviews), 60), (
            worker.tail()
        )
        own.stop()
        stopped_at = len(worker.log.read_text().splitlines())
        time.sleep(10)
        worker.stop(timeout=60)
        log = worker.log.read_text()
        after = log.splitlines()[stopped_at:]
        print(f"\n{len(after)} lines after the broker stopped:\n" + "\n".join(after[:80]))
        errors = [line for line in after if re.search(r"\bERROR\b", line)]
        assert len(errors) < 20, "\n".join(errors[:40])
        assert "Traceback" not in log, log[-4000:]
        assert log.count(f"Creating topic '{settings.topic_sentiments}'") <= 1, log[-4000:]  # not one per batch
        assert log.count("oneDNN") <= 1  # TensorFlow's banner, if any, once
    finally:
        own.stop()
