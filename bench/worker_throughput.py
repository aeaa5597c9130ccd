"""Worker throughput against Faust's own speed limit, side by side on one broker, in one run.

    .venv/bin/python bench/worker_throughput.py [--reviews 20000] [--profile] [--json runs/worker_throughput.json]

Starts a Tansu broker and a PostgreSQL cluster, preloads the same real reviews into two topics, then drains one
with `sentiment worker` and the other with a Faust agent that only takes and acks micro-batches of the same size
(bench/noop_agent.py). Rates are measured from 10% to 100% of the backlog, so start-up and group joins do not count.
With --profile, py-spy samples the worker at Python level (not --native) and the top functions by own time are
printed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings
from sentiment.local import LocalBroker, LocalPostgres, free_port, read_metric, scratch_dir
from sentiment.producing import produce_reviews
from stream.ingest.topics import create_topics
from stream.sql.db import upgrade
from training.datasets import read_reviews, shared_data_dir

HERE = Path(__file__).resolve().parent


def worker_env(settings: Settings, port: int, app_id: str = "bench-worker") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    return env | {
        "SENTIMENT_BROKER": settings.broker,
        "SENTIMENT_DATABASE_URL": settings.database_url,
        "SENTIMENT_TOPIC_REVIEWS": settings.topic_reviews,
        "SENTIMENT_TOPIC_SENTIMENTS": settings.topic_sentiments,
        "SENTIMENT_TOPIC_DLQ": settings.topic_dlq,
        "SENTIMENT_APP_ID": app_id,
        "SENTIMENT_SESSION_TIMEOUT": "3",
        "SENTIMENT_HEARTBEAT_INTERVAL": "0.5",
        "SENTIMENT_METRICS_PORT": str(port),
        "SENTIMENT_METRICS_HOST": "127.0.0.1",
        "SENTIMENT_WEB_PORT": "0",
        "SENTIMENT_LOG_LEVEL": "warn",
        "SENTIMENT_BATCH_WAIT": str(settings.batch_wait),
        "SENTIMENT_SCORING": settings.scoring,
        "SENTIMENT_SCORING_THREADS": str(settings.scoring_threads),
        "SENTIMENT_LEAN_PATH": str(settings.lean_path).lower(),
        "SENTIMENT_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
    }


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class WorkerRun:
    rate: float  # reviews/s from 10% to 100% of the backlog, all workers together
    profile: str  # py-spy's top functions by own time (first worker), when asked for
    peak_rss_mb: list[float]  # each worker process's (under --processes: each child's, not the supervisor's)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per review over the same stretch, by process


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children(found[-1])
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants alive now: what a review costs in
    CPU, whatever else loads the machine."""
    total = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def worker_rate(
    settings: Settings,
    count: int,
    workdir: Path,
    profile: bool,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    app_id: str | None = None,
    watch: dict[str, int] | None = None,
) -> WorkerRun:
    """Drain ``count`` reviews already in the topic with ``workers`` worker commands in one group (each given
    ``args``, e.g. ``--processes 2``, and ``env`` on top of the bench's settings). ``watch``: other processes (the
    broker, PostgreSQL) whose CPU per review is measured beside the workers'."""
    watch = watch or {}
    ports = [free_port() for _ in range(workers)]
    group = app_id or f"bench-{settings.topic_reviews}"
    logs = [open(workdir / f"worker-{group}-{i}.log", "ab") for i in range(workers)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sentiment", "worker", *args], env=worker_env(settings, port, group) | (env or {}),
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir,  # where Faust keeps its "<app id>-data" folder
        )
        for port, log in zip(ports, logs)
    ]  # fmt: skip
    spy = None
    try:
        t10 = n10 = None
        deadline = time.monotonic() + 600
        rss: dict[int, float] = {}
        while time.monotonic() < deadline:
            n = sum(read_metric(port, "sentiment_reviews_scored_total") or 0 for port in ports)
            if t10 is None and n >= count // 10:
                t10, n10 = time.perf_counter(), n
                cpu10 = {"worker": sum(cpu_seconds(p.pid) for p in procs)}
                cpu10 |= {name: cpu_seconds(pid) for name, pid in watch.items()}
                if profile:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "100",
                         "--gil", "-o", str(workdir / "worker.stacks"), "--pid", str(procs[0].pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
            for p in procs:  # each worker process's peak, children of a supervisor included
                for pid in [p.pid, *children(p.pid)]:
                    try:
                        rss[pid] = peak_rss_mb(pid)
                    except OSError:
                        pass
            if n >= count:
                rate = (count - n10) / (time.perf_counter() - t10)
                cpu = {"worker": sum(cpu_seconds(p.pid) for p in procs)}
                cpu |= {name: cpu_seconds(pid) for name, pid in watch.items()}
                supervisors = {p.pid for p in procs if children(p.pid)}
                return WorkerRun(
                    rate,
                    top_functions(workdir / "worker.stacks", spy),
                    [mb for pid, mb in rss.items() if pid not in supervisors],
                    {name: 1000 * (cpu[name] - cpu10[name]) / (n - n10) for name in cpu},
                )
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"a worker exited: see {workdir}")
            time.sleep(0.25)  # each scrape costs the worker a little: not too often
        raise SystemExit("the workers did not drain the backlog in 10 minutes")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        for log in logs:
            log.close()


def top_functions(stacks: Path, spy, n: int = 15) -> str:
    """py-spy's samples of the thread holding the GIL (--gil: where the Python time goes, idle waits left out), by
    own time."""
    if spy is None:
        return ""
    spy.send_signal(2)
    spy.wait(30)
    own = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames, _, samples = line.rpartition(" ")
        if not frames:
            continue
        own[frames.split(";")[-1]] += int(samples)
        total += int(samples)
    return "\n".join(f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n))


def noop_rate(broker: str, topic: str, count: int, workdir: Path, lean: bool = False, app_id: str = "") -> float:
    """The no-op agent's rate on ``topic`` (stock Faust, or ``lean``: the worker's path with scoring off)."""
    return noop_measure(broker, topic, count, workdir, lean, app_id)[0]


def noop_measure(
    broker: str, topic: str, count: int, workdir: Path, lean: bool = False, app_id: str = ""
) -> tuple[float, float]:
    """The no-op agent's rate and CPU milliseconds per message."""
    app_id = app_id or f"{topic}-app"
    out = workdir / f"{app_id}.rate"
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "noop_agent.py"),
            broker,
            topic,
            app_id,
            str(count),
            str(out),
            *(["256", "--lean"] if lean else []),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,  # Faust keeps an "<app id>-data" folder in its working directory
    )
    if not out.exists():
        raise SystemExit(f"the no-op agent wrote no rate:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    rate, cpu_ms = out.read_text().split()
    return float(rate), float(cpu_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(rows)
    rows = rows[: args.reviews]
    workdir = scratch_dir("sentiment-bench-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    try:
        upgrade(pg.url)
        settings = Settings(
            broker=broker.url,
            database_url=pg.url,
            topic_reviews="bench-reviews",
            topic_sentiments="bench-sentiments",
            topic_dlq="bench-dlq",
        )
        create_topics(broker.bootstrap, ["bench-reviews", "bench-noop", "bench-sentiments", "bench-dlq"], 4)
        produce_reviews(settings, rows, progress=False)
        create_topics(broker.bootstrap, ["bench-noop-2"], 4)
        for topic in ("bench-noop", "bench-noop-2"):
            produce_reviews(settings.model_copy(update={"topic_reviews": topic}), rows, progress=False)
        # the no-op agent before and after the worker: its rate varies from run to run on this broker
        noop_before = noop_rate(broker.url, "bench-noop", len(rows), workdir)
        run = worker_rate(settings, len(rows), workdir, args.profile)
        worker, profile = run.rate, run.profile
        noop_after = noop_rate(broker.url, "bench-noop-2", len(rows), workdir)
        noop = (noop_before + noop_after) / 2
        print(f"{len(rows):,} real reviews, 4 partitions, batches of 256, Tansu + PostgreSQL, same run:")
        print(
            f"  Faust no-op agent (noack_take + ack): {noop_before:>8,.0f} before, {noop_after:,.0f} after the worker"
        )
        print(f"  sentiment worker:                     {worker:>8,.0f} reviews/s")
        print(f"  worker / no-op (mean of the two): {worker / noop:.2f} (goal >= 0.8)")
        if profile:
            print("py-spy, worker, own time (Python level):")
            print(profile)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            result = {"noop_before": noop_before, "noop_after": noop_after, "worker": worker, "ratio": worker / noop}
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        pg.stop()
        broker.stop()


if __name__ == "__main__":
    main()
