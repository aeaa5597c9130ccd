"""The lean per-event path (stream/ingest/consumer.py) keeps Faust's at-least-once on real parts: kill -9 in the middle of
batches, large fetches and a small stream buffer (partitions paused and resumed by backpressure all along), then a
restart; nothing lost, nothing stored twice. tests/test_faults_integration.py runs on this path too (the default)."""

from __future__ import annotations

import signal

import pytest

from sentiment.producing import produce_reviews
from tests.conftest import stored_count, wait_until
from tests.test_faults_integration import check_acceptance, sample, send_bad

pytestmark = pytest.mark.integration


def test_kill_9_mid_batch_on_the_lean_path_loses_and_duplicates_nothing(stream_settings, start_worker, imdb_test_rows):
    reviews = sample(imdb_test_rows, 6000, 21)
    produce_reviews(stream_settings, reviews, progress=False)
    send_bad(stream_settings)
    # batches of 512 from fetches of every partition's backlog, through a stream buffer of 300: the partitions are
    # paused and resumed by backpressure all along, and each kill lands while batches are scored and stored
    env = {"SENTIMENT_LEAN_PATH": "true", "SENTIMENT_BATCH_SIZE": "512", "SENTIMENT_STREAM_BUFFER": "300"}
    stored_at_kill = []
    for target in (700, 2300, 4100):
        worker = start_worker(extra_env=env)
        assert wait_until(
            lambda t=target: stored_count(stream_settings.database_url) >= t, 120, on_poll=worker.assert_alive
        ), worker.tail()
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        stored_at_kill.append(stored_count(stream_settings.database_url))
        assert "lean path" in worker.log.read_text(), worker.tail()
    print(f"\nstored when killed: {stored_at_kill}")
    assert stored_at_kill[-1] < len(reviews), "the backlog was done before the last kill: nothing was tested"
    worker = start_worker(extra_env=env)
    check_acceptance("lean path, kill -9 mid-batch x3", stream_settings, reviews, worker)
