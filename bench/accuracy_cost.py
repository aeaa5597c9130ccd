"""What live accuracy costs: microseconds per review of its bookkeeping, and the worker's throughput with it at work
on every review against a stream where it has nothing to do.

    .venv/bin/python bench/accuracy_cost.py [--worker] [--reviews 20000] [--rounds 2]

The first part (a few seconds, no service) times, on the real ratings of `imdb_test` (every review rated, so every
review goes through the window) and random scores:
- ``LiveAccuracy.add`` alone, live only and with a shadow, at batches of 256 (the worker's) and of 1 (a trickle);
- the observer's whole step for it (``_watch_accuracy``: the bookkeeping and the Prometheus gauges it sets).

With ``--worker`` it also starts a Tansu broker and PostgreSQL and drains the same shuffled reviews with a real worker,
alternating a topic where every review carries its rating and one where none does (the bookkeeping then only looks
at each rating and finds none), ``--rounds`` times each; rates are measured from 10% to 100% of each backlog
(bench/worker_throughput.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import Settings  # noqa: E402
from schemas import Sentiment  # noqa: E402
from stream.ingest.batch import BatchResult  # noqa: E402
from stream.observe.accuracy import LiveAccuracy  # noqa: E402
from stream.observe.drift import DriftMonitor  # noqa: E402
from stream.observe.health import Health  # noqa: E402
from stream.observer import BatchObserver  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402


def per_review_us(step, batches: list, reviews: int, repeat: int = 5) -> float:
    """The best of ``repeat`` passes over ``batches``, in microseconds per review."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for batch in batches:
            step(*batch)
        best = min(best, time.perf_counter() - started)
    return best / reviews * 1e6


def bookkeeping(ratings: list[int | None]) -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=len(ratings)).tolist()
    shadow = rng.uniform(size=len(ratings))
    print(f"bookkeeping on the {len(ratings):,} ratings of imdb_test (all rated, 1-4 or 7-10), window 2,000:")
    for size in (256, 1):
        n = len(ratings) if size > 1 else 5000
        cuts = range(0, n, size)
        live = [(ratings[i : i + size], scores[i : i + size], "v1") for i in cuts]
        paired = [(*b, shadow[i : i + size], "v2") for b, i in zip(live, cuts)]
        tracker = LiveAccuracy(2000, 200)
        print(f"  LiveAccuracy.add, batch {size:>3}, live only:   {per_review_us(tracker.add, live, n):6.2f} us/review")
        tracker = LiveAccuracy(2000, 200)
        print(
            f"  LiveAccuracy.add, batch {size:>3}, with shadow: {per_review_us(tracker.add, paired, n):6.2f} us/review"
        )

        settings = Settings(accuracy_window=2000, accuracy_min_reviews=200)
        observer = BatchObserver(
            model_version="v1",
            scoring="compiled",
            drift=DriftMonitor(np.linspace(0, 1, 101), window=1000),
            inputs_drift=None,
            settings=settings,
            health=Health(),
            consumer=lambda: None,
        )
        results = []
        for rs, ss, _ in live:
            sentiments = [Sentiment(f"r{j}", "tt1", s, "x", "v1", "t", "t") for j, s in enumerate(ss)]
            results.append((BatchResult(sentiments=sentiments, ratings=rs), ss))
        took = per_review_us(observer._watch_accuracy, results, n)
        print(f"  observer step (bookkeeping + gauges), batch {size:>3}: {took:6.2f} us/review")


def worker_throughput(rows: list, rounds: int) -> None:
    from bench.worker_throughput import worker_rate
    from sentiment.local import LocalBroker, LocalPostgres, scratch_dir
    from sentiment.producing import produce_reviews
    from stream.ingest.topics import create_topics
    from stream.sql.db import upgrade

    workdir = scratch_dir("sentiment-bench-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    unrated = [dataclasses.replace(r, rating=None) for r in rows]
    rates: dict[str, list[float]] = {"rated": [], "unrated": []}
    try:
        for n in range(rounds):
            for kind, reviews in (("rated", rows), ("unrated", unrated)):
                with_tables = _fresh_database(pg.url, f"bench_{kind}_{n}")  # each drain starts on empty tables
                upgrade(with_tables)
                topic = f"bench-{kind}-{n}"
                settings = Settings(
                    broker=broker.url,
                    database_url=with_tables,
                    topic_reviews=topic,
                    topic_sentiments=f"{topic}-out",
                    topic_dlq=f"{topic}-dlq",
                )
                create_topics(broker.bootstrap, [topic, f"{topic}-out", f"{topic}-dlq"], 4)
                produce_reviews(settings, reviews, progress=False)
                rate = worker_rate(settings, len(reviews), workdir, profile=False).rate
                rates[kind].append(rate)
                print(f"  round {n + 1}, {kind:>7}: {rate:8,.0f} reviews/s", flush=True)
    finally:
        pg.stop()
        broker.stop()
    on, off = statistics.mean(rates["rated"]), statistics.mean(rates["unrated"])
    print(
        f"worker, {len(rows):,} reviews each: every review rated {on:,.0f} reviews/s, none rated {off:,.0f} "
        f"reviews/s (ratio {on / off:.3f}; runs: {', '.join(f'{r:,.0f}' for r in rates['rated'])} against "
        f"{', '.join(f'{r:,.0f}' for r in rates['unrated'])})"
    )


def _fresh_database(admin_url: str, name: str) -> str:
    from sqlalchemy import text

    from stream.sql.db import make_engine

    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="also measure a real worker's throughput (minutes)")
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(rows)
    bookkeeping([r.rating for r in rows])
    if args.worker:
        worker_throughput(rows[: args.reviews], args.rounds)


if __name__ == "__main__":
    main()
