"""SQL sink throughput on a real PostgreSQL: the COPY path against the multi-row insert, side by side, same rows.

    .venv/bin/python bench/sql_sink.py [--rows 20000] [--batch 256] [--json runs/sql_sink.json]

Starts a throwaway PostgreSQL cluster (or uses $SENTIMENT_TEST_DATABASE_URL's server), writes the same scored
reviews (about 3,500 films, as imdb_test has) through each path into a fresh database of its own, then writes them
all again (a replay must change nothing), prints new rows/s and the ratio, and checks that both databases hold the
same rows and aggregates.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from schemas import Sentiment, utc_iso
from sentiment.local import LocalPostgres, scratch_dir
from stream.ingest.sinks import SqlSink
from stream.sql.db import make_engine, upgrade


def reviews(n: int) -> list[Sentiment]:
    rng = random.Random(0)
    now = utc_iso()
    out = []
    for i in range(n):
        score = rng.random()
        out.append(
            Sentiment(
                f"r{i}",
                f"tt{rng.randrange(3500):07d}",
                score,
                "positive" if score >= 0.5 else "negative",
                "bench",
                now,
                now,
                uncertain=abs(score - 0.5) < 0.1,
            )
        )
    return out


def database(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def run(url: str, rows: list[Sentiment], batch: int, use_copy: bool) -> tuple[float, float, int]:
    engine = make_engine(url)
    sink = SqlSink(engine, use_copy=use_copy)
    started = time.perf_counter()
    new = sum(sink.write(rows[i : i + batch]) for i in range(0, len(rows), batch))
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = sum(sink.write(rows[i : i + batch]) for i in range(0, len(rows), batch))
    replay = time.perf_counter() - started
    engine.dispose()
    assert new == len(rows) and again == 0, (new, again)
    return len(rows) / first, len(rows) / replay, new


def tables(url: str) -> tuple[list, list]:
    engine = make_engine(url)
    with engine.connect() as conn:
        scores = conn.execute(
            text("SELECT review_id, movie_id, score, label, uncertain FROM review_scores ORDER BY 1")
        ).all()
        films = conn.execute(
            text(
                "SELECT movie_id, review_count, positive_count, uncertain_count, round(score_sum::numeric, 9) "
                "FROM movie_sentiment ORDER BY 1"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in scores], [tuple(r) for r in films]


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    server = os.environ.get("SENTIMENT_TEST_DATABASE_URL")
    pg = None
    if server is None:
        pg = LocalPostgres(scratch_dir("sentiment-bench-") / "pg").start()
        server = pg.url
    try:
        rows = reviews(args.rows)
        results = {}
        urls = {}
        for name, use_copy in (("insert", False), ("copy", True), ("insert again", False), ("copy again", True)):
            urls[name] = database(server)
            results[name] = run(urls[name], rows, args.batch, use_copy)
        assert tables(urls["insert"]) == tables(urls["copy"]), "the two paths stored different rows"
        print(f"{args.rows:,} reviews in batches of {args.batch}, PostgreSQL, same run:")
        print(f"{'path':<14} {'new rows/s':>12} {'replay rows/s':>14}")
        for name, (first, replay, _) in results.items():
            print(f"{name:<14} {first:>12,.0f} {replay:>14,.0f}")
        copy = (results["copy"][0] + results["copy again"][0]) / 2
        insert = (results["insert"][0] + results["insert again"][0]) / 2
        print(f"copy / insert: {copy / insert:.2f}x (mean of two runs each); both paths stored the same rows")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"results": results, "ratio": copy / insert}, indent=2))
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
