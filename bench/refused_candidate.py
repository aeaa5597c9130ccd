"""A worker's memory and the stream's latency before, during and after a candidate version it refuses.

    .venv/bin/python bench/refused_candidate.py [--rate 500] [--phase 20]

Starts a Tansu broker and a PostgreSQL cluster, puts the default model and a candidate below the canary floor (the
default's output flipped, added with a floor of 0 by its adder) in the model store, and starts one `sentiment
worker` whose cache holds only the default's compiled tables: to check the candidate it must build its tables from
the weights, in a child process, as for any version it has not seen. Streams `imdb_test` reviews at ``--rate`` per
second: ``--phase`` seconds before, then `sentiment model promote CANDIDATE` (refused: exit 1, live put back), then
``--phase`` seconds after. Prints the worker's resident memory (VmRSS, sampled every 0.25 s) and the latency from a
review's message timestamp to its scoring (p50, p99) in each phase, and their ratios to before.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
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
settings = Settings(database_url=sys.argv[1], cache_dir=Path(sys.argv[3]), canary_min_accuracy=0.0)
models.add(settings, settings.model)
print("CANDIDATE", models.add(settings, variant(Path(sys.argv[2]) / "flipped", flip=True)))
"""


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """The worker's VmRSS every 0.25 s, with the time."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self.running = pid, [], True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            self.samples.append((time.time(), rss_mb(self.pid)))
            time.sleep(0.25)

    def between(self, start: float, end: float) -> np.ndarray:
        return np.array([mb for at, mb in self.samples if start <= at < end])


def start_worker(settings: Settings, port: int, cache: Path, workdir: Path) -> subprocess.Popen:
    log = open(workdir / "worker.log", "ab")  # noqa: SIM115
    env = worker_env(settings, port) | {"SENTIMENT_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "sentiment", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=workdir)  # fmt: skip


def read_events(settings: Settings, count: int) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False)
    partitions = [TopicPartition(settings.topic_sentiments, p) for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    events: list[dict] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(events) < count:
        for records in consumer.poll(timeout_ms=500).values():
            events += [json.loads(r.value) for r in records]
    consumer.close()
    return events


def report(phases: dict[str, tuple[float, float]], sampler: Sampler, events: list[dict]) -> None:
    scored = np.array([seconds(e["scored_at"]) for e in events])
    latency = (scored - np.array([seconds(e["event_time"]) for e in events])) * 1000
    base = {}
    for name, (start, end) in phases.items():
        rss = sampler.between(start, end)
        mask = (scored >= start) & (scored < end)
        p50, p99 = np.percentile(latency[mask], [50, 99]) if mask.any() else (float("nan"),) * 2
        figures = {"rss_mean": rss.mean(), "rss_peak": rss.max(), "p99": p99}
        base = base or figures
        ratios = ", ".join(f"{k} {v / base[k]:.2f}x" for k, v in figures.items())
        print(f"{name:<7} {end - start:5.1f} s  RSS mean {rss.mean():6.0f} MB, peak {rss.max():6.0f} MB  latency p50 "
              f"{p50:5.0f} ms, p99 {p99:5.0f} ms ({mask.sum():,} reviews)  vs before: {ratios}")  # fmt: skip


def run_phases(args, data: Path, settings: Settings, engine, worker, candidate: str, default: str) -> None:
    """Stream, promote the candidate after one phase, stream another phase; print the figures of each."""
    reviews = list(read_reviews(data / "imdb_test.csv.gz"))
    rows = random.Random(3).sample(reviews, min(len(reviews), int(args.rate * (2 * args.phase + 120))))
    stop = threading.Event()
    sent = [0]

    def paced():
        started = time.monotonic()
        for i, row in enumerate(rows):
            if stop.is_set():
                return
            sent[0] += 1
            if i % 50 == 0:
                time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            yield row

    sender = threading.Thread(target=lambda: produce_reviews(settings, paced(), progress=False), daemon=True)
    sampler = Sampler(worker.pid)
    began = time.time()
    sender.start()
    time.sleep(args.phase)
    asked = time.time()
    said = io.StringIO()
    code = models.promote(settings, candidate, offline=False, wait=300, out=said)
    refused = time.time()
    print(f"promote {candidate}: exit {code} after {refused - asked:.1f} s; live is "
          f"{model_store.wanted(engine).live_version} (default {default})", flush=True)  # fmt: skip
    time.sleep(args.phase)
    ended = time.time()
    stop.set()
    sender.join(60)
    time.sleep(3)
    sampler.running = False
    events = read_events(settings, sent[0])
    report({"before": (began + 2, asked), "during": (asked, refused), "after": (refused, ended)}, sampler, events)
    versions = {e["model_version"] for e in events}
    print(f"versions in the {len(events):,} events: {sorted(versions)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--phase", type=float, default=20)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    workdir = scratch_dir("sentiment-bench-refused-")
    broker, pg = LocalBroker(workdir).start(), LocalPostgres(workdir / "pg").start()
    worker = None
    try:
        upgrade(pg.url)
        settings = Settings(broker=broker.url, database_url=pg.url, topic_reviews="bench-reviews",
                            topic_sentiments="bench-sentiments", topic_dlq="bench-dlq")  # fmt: skip
        create_topics(broker.bootstrap, ["bench-reviews", "bench-sentiments", "bench-dlq"], 4)
        print("adding the default model and a below-floor candidate (a child process, with TensorFlow) ...", flush=True)
        add_cache = workdir / "add-cache"
        done = subprocess.run(
            [sys.executable, "-c", PREPARE, pg.url, str(workdir / "variants"), str(add_cache)],
            check=True,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        candidate = done.stdout.strip().splitlines()[-1].split()[1]
        engine = make_engine(pg.url)
        default = model_store.wanted(engine).live_version
        cache = workdir / "worker-cache"  # the default's tables only: the candidate's are built by the worker
        cache.mkdir()
        for table in add_cache.glob(f"fast-{default}-*.npz"):
            shutil.copy(table, cache / table.name)
        port = free_port()
        worker = start_worker(settings, port, cache, workdir)
        while not any(w.live == default for w in model_store.running_workers(engine)) or (
            read_metric(port, "sentiment_ready") or 0) < 1:  # fmt: skip
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited: see {workdir}/worker.log")
            time.sleep(0.5)
        run_phases(args, data, settings, engine, worker, candidate, default)
        engine.dispose()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        pg.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
