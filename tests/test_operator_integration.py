"""The operator's first hour on real parts (Tansu, PostgreSQL, worker processes): readiness that tells the truth,
a stop within the grace period while the database or the broker is away, two workers on one host, and the
command-line tools against a real broker.
"""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from sqlalchemy import text

from sentiment.local import LocalBroker, LocalPostgres, free_port, read_metric
from sentiment.producing import produce_reviews
from stream.ingest.topics import create_topics
from stream.sql.db import make_engine, upgrade
from tests.conftest import probe, wait_until
from tests.test_commands import run

pytestmark = pytest.mark.integration

FAST_PROGRESS = {"SENTIMENT_PROGRESS_INTERVAL": "1"}


def stored_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT review_id FROM review_scores")).scalars().all()
    finally:
        engine.dispose()


def stop_timed(worker) -> tuple[int, float]:
    started = time.monotonic()
    code = worker.stop(timeout=60)
    return code, time.monotonic() - started


def test_idle_worker_is_ready_and_stops_in_time_while_the_database_is_away(
    stream_settings, start_worker, imdb_test_rows, workdir
):
    pg = LocalPostgres(workdir / f"pg-ready-{stream_settings.app_id}").start()
    try:
        upgrade(pg.url)
        settings = stream_settings.model_copy(update={"database_url": pg.url, "metrics_port": free_port()})
        port = settings.metrics_port
        worker = start_worker(settings, FAST_PROGRESS)
        # ready while idle: nothing has been produced, nothing written
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
        assert read_metric(port, "sentiment_ready") == 1.0
        assert probe(port, "/healthz") == (200, {"alive": True})
        assert wait_until(lambda: "progress:" in worker.tail(200), 15), worker.tail()
        log = worker.log.read_text()
        assert re.search(r"model [0-9a-f]{12} from ", log), log[-2000:]
        assert f"http://127.0.0.1:{port}/metrics" in log
        assert f"partitions assigned: {settings.topic_reviews}" in log

        pg.stop()
        assert wait_until(lambda: probe(port, "/readyz")[0] == 503, 15), worker.tail()
        status, body = probe(port, "/readyz")
        assert any(reason.startswith("database:") for reason in body["reasons"]), body
        assert not any("psycopg" in reason or "connection" in reason.lower() for reason in body["reasons"]), body
        assert read_metric(port, "sentiment_ready") == 0.0
        reviews = random.Random(21).sample(imdb_test_rows, 600)
        produce_reviews(settings, reviews, progress=False)
        assert wait_until(lambda: "database write failed" in worker.tail(200), 30), worker.tail()

        code, took = stop_timed(worker)
        print(f"\nSIGTERM while the database is away: exit code {code} after {took:.1f} s")
        assert took < settings.shutdown_grace + 2, worker.tail(80)

        pg.restart()
        worker = start_worker(settings)
        expected = {r.review_id for r in reviews}
        assert wait_until(lambda: set(stored_ids(pg.url)) >= expected, 120, on_poll=worker.assert_alive), worker.tail()
        ids = stored_ids(pg.url)
        assert len(ids) == len(set(ids)) == len(expected)  # nothing acked unstored, nothing stored twice
    finally:
        pg.stop()


def test_not_ready_and_stops_in_time_while_the_broker_is_away(stream_settings, start_worker, workdir):
    own = LocalBroker(workdir, free_port()).start()
    try:
        settings = stream_settings.model_copy(update={"broker": own.url, "metrics_port": free_port()})
        create_topics(own.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
        worker = start_worker(settings)
        port = settings.metrics_port
        assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
        own.stop()
        assert wait_until(lambda: probe(port, "/readyz")[0] == 503, 15), worker.tail()
        assert any(reason.startswith("broker:") for reason in probe(port, "/readyz")[1]["reasons"])
        code, took = stop_timed(worker)
        print(f"\nSIGTERM while the broker is away: exit code {code} after {took:.1f} s")
        # within the grace itself: its deadline starts when the signal arrives (it took 10.1-11.8 s before)
        assert took < settings.shutdown_grace, worker.tail(80)
        assert re.search(r"SIGTERM: stopping \(at most 10 s\)", worker.tail(100))
    finally:
        own.stop()


def test_two_workers_on_one_host(stream_settings, start_worker):
    settings = stream_settings.model_copy(update={"metrics_port": free_port()})
    first = start_worker(settings)
    assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 200, 60, on_poll=first.assert_alive)

    clash = start_worker(settings)  # same metrics port: refused at once, in one line, before the model loads
    started = time.monotonic()
    clash.process.wait(30)
    assert clash.process.returncode == 1
    message = clash.tail()
    assert f"cannot listen on 0.0.0.0:{settings.metrics_port}" in message and "SENTIMENT_METRICS_PORT" in message
    assert "Traceback" not in message and time.monotonic() - started < 10

    second = start_worker(settings.model_copy(update={"metrics_port": free_port()}))
    assert wait_until(lambda: probe(second.settings.metrics_port, "/readyz")[0] == 200, 60, on_poll=second.assert_alive)

    def assigned(worker) -> set[int]:
        lines = [line for line in worker.log.read_text().splitlines() if "partitions assigned:" in line]
        return {int(p) for p in lines[-1].split(settings.topic_reviews, 1)[1].split(",")} if lines else set()

    # after the rebalance each holds its own share of the four partitions
    assert wait_until(lambda: assigned(first) and assigned(second) and not assigned(first) & assigned(second), 30)
    assert assigned(first) | assigned(second) == {0, 1, 2, 3}


def cli(*args, settings, stdin=None, timeout=90):
    """The real command line, with the settings of this test's topics and database (and no other SENTIMENT_*)."""
    env = {
        "SENTIMENT_BROKER": settings.broker,
        "SENTIMENT_DATABASE_URL": settings.database_url,
        "SENTIMENT_TOPIC_REVIEWS": settings.topic_reviews,
        "SENTIMENT_TOPIC_SENTIMENTS": settings.topic_sentiments,
        "SENTIMENT_TOPIC_DLQ": settings.topic_dlq,
    }
    return run(*args, env_extra=env, stdin=stdin, timeout=timeout)


def review_ids_on(topic: str, settings) -> list[str]:
    """Every review id on ``topic``, in the order read (from the beginning, until 5 s pass without one)."""
    done = cli("consume", "--from-beginning", "--timeout", "5", "--topic", topic, settings=settings)
    return [json.loads(line)["review_id"] for line in done.stdout.splitlines()]


def test_produce_skips_and_reports_then_the_worker_dead_letters_what_was_sent_anyway(
    stream_settings, start_worker, tmp_path
):
    rows = [
        {"review_id": "ok-1", "movie_id": "m1", "text": "A wonderful film.", "label": "pos"},
        {"movie_id": "m1", "text": "No id: must not become the id 'None'."},
        {"movie_id": "m1", "text": "No id either."},
        {"review_id": "no-film", "text": "No film: must not become a film called 'unknown'."},
        {"review_id": "ok-2", "movie_id": "m2", "text": "Dull and far too long.", "label": "negative"},
    ]
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")

    done = cli("produce", str(data), "--quiet", settings=stream_settings)
    assert done.returncode == 1
    assert done.stdout.startswith("sent 2, skipped 4 (no review_id: 2, no movie_id: 1, not JSON: 1)"), done.stdout
    for line in (2, 3, 4, 6):
        assert f"{data}:{line}: skipped:" in done.stderr
    listening = cli("consume", "--max", "1", "--timeout", "1", settings=stream_settings)
    assert "reading from its end" in listening.stderr  # says so instead of hanging silently
    assert sorted(review_ids_on(stream_settings.topic_reviews, stream_settings)) == ["ok-1", "ok-2"]

    # from standard input, invalid rows sent on purpose: the worker dead-letters them, consume shows why
    worker = start_worker()
    invalid = "".join(json.dumps(r) + "\n" for r in rows[1:4])
    done = cli("produce", "-", "--send-invalid", settings=stream_settings, stdin=invalid)
    assert done.returncode == 0 and done.stdout.startswith("sent 3 (of them 3 invalid"), done.stdout + done.stderr
    dead = cli(
        "consume",
        "--topic",
        stream_settings.topic_dlq,
        "--from-beginning",
        "--max",
        "3",
        "--timeout",
        "60",
        settings=stream_settings,
    )
    records = [json.loads(line) for line in dead.stdout.splitlines()]
    assert len(records) == 3, dead.stderr + worker.tail()
    assert {r["headers"]["dlq.reason"] for r in records} == {"missing_field"}
    assert all("movie_id" in r["headers"]["dlq.detail"] or "review_id" in r["headers"]["dlq.detail"] for r in records)


def test_a_file_sorted_by_label_is_flagged_and_shuffle_mixes_it(stream_settings, tmp_path):
    good = ["Loved it, a wonderful film.", "Brilliant acting and a moving story."]
    bad = ["Awful and boring.", "A waste of two hours."]
    lines = ["id,movie_id,review,label"]
    lines += [f'p{i},m{i % 5},"{good[i % 2]}",1' for i in range(30)]
    lines += [f'n{i},m{i % 5},"{bad[i % 2]}",0' for i in range(30)]
    data = tmp_path / "sorted.csv"
    data.write_text("\n".join(lines) + "\n")

    done = cli("produce", str(data), "--limit", "20", "--quiet", settings=stream_settings)
    assert done.returncode == 0 and "sorted by label and every review sent is positive" in done.stderr
    done = cli("produce", str(data), "--limit", "20", "--shuffle", "--quiet", settings=stream_settings)
    assert done.returncode == 0 and "warning" not in done.stderr
    shuffled = review_ids_on(stream_settings.topic_reviews, stream_settings)[20:]
    assert {i[0] for i in shuffled} == {"p", "n"}


def test_the_running_worker_serves_the_page_and_the_api(stream_settings, start_worker, imdb_test_rows):
    """The same API on the worker's own web port: scores, a film's aggregate from PostgreSQL with its uncertain
    count, and the live state the page charts (throughput history, histogram) once reviews flow."""
    from tests.test_web import call

    settings = stream_settings.model_copy(update={"web_port": free_port(), "metrics_port": free_port()})
    worker = start_worker(settings, {"SENTIMENT_WEB_HOST": "127.0.0.1"})
    url = f"http://127.0.0.1:{settings.web_port}"
    assert wait_until(lambda: call(url, "GET", "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), worker.tail()
    status, body, _ = call(url, "POST", "/api/score", json.dumps({"texts": ["Loved it."], "explain": True}).encode())
    assert status == 200 and body["results"][0]["label"] == "positive" and "explanation" in body["results"][0]

    film = imdb_test_rows[0].movie_id
    reviews = [r for r in imdb_test_rows if r.movie_id == film] + random.Random(31).sample(imdb_test_rows, 1200)
    reviews = list({r.review_id: r for r in reviews}.values())
    produce_reviews(settings, reviews, progress=False)
    expected = sum(r.movie_id == film for r in reviews)
    assert wait_until(lambda: (call(url, "GET", f"/api/movies/{film}")[1] or {}).get("review_count") == expected, 90)
    row = call(url, "GET", f"/api/movies/{film}")[1]
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        uncertain = conn.execute(
            text("SELECT count(*) FROM review_scores WHERE movie_id = :m AND uncertain"), {"m": film}
        ).scalar_one()
    engine.dispose()
    assert row["uncertain_count"] == uncertain
    assert call(url, "GET", "/api/movies/no-such-film")[0] == 404

    def live():
        return call(url, "GET", "/api/live")[1]

    assert wait_until(lambda: any(p["reviews_per_second"] > 0 for p in live()["history"]), 30), live()
    # the film's reviews are stored, but other partitions may still be scoring: wait for the window to fill
    assert wait_until(lambda: live()["window_scores"] == 1000, 60), live()
    state = live()
    assert state["streaming"] is True and state["ready"] is True and state["window_scores"] == 1000
    assert sum(state["histogram"]["window"]) == pytest.approx(1, abs=1e-3)
    assert wait_until(lambda: any(p["psi"] is not None for p in live()["history"]), 15)
