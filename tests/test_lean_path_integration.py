"""The lean per-event path (stream/ingest/consumer.py) keeps Faust's at-least-once on real parts: kill -9 in the middle of
batches, large fetches and a small stream buffer (partitions paused and resumed by backpressure all along), then a
restart; nothing lost, nothing stored twice. tests/test_faults_integration.py runs on this path too (the default)."""

from __future__ import annotations

import signal

import pytest

from sentiment.producing import produce_reviews
from stream.sql.db import make_engine
from stream.sql.queries import scored_count
from tests.conftest import wait_until
from tests.test_faults_integration import check_acceptance, sample, send_bad

pytestmark = pytest.mark.integration


def test_kill_9_mid_batch_on_the_lean_path_loses_and_duplicates_nothing(stream_settings, start_worker, imdb_test_rows):
    reviews = sample(imdb_test_rows, 9000, 21)
    produce_reviews(stream_settings, reviews, progress=False)
    send_bad(stream_settings)
    # batches of 512 from fetches of every partition's backlog, through a stream buffer of 300: the partitions are
    # paused and resumed by backpressure all along, and each kill lands while batches are scored and stored
    env = {"SENTIMENT_LEAN_PATH": "true", "SENTIMENT_BATCH_SIZE": "512", "SENTIMENT_STREAM_BUFFER": "300"}
    engine = make_engine(stream_settings.database_url)
    stored_at_kill = []
    try:
        for more in (700, 1200, 1200):
            worker = start_worker(extra_env=env)
            # each worker has started on the lean path before its kill is aimed: a fast one stored 2,000 reviews
            # between two looks, and the next one, its target already met, was killed before it began
            started = wait_until(lambda w=worker: "lean path" in w.log.read_text(), 120, 0.05, worker.assert_alive)
            assert started, worker.tail()
            target = scored_count(engine) + more
            reached = wait_until(lambda t=target: scored_count(engine) >= t, 120, 0.05, worker.assert_alive)
            assert reached, worker.tail()
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()
            stored_at_kill.append(scored_count(engine))
    finally:
        engine.dispose()
    print(f"\nstored when killed: {stored_at_kill}")
    assert stored_at_kill[-1] < len(reviews), "the backlog was done before the last kill: nothing was tested"
    worker = start_worker(extra_env=env)
    check_acceptance("lean path, kill -9 mid-batch x3", stream_settings, reviews, worker)
