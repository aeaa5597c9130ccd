"""`sentiment demo`: the whole product on one machine, end to end.

Starts a Tansu broker and a throwaway PostgreSQL cluster (SQLite when no PostgreSQL server is
installed), migrates the database, starts a real worker process, streams reviews, waits until
every one is scored, and prints a summary read back from Kafka and SQL.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from core.settings import Settings
from model.samples import SAMPLE_REVIEWS
from sentiment.local import (
    LocalBroker,
    LocalPostgres,
    ServiceError,
    free_port,
    read_metric,
    scratch_dir,
)
from stream.ingest.topics import create_topics
from stream.sql.queries import scored_count, scored_reviews, top_and_bottom_movies
from training.datasets import ReviewRow, read_records, read_reviews, shared_data_dir

SAMPLE = SAMPLE_REVIEWS


def pick_reviews(file: Path | None, count: int) -> tuple[list[ReviewRow], str]:
    """Reviews to stream: the user's file, else whole films of imdb_test up to ``count``, else our sample."""
    if file is not None:
        rows = list(itertools.islice(read_records(file), count))  # unreadable rows are reported when produced
        return rows, str(file)
    data = shared_data_dir()
    if data is None:
        return list(read_reviews(SAMPLE)), f"{SAMPLE.name} (the project's own sample; no IMDB data found)"
    by_film: dict[str, list[ReviewRow]] = defaultdict(list)
    for row in read_reviews(data / "imdb_test.csv.gz"):
        by_film[row.movie_id].append(row)
    films = sorted(by_film)
    random.Random(7).shuffle(films)
    rows: list[ReviewRow] = []
    for film in films:  # whole films, so that per-film aggregates mean something
        rows.extend(by_film[film])
        if len(rows) >= count:
            break
    random.Random(7).shuffle(rows)
    return rows[:count], str(data / "imdb_test.csv.gz")


def start_database(workdir: Path) -> tuple[str, LocalPostgres | None]:
    try:
        LocalPostgres.bin_dir()
    except ServiceError as exc:
        print(f"  no PostgreSQL server found ({exc}); using SQLite instead")
        return f"sqlite:///{workdir / 'sentiment.db'}", None
    pg = LocalPostgres(workdir / "postgres").start()
    return pg.url, pg


def metric_or_nan(port: int, name: str) -> float:
    value = read_metric(port, name)
    return float("nan") if value is None else value


def drift_line(port: int) -> str:
    """PSI and KS as the worker exports them, or why they are not exported yet."""
    psi = metric_or_nan(port, "sentiment_score_psi")
    if psi != psi:
        window = metric_or_nan(port, "sentiment_drift_window_scores")
        needed = metric_or_nan(port, "sentiment_drift_min_scores")
        return f"drift: not measured yet ({window:,.0f} of the {needed:,.0f} scores it needs)"
    return (
        f"drift verdict {metric_or_nan(port, 'sentiment_drift_verdict'):.2f} (alert above 1; unknown n-grams "
        f"{metric_or_nan(port, 'sentiment_input_oov_shift'):+.3f}, log length "
        f"{metric_or_nan(port, 'sentiment_input_length_shift'):+.2f}); scores: PSI {psi:.3f}, "
        f"KS {metric_or_nan(port, 'sentiment_score_ks'):.3f}"
    )


def accuracy_line(port: int) -> str:
    """Live accuracy on the rated reviews as the worker exports it, or why it does not yet."""
    reviews = metric_or_nan(port, "sentiment_accuracy_window_reviews")
    accuracy = metric_or_nan(port, "sentiment_accuracy")
    if accuracy != accuracy:
        if not reviews or reviews != reviews:
            return "live accuracy: no rated reviews (a rating of 1-4 or 7-10)"
        needed = metric_or_nan(port, "sentiment_accuracy_min_reviews")
        return f"live accuracy: not measured yet ({reviews:,.0f} of the {needed:,.0f} rated reviews it needs)"
    return (
        f"live accuracy {100 * accuracy:.1f}% on the last {reviews:,.0f} rated reviews (alert floor "
        f"{100 * metric_or_nan(port, 'sentiment_accuracy_floor'):.1f}%), calibration error "
        f"{metric_or_nan(port, 'sentiment_calibration_error'):.3f}"
    )


def wait_for_metric(port: int, name: str, at_least: float, worker, timeout: float = 60) -> float:
    """Wait until the worker's metric reaches ``at_least``: its metrics are updated after the batch is stored."""
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = read_metric(port, name) or 0.0
        if value >= at_least or worker.poll() is not None:
            return value
        time.sleep(0.1)
    return value


def shift_reviews(count: int) -> list[ReviewRow]:
    """Amazon electronics and kitchen reviews: another domain, to show drift."""
    data = shared_data_dir()
    if data is None or not (data / "shift_amazon_mds.csv.gz").exists():
        raise FileNotFoundError("--shift needs shift_amazon_mds.csv.gz in the shared data folder")
    rows = [
        r
        for r in read_reviews(data / "shift_amazon_mds.csv.gz")
        if r.review_id.startswith(("mds_electronics", "mds_kitchen"))
    ]
    random.Random(7).shuffle(rows)
    return [ReviewRow(r.review_id, "amazon-" + r.review_id.split("_")[1], r.text, r.label) for r in rows[:count]]


SHIFT_READING_EVERY = 100  # shifted reviews between two readings of the drift signals


def stream_shift(settings: Settings, port: int, already: int, worker, log: Path) -> None:
    """Stream Amazon reviews after the movie reviews, ``SHIFT_READING_EVERY`` at a time, and read the drift signals
    once each group is scored: the crossing point printed is where a reading first saw it, to within one group."""
    from sentiment.producing import produce_reviews

    shifted = shift_reviews(4000)
    print(f"\nDrift: streaming {len(shifted):,} Amazon electronics and kitchen reviews after the movie reviews,")
    print(f"  {SHIFT_READING_EVERY} at a time, reading the drift signals after each {SHIFT_READING_EVERY}")
    print(f"  before: {drift_line(port)}")
    crossed = {"the input drift verdict": None, f"PSI (alert above {settings.psi_threshold})": None}
    sent = 0
    for start in range(0, len(shifted), SHIFT_READING_EVERY):
        group = shifted[start : start + SHIFT_READING_EVERY]
        sent += produce_reviews(settings, group, progress=False).sent
        wait_for_metric(port, "sentiment_reviews_scored_total", already + sent, worker)
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}; see {log}")
        readings = (metric_or_nan(port, "sentiment_drift_verdict"), metric_or_nan(port, "sentiment_score_psi"))
        for (what, at), value, threshold in zip(list(crossed.items()), readings, (1.0, settings.psi_threshold)):
            if at is None and value > threshold:
                crossed[what] = sent
                print(f"  {sent:>5,} shifted reviews scored: {what} crossed its alert threshold ({value:.2f})")
        if sent % 1000 == 0 or start + SHIFT_READING_EVERY >= len(shifted):
            print(f"  {sent:>5,} shifted reviews scored: {drift_line(port)}")
    for what, at in crossed.items():
        if at is None:
            print(f"  {what} stayed below its alert threshold over {sent:,} shifted reviews")
        else:
            print(
                f"  {what}: first reading above its threshold after {at:,} shifted reviews (read every {SHIFT_READING_EVERY})"
            )


def stay_up(seconds: float | None, web_port: int, worker, log: Path) -> None:
    """Keep the worker and its page up: until Ctrl-C, or for ``seconds`` (0: not at all)."""
    if seconds == 0:
        return
    until = "Ctrl-C stops it" if seconds is None else f"for {seconds:,.0f} s (Ctrl-C stops it sooner)"
    print(f"\nThe worker and its page stay up {until}: http://127.0.0.1:{web_port}/")
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}; see {log}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("  stopping")


def run_demo(
    file: Path | None = None, count: int = 3000, keep: bool = False, shift: bool = False, seconds: float | None = None
) -> int:
    from sentiment.producing import message_of, produce_reviews
    from stream.sql.db import make_engine, upgrade

    rows, source = pick_reviews(file, count)  # before the scratch folder: a bad --file leaves nothing behind
    limits = Settings()  # the worker's limits, from the same environment
    valid = [r for r in rows if isinstance(r, ReviewRow) and message_of(r, limits)[2] is None]
    if not valid:
        raise ValueError(f"{source} holds no valid review (each needs review_id, movie_id and a text)")
    expected = len({r.review_id for r in valid})
    workdir = scratch_dir("sentiment-demo-")
    print(f"sentiment demo: {len(rows):,} reviews from {source}; scratch folder {workdir}")
    broker = LocalBroker(workdir)
    pg = worker = None
    try:
        print("  starting Tansu broker ...")
        broker.start()
        print("  starting database ...")
        database_url, pg = start_database(workdir)
        upgrade(database_url)
        settings = Settings(
            broker=broker.url,
            database_url=database_url,
            session_timeout=3.0,  # Tansu holds a JoinGroup for half the session timeout
            heartbeat_interval=0.5,
        )
        create_topics(
            broker.bootstrap,
            [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq],
            settings.topic_partitions,
        )
        metrics_port, web_port = free_port(), free_port()
        env = {
            **os.environ,
            "SENTIMENT_METRICS_PORT": str(metrics_port),
            "SENTIMENT_METRICS_HOST": "127.0.0.1",
            "SENTIMENT_WEB_PORT": str(web_port),
            "SENTIMENT_BROKER": broker.url,
            "SENTIMENT_DATABASE_URL": database_url,
            "SENTIMENT_SESSION_TIMEOUT": "3",
            "SENTIMENT_HEARTBEAT_INTERVAL": "0.5",
            "SENTIMENT_LOG_LEVEL": "warn",
        }
        print(f"  starting worker (model {settings.model}); its page will be at http://127.0.0.1:{web_port}/")
        with open(workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "sentiment", "worker"],
                env=env,
                cwd=workdir,  # Faust keeps an "<app id>-data" folder in its working directory
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = time.perf_counter()

        def report_skip(line, reason):
            print(f"  {source}:{line}: skipped: {reason}")

        report = produce_reviews(settings, rows, total=len(rows), progress=sys.stderr.isatty(), on_skip=report_skip)
        produced = time.perf_counter()
        engine = make_engine(database_url)
        stored = wait_for_rows(engine, expected, worker, workdir / "worker.log")
        finished = time.perf_counter()
        # the worker updates its metrics right after storing a batch: wait for them, not for a race
        wait_for_metric(metrics_port, "sentiment_reviews_scored_total", report.sent, worker)
        live_drift, live_accuracy = drift_line(metrics_port), accuracy_line(metrics_port)
        print_summary(engine, valid, stored, started, produced, finished)
        if report.skipped:
            print(f"  {report.summary()}")
        print(f"  {live_drift} (read from the worker's /metrics while it ran)")
        print(f"  {live_accuracy}")
        if shift:
            stream_shift(settings, metrics_port, stored, worker, workdir / "worker.log")
        engine.dispose()
        stay_up(seconds, web_port, worker, workdir / "worker.log")
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        if pg is not None:
            pg.stop()
        broker.stop()
        if keep:
            print(f"  logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def wait_for_rows(engine, expected: int, worker: subprocess.Popen, log: Path, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the worker exited with code {worker.returncode}:\n{tail}")
        stored = scored_count(engine)
        if stored >= expected:
            return stored
        time.sleep(0.25)
    raise RuntimeError(f"only {stored} of {expected} reviews were scored within {timeout:.0f} s; see {log}")


def _snippet(text: str, width: int = 70) -> str:
    flat = " ".join(text.replace("<br />", " ").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_summary(engine, rows: list[ReviewRow], stored, started, produced, finished) -> None:
    (first, last), scored = scored_reviews(engine)
    top, bottom = top_and_bottom_movies(engine, limit=5, min_reviews=3 if len(rows) >= 300 else 1)
    bottom = [film for film in bottom if film not in top]  # with few films the two lists would share some
    by_id = {r.review_id: r for r in rows}
    positive = sum(1 for _, _, label, _ in scored if label == "positive")
    total = finished - started
    print()
    print(
        f"Scored {stored:,} reviews with model {scored[0][3]}: {positive:,} positive, {stored - positive:,} negative."
    )
    labelled = [
        (by_id[rid].label, label) for rid, _, label, _ in scored if rid in by_id and by_id[rid].label is not None
    ]
    if labelled:
        agree = sum((truth == 1) == (label == "positive") for truth, label in labelled)
        print(
            f"  the model agrees with the reviewers' own labels on {agree:,} of {len(labelled):,} ({agree / len(labelled):.1%})"
        )
    print(
        f"  sent in {produced - started:.1f} s; every score stored {total:.1f} s after the worker was started "
        "(its start, model load and group join included: this is the demo's pace, not the scorer's speed)"
    )
    if first is not None and last is not None and last != first:
        # SQLite hands raw SQL timestamps back as text, PostgreSQL as datetimes
        first, last = (datetime.fromisoformat(str(v)) for v in (first, last))
        span = (last - first).total_seconds()
        if span > 0:
            print(
                f"  the worker stored {stored:,} scores in {span:.1f} s from its first to its last: "
                f"{stored / span:,.0f} reviews/s (bench/performance.py measures its real ceiling)"
            )
    ranked = sorted(scored, key=lambda r: r[1])
    picks = {"most negative": ranked[0], "most positive": ranked[-1]}
    picks["least sure"] = min(scored, key=lambda r: abs(r[1] - 0.5))
    print("  sample scores:")
    for what, (review_id, score, label, _) in picks.items():
        row = by_id.get(review_id)
        said = "" if row is None or row.label is None else f" (reviewer: {'positive' if row.label else 'negative'})"
        print(f"    {what:<13} {score:.3f} {label}{said}: {_snippet(row.text) if row else review_id}")
    titles = {r.movie_id: r.title for r in rows if r.title}
    min_reviews = 3 if len(rows) >= 300 else 1

    def name(film: dict) -> str:
        return f"{film['movie_id']} {titles[film['movie_id']]}" if film["movie_id"] in titles else film["movie_id"]

    width = max((len(name(f)) for f in top + bottom), default=0)
    for heading, films in (("Top films by mean sentiment", top), ("Bottom films by mean sentiment", bottom)):
        print(f"  {heading} ({min_reviews}+ reviews; SELECT ... FROM movie_sentiment ORDER BY mean_score):")
        for f in films:
            print(
                f"    {name(f):<{width}}  reviews {f['review_count']:>3}  positive {f['positive_count']:>3}  "
                f"mean {f['mean_score']:.3f}  rating {f['rating']:.1f}/10"
            )
