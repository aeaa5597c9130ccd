"""A real worker through 10 live swaps while reviews stream in, and its throughput with and without a shadow.

    .venv/bin/python bench/worker_swaps.py [--swaps 10] [--rate 200] [--backlog 5000] [--json runs/worker_swaps.json]

Starts a Tansu broker and a PostgreSQL cluster, adds the default model and a variant of it (last bias moved) to the
model store, starts `sentiment worker`, streams real `imdb_test` reviews at ``--rate`` per second, and promotes the
other version ``--swaps`` times (each promote waits for the worker to confirm). After each swap it reads the
worker's resident memory (`/proc/PID/status`: VmRSS now, VmHWM reset before the swap for its peak) against the
single-model figure (after the first reviews, before any swap), the time from promote to confirmation, and the
swap pause the worker measured. Then it drains a backlog of ``--backlog`` reviews twice, without and with a shadow
version, alternated twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.worker_throughput import worker_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from sentiment import models  # noqa: E402
from sentiment.local import LocalBroker, LocalPostgres, free_port, read_metric, scratch_dir  # noqa: E402
from sentiment.producing import produce_reviews  # noqa: E402
from stream.ingest.topics import create_topics  # noqa: E402
from stream.sql.db import upgrade  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402


def memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200, help="reviews per second streamed during the swaps")
    parser.add_argument("--backlog", type=int, default=5_000, help="reviews drained with and without a shadow")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(rows)
    workdir = scratch_dir("sentiment-bench-swaps-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    worker = None
    try:
        upgrade(pg.url)
        settings = Settings(
            broker=broker.url, database_url=pg.url, topic_reviews="bench-reviews",
            topic_sentiments="bench-sentiments", topic_dlq="bench-dlq",
        )  # fmt: skip
        create_topics(broker.bootstrap, ["bench-reviews", "bench-sentiments", "bench-dlq"], 4)
        print("adding the default model and a variant to the store (a child process, with TensorFlow) ...", flush=True)
        subprocess.run(
            [sys.executable, "-c", PREPARE, pg.url, str(workdir / "variant")],
            check=True, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
        )  # fmt: skip
        port = free_port()
        log = open(workdir / "worker.log", "ab")  # noqa: SIM115
        env = worker_env(settings, port) | {"SENTIMENT_LOG_LEVEL": "info"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
        streamed = rows[:20_000]
        stop = threading.Event()

        def stream() -> None:
            for start in range(0, len(streamed), 100):
                if stop.is_set():
                    return
                began = time.monotonic()
                produce_reviews(settings, streamed[start : start + 100], progress=False)
                time.sleep(max(0.0, 100 / args.rate - (time.monotonic() - began)))

        while (read_metric(port, "sentiment_ready") or 0) < 1:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited: see {workdir / 'worker.log'}")
            time.sleep(0.5)
        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        time.sleep(10)
        first, _ = memory_mb(worker.pid)
        time.sleep(40)  # the control: how much a worker grows on one model over as long as the swaps take
        single, _ = memory_mb(worker.pid)
        print(
            f"worker streaming {args.rate:.0f} reviews/s on one model: RSS {first:.0f} MB after 10 s, {single:.0f} MB "
            "after 50 s (the single-model figure)",
            flush=True,
        )
        from stream.lifecycle import model_store
        from stream.sql.db import make_engine

        engine = make_engine(pg.url)
        versions = [v.version for v in model_store.versions(engine)]
        live = model_store.wanted(engine).live_version
        curve = []
        for swap in range(1, args.swaps + 1):
            target = next(v for v in versions if v != live)
            pauses_before = read_metric(port, "sentiment_model_swap_pause_seconds_sum") or 0.0
            reset_peak(worker.pid)
            started = time.monotonic()
            models.promote(settings, target, offline=False, wait=30, out=io.StringIO())
            confirmed = time.monotonic() - started
            live = target
            time.sleep(3)
            rss, peak = memory_mb(worker.pid)
            pause = (read_metric(port, "sentiment_model_swap_pause_seconds_sum") or 0.0) - pauses_before
            curve.append({"swap": swap, "confirmed_s": round(confirmed, 2), "pause_ms": round(pause * 1000, 3),
                          "peak_mb": round(peak, 1), "rss_mb": round(rss, 1)})  # fmt: skip
            print(
                f"swap {swap:2d} -> {target}: confirmed after {confirmed:.1f} s, pause {pause * 1000:.2f} ms, "
                f"peak {peak:.0f} MB ({peak / single:.2f}x), RSS 3 s later {rss:.0f} MB ({rss / single:.3f}x)",
                flush=True,
            )
        stop.set()
        sender.join(60)
        time.sleep(10)
        settled, _ = memory_mb(worker.pid)
        worst = max(c["peak_mb"] for c in curve)
        print(
            f"over {args.swaps} swaps: peak {worst:.0f} MB = {worst / single:.2f}x the single-model {single:.0f} MB; "
            f"10 s after the stream stopped {settled:.0f} MB = {settled / single:.3f}x"
        )

        rates: dict[str, list[float]] = {"without": [], "with": []}
        scoring_us: dict[str, list[float]] = {"without": [], "with": []}
        backlog = rows[20_000 : 20_000 + args.backlog]
        other = next(v for v in versions if v != live)
        for rep in range(2 if backlog else 0):
            for kind in ("without", "with"):
                models.shadow(settings, other if kind == "with" else None, out=io.StringIO())
                time.sleep(6)  # the worker loads (or drops) the shadow
                ids = [dataclasses.replace(r, review_id=f"{r.review_id}-{kind}-{rep}") for r in backlog]
                before = read_metric(port, "sentiment_reviews_scored_total") or 0
                busy_before = read_metric(port, "sentiment_batch_scoring_seconds_sum") or 0
                sending = threading.Thread(target=produce_reviews, args=(settings, ids), kwargs={"progress": False})
                sending.start()
                t10 = None
                while (n := read_metric(port, "sentiment_reviews_scored_total") or 0) < before + len(ids):
                    if t10 is None and n >= before + len(ids) // 10:
                        t10, n10 = time.monotonic(), n
                    time.sleep(0.2)
                rates[kind].append((before + len(ids) - n10) / (time.monotonic() - t10))
                sending.join()
                busy = (read_metric(port, "sentiment_batch_scoring_seconds_sum") or 0) - busy_before
                scoring_us[kind].append(busy / len(ids) * 1e6)
                print(
                    f"  {len(ids):,} reviews {kind} a shadow: {rates[kind][-1]:,.0f} reviews/s, "
                    f"{scoring_us[kind][-1]:.0f} us of batch scoring per review",
                    flush=True,
                )
        best = {k: max(v) for k, v in rates.items() if v}
        if best:
            print(
                f"worker scoring {len(backlog):,} reviews sent as fast as the producer goes (timed from 10% to 100%): "
                f"without a shadow {best['without']:,.0f} reviews/s, with one {best['with']:,.0f} "
                f"({best['with'] / best['without']:.2f}x); batch scoring per review "
                f"{min(scoring_us['without']):.0f} us without, {min(scoring_us['with']):.0f} us with"
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"single_mb": single, "curve": curve, "settled_mb": settled,
                                             "drain_reviews_per_second": rates, "scoring_us": scoring_us}, indent=2))  # fmt: skip
        engine.dispose()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        pg.stop()
        broker.stop()
    return 0


PREPARE = """
import sys
from pathlib import Path
from core.settings import Settings
from sentiment import models
from tests.model_variants import variant
settings = Settings(database_url=sys.argv[1])
models.add(settings, variant(Path(sys.argv[2]), bias_shift=0.05))
"""

if __name__ == "__main__":
    sys.exit(main())
