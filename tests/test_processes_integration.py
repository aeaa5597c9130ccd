"""``sentiment worker --processes 2`` end to end on real parts (Tansu, PostgreSQL): one command, one log naming each
process, one metrics endpoint whose counters add up over the processes, a child killed with kill -9 and restarted,
nothing lost, nothing stored twice, and SIGTERM stops them all within 10 s with exit code 0."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from sentiment.local import free_port, read_metric
from sentiment.producing import produce_reviews
from tests.conftest import probe, stored_count, wait_until
from tests.test_faults_integration import check_acceptance, sample, send_bad

pytestmark = pytest.mark.integration


def child_pids(log: str, name: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"\[supervisor\] {name} started \(pid (\d+)\)", log)]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_two_processes_one_endpoint_a_child_killed_and_restarted(stream_settings, start_worker, imdb_test_rows):
    settings = stream_settings.model_copy(update={"metrics_port": free_port()})
    port = settings.metrics_port
    supervisor = start_worker(settings, args=("--processes", "2"))
    assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 120, on_poll=supervisor.assert_alive), (
        probe(port, "/readyz"),
        supervisor.tail(),
    )
    reviews = sample(imdb_test_rows, 5000, 31)

    # both processes take part, and the one endpoint's counters are the sum of theirs
    produce_reviews(settings, reviews[:2000], progress=False)
    assert wait_until(lambda: stored_count(settings.database_url) == 2000, 120, on_poll=supervisor.assert_alive), (
        supervisor.tail()
    )
    assert wait_until(lambda: read_metric(port, "sentiment_reviews_scored_total") == 2000, 15), (
        read_metric(port, "sentiment_reviews_scored_total"),
        supervisor.tail(),
    )
    assert read_metric(port, "sentiment_db_rows_written_total") == 2000
    log = supervisor.log.read_text()
    for name in ("worker-0", "worker-1"):
        assert re.search(rf"^\[{name}\] .*partitions assigned: {settings.topic_reviews} \d", log, re.M), log[-4000:]
    unnamed = [line for line in log.splitlines() if line.strip() and not line.startswith("[")]
    assert not unnamed, "lines without their process:\n" + "\n".join(unnamed[:10])

    # kill -9 one child in the middle of a backlog: it is restarted, and nothing is lost or stored twice
    produce_reviews(settings, reviews[2000:], progress=False)
    send_bad(settings)
    assert wait_until(lambda: stored_count(settings.database_url) >= 2300, 120, on_poll=supervisor.assert_alive)
    victim = child_pids(supervisor.log.read_text(), "worker-1")[-1]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(child_pids(supervisor.log.read_text(), "worker-1")) == 2, 30), supervisor.tail()
    log = supervisor.log.read_text()
    assert f"worker-1 (pid {victim}) killed by signal 9; restarting" in log, log[-4000:]
    check_acceptance("--processes 2, a child killed", settings, reviews, supervisor)
    # the killed child's counts stay in the total (its metric files outlive it); missing can only be what it stored
    # in the instant between its commit and its count: the batches it had in flight (two at most)
    in_flight = 2 * settings.batch_size
    written = lambda: read_metric(port, "sentiment_db_rows_written_total")  # noqa: E731
    assert wait_until(lambda: written() >= len(reviews) - in_flight, 15), written()
    assert written() <= len(reviews)
    # what the killed child scored and had not committed was scored again: the counter counts each scoring
    assert read_metric(port, "sentiment_reviews_scored_total") >= len(reviews)
    assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60), probe(port, "/readyz")

    # SIGTERM: every process stops within 10 s, and the exit code says it went cleanly
    pids = (
        child_pids(supervisor.log.read_text(), "worker-0")[-1:]
        + child_pids(supervisor.log.read_text(), "worker-1")[-1:]
    )
    started = time.monotonic()
    code = supervisor.stop(timeout=30)
    took = time.monotonic() - started
    print(f"\n--processes 2: SIGTERM -> exit code {code} after {took:.1f} s")
    assert took < 10, supervisor.tail()
    assert code == 0, supervisor.tail()
    assert not [pid for pid in pids if running(pid)]
