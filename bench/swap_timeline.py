"""Two workers, a fast stream, two promotes and a rollback: nothing lost, nothing duplicated, versions as promoted.

    .venv/bin/python bench/swap_timeline.py [--reviews 20000] [--rate 2000]

Starts a Tansu broker and a PostgreSQL cluster, puts the default model and two variants of it (last bias moved by
+0.05 and -0.05) in the model store, starts two `sentiment worker` processes in one group, streams ``--reviews`` real
`imdb_test` reviews at ``--rate`` per second, and meanwhile promotes variant A, then variant B, then rolls back (to
A), each time waiting until both workers confirm. Then it reads every `sentiments` event and `review_scores` row and
prints: lost and duplicated reviews, whether any event was scored by a version after both workers had confirmed
the next one, whether a batch holds two versions, the swap pause each worker measured, and the latency from a
review's message timestamp to its scoring (p50/p99) within 2 s of a swap and elsewhere.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.worker_throughput import worker_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from sentiment import models  # noqa: E402
from sentiment.local import LocalBroker, LocalPostgres, free_port, read_metric, scratch_dir  # noqa: E402
from sentiment.producing import produce_reviews  # noqa: E402
from stream.ingest.topics import create_topics  # noqa: E402
from stream.lifecycle import model_store  # noqa: E402
from stream.sql.db import make_engine, upgrade  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402

PREPARE = """
import sys
from pathlib import Path
from core.settings import Settings
from sentiment import models
from tests.model_variants import variant
settings = Settings(database_url=sys.argv[1])
added = [models.add(settings, variant(Path(sys.argv[2]) / name, bias_shift=shift)) for name, shift in (("a", 0.05), ("b", -0.05))]
print("VERSIONS", *added)
"""


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = random.Random(3).sample(list(read_reviews(data / "imdb_test.csv.gz")), args.reviews)
    workdir = scratch_dir("sentiment-bench-timeline-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    workers: list[subprocess.Popen] = []
    try:
        upgrade(pg.url)
        settings = Settings(
            broker=broker.url, database_url=pg.url, topic_reviews="bench-reviews",
            topic_sentiments="bench-sentiments", topic_dlq="bench-dlq",
        )  # fmt: skip
        create_topics(broker.bootstrap, ["bench-reviews", "bench-sentiments", "bench-dlq"], 4)
        print("adding the default model and two variants to the store (a child process, with TensorFlow) ...")
        done = subprocess.run(
            [sys.executable, "-c", PREPARE, pg.url, str(workdir / "variants")],
            check=True, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        )  # fmt: skip
        version_a, version_b = done.stdout.strip().splitlines()[-1].split()[1:]
        engine = make_engine(pg.url)
        default = model_store.wanted(engine).live_version
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            log = open(workdir / f"worker-{i}.log", "ab")  # noqa: SIM115
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sentiment", "worker"],
                    env=worker_env(settings, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                )  # fmt: skip
            )
        while sum(w.live == default for w in model_store.running_workers(engine)) < 2 or any(
            (read_metric(p, "sentiment_ready") or 0) < 1 for p in ports
        ):
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"a worker exited: see {workdir}")
            time.sleep(0.5)

        def paced():  # one producer for the whole stream, fed at the rate
            started = time.monotonic()
            for i, row in enumerate(rows):
                if i % 100 == 0:
                    time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
                yield row

        def stream() -> None:
            produce_reviews(settings, paced(), progress=False)

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        began = time.time()
        steps = []  # (what, version, asked at, both confirmed at)
        duration = len(rows) / args.rate
        for at, what, version in ((0.2, "promote", version_a), (0.45, "promote", version_b), (0.7, "rollback", None)):
            time.sleep(max(0.0, began + at * duration - time.time()))
            asked = time.time()
            said = io.StringIO()
            if what == "promote":
                models.promote(settings, version, offline=False, wait=20, out=said)
            else:
                models.rollback(settings, offline=False, wait=20, out=said)
                version = version_a
            steps.append((what, version, asked, time.time()))
            print(f"{what} {version}: both workers confirmed after {steps[-1][3] - asked:.1f} s", flush=True)
        sender.join(600)

        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False)
        partitions = [TopicPartition("bench-sentiments", p) for p in range(4)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        events: list[dict] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len({e["review_id"] for e in events}) < len(rows):
            for records in consumer.poll(timeout_ms=500).values():
                events += [json.loads(r.value) | {"partition": r.partition} for r in records]
        consumer.close()
        from sqlalchemy import text

        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*), count(DISTINCT review_id) FROM review_scores")).one()
        ids = {e["review_id"] for e in events}
        lost = len({r.review_id for r in rows} - ids)
        print(
            f"{len(rows):,} reviews at {args.rate:,.0f}/s through 2 workers: {len(events):,} events, {lost} lost, "
            f"{len(events) - len(ids)} duplicated on the topic; {stored[0]:,} rows in SQL ({stored[0] - stored[1]} "
            "duplicated)"
        )
        batches: dict[str, set[str]] = defaultdict(set)
        for e in events:
            batches[e["scored_at"]].add(e["model_version"])
        print(f"batches holding two versions: {sum(len(v) > 1 for v in batches.values())} of {len(batches)}")
        # after both workers confirmed step k, no event may carry a version that step k replaced
        late = 0
        timeline = [default] + [version for _, version, _, _ in steps]
        for k, (_, _, _, confirmed) in enumerate(steps):
            replaced = timeline[k]  # wrong from both workers' confirmation until it is live again, if ever
            back = [asked for j, (_, v, asked, _) in enumerate(steps) if j > k and v == replaced]
            until = back[0] if back else float("inf")
            late += sum(
                1 for e in events if e["model_version"] == replaced and confirmed < seconds(e["scored_at"]) < until
            )
        print(f"events scored by a version after both workers confirmed the next one: {late}")
        latency = np.array([seconds(e["scored_at"]) - seconds(e["event_time"]) for e in events]) * 1000
        near = np.array(
            [any(asked - 0.5 <= seconds(e["scored_at"]) <= confirmed + 2 for _, _, asked, confirmed in steps)
             for e in events]
        )  # fmt: skip
        for name, mask in (("within a swap (asked - 0.5 s to confirmed + 2 s)", near), ("elsewhere", ~near)):
            if mask.any():
                p50, p99 = np.percentile(latency[mask], [50, 99])
                print(f"latency to scoring, {name}: p50 {p50:.0f} ms, p99 {p99:.0f} ms ({mask.sum():,} reviews)")
        for i, port in enumerate(ports):
            total = read_metric(port, "sentiment_model_swap_pause_seconds_sum") or 0.0
            count = read_metric(port, "sentiment_model_swap_pause_seconds_count") or 0.0
            print(f"worker {i}: {count:.0f} swaps, mean pause {total / max(count, 1) * 1000:.2f} ms")
        engine.dispose()
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        pg.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
