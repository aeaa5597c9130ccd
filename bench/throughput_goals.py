"""The throughput goals of issue 28, measured side by side in one run, in interleaved rounds; prints the table.

    PYTHONPATH=. .venv/bin/python bench/throughput_goals.py [--reviews 20000] [--rounds 2] [--profile]
                                                            [--json runs/throughput_goals.json]

Starts its own Tansu broker and PostgreSQL cluster, preloads ``--reviews`` real imdb_test reviews into one topic of 4
partitions, then, in each round and in this order, drains that same backlog with a fresh consumer group (and, for
the worker, a fresh database) each time:

1. the stock Faust no-op agent (``noack_take(256, 0.5)`` + ack: Faust 0.15 as it comes, bench/noop_agent.py);
2. the lean path with scoring off (the same agent on stream/ingest/consumer.py's consumer, stream and monitor);
3. ``sentiment worker``, one process, on Faust's per-message path (``SENTIMENT_LEAN_PATH=false``: the A/B);
4. ``sentiment worker``, one process, lean path (the default), with PostgreSQL;
5. ``sentiment worker --processes 2``, with PostgreSQL.

Rates run from 10% to 100% of the backlog (start-up and group joins do not count); figures are medians over the
rounds, each ratio is the median of the per-round ratios. Then reviews produced at 200/s for 20 s into a running
worker give the produce -> ``sentiments`` latency (p50/p99) and its peak memory. Absolute rates drift with the load
of the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sql_sink  # noqa: E402
from performance import Table, latency  # noqa: E402
from worker_throughput import noop_measure, worker_rate  # noqa: E402

from core.settings import Settings  # noqa: E402
from sentiment.local import LocalBroker, LocalPostgres, scratch_dir  # noqa: E402
from sentiment.producing import produce_reviews  # noqa: E402
from stream.ingest.topics import create_topics  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402

VARIANTS = ("stock no-op", "lean no-op", "worker, stock path", "worker, lean", "worker --processes 2")


def postmaster_pid(pg: LocalPostgres) -> int:
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


def one_round(settings: Settings, broker: LocalBroker, pg: LocalPostgres, n: int, workdir: Path, i: int, profile: bool):
    """One run of each variant, in order: rates, CPU ms per review (by process), peak RSS, profiles."""
    rates: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    rss: list[float] = []
    profiles: dict[str, str] = {}
    topic = settings.topic_reviews
    for name, lean in (("stock no-op", False), ("lean no-op", True)):
        rates[name], noop_cpu = noop_measure(broker.url, topic, n, workdir, lean=lean, app_id=f"{name[:4]}-{i}")
        cpu[name] = {"worker": noop_cpu}
    watch = {"broker": broker.process.pid, "postgres": postmaster_pid(pg)}
    for name, env, args in (
        ("worker, stock path", {"SENTIMENT_LEAN_PATH": "false"}, ()),
        ("worker, lean", {}, ()),
        ("worker --processes 2", {}, ("--processes", "2")),
    ):
        run_settings = settings.model_copy(update={"database_url": sql_sink.database(pg.url)})
        group = f"bench-{name.replace(' ', '').replace(',', '-')}-{i}"
        spy = profile and i == 0 and not args  # the one-process workers of the first round
        run = worker_rate(run_settings, n, workdir, spy, env=env, args=args, app_id=group, watch=watch)
        rates[name], cpu[name] = run.rate, run.cpu_ms
        rss += run.peak_rss_mb
        if run.profile:
            profiles[name] = run.profile
    return rates, cpu, rss, profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=20_000, help="the backlog (past 25,000: texts again, new ids)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="py-spy (--gil) the one-process workers of round 1")
    parser.add_argument("--json", type=Path, default=Path("runs/throughput_goals.json"))
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(rows)
    # past the 25,000 test reviews, the same texts again under new ids (a replayed id would take the database's
    # skip-stored path and measure something else)
    copies = -(-args.reviews // len(rows))
    rows = [
        r if k == 0 else dataclasses.replace(r, review_id=f"{r.review_id}-{k}") for k in range(copies) for r in rows
    ]
    rows = rows[: args.reviews]
    workdir = scratch_dir("sentiment-goals-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    try:
        settings = Settings(
            broker=broker.url, database_url=pg.url, topic_reviews="goals-reviews", topic_sentiments="goals-sentiments",
            topic_dlq="goals-dlq",
        )  # fmt: skip
        create_topics(broker.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
        produce_reviews(settings, rows, progress=False)
        n = len(rows)
        print(
            f"{n:,} real reviews preloaded{' (texts repeated past 25,000, new ids)' if n > 25_000 else ''}, 4 partitions, batches of {settings.batch_size}, Tansu + PostgreSQL, {args.rounds} rounds"
        )
        rounds, cpus, rss, profiles = [], [], [], {}
        for i in range(args.rounds):
            rates, cpu, round_rss, round_profiles = one_round(settings, broker, pg, n, workdir, i, args.profile)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()), flush=True)
            rounds.append(rates)
            cpus.append(cpu)
            rss += round_rss
            profiles |= round_profiles
        table = Table()
        print(f"\n{'section':<9} {'figure':<44} {'value':>12} {'unit':<10} {'goal':<12} note")

        def median(name: str) -> float:
            return statistics.median(r[name] for r in rounds)

        def ratio(a: str, b: str) -> tuple[float, str]:
            per_round = [r[a] / r[b] for r in rounds]
            return statistics.median(per_round), "rounds: " + ", ".join(f"{x:.2f}" for x in per_round)

        for name in VARIANTS:
            table.add("rates", name, median(name), "reviews/s", "", "median of the rounds")
        for figure, a, b, goal in (
            ("worker (1 process) / stock no-op", "worker, lean", "stock no-op", ">= 1.5"),
            ("lean no-op (scoring off) / stock no-op", "lean no-op", "stock no-op", ">= 2"),
            ("--processes 2 / 1 process (4 partitions)", "worker --processes 2", "worker, lean", ">= 1.7"),
            ("worker lean / worker stock path (A/B)", "worker, lean", "worker, stock path", ""),
        ):
            value, note = ratio(a, b)
            table.add("ratios", figure, value, "x", goal, note)
        # What --processes 2 can reach here at best: the host's cores over the cores one process keeps busy (the
        # worker's threads, the broker and PostgreSQL it drives); where one process already keeps 1.4 of 2 cores busy,
        # a second cannot add more than the 0.6 left
        cores = len(os.sched_getaffinity(0))
        busy = [r["worker, lean"] * sum(c["worker, lean"].values()) / 1000 for r, c in zip(rounds, cpus)]
        ceilings = [min(2.0, cores / b) for b in busy]
        table.add("ratios", "--processes 2 ceiling: cores / cores busy at 1", statistics.median(ceilings), "x", "",
                  f"{cores} cores; one process keeps " + ", ".join(f"{b:.2f}" for b in busy)
                  + " busy (true on an otherwise idle host)")  # fmt: skip
        # CPU per review: what a review costs whatever else loads the machine; 1000 / it = reviews/s per busy core
        for name in VARIANTS:
            ms = statistics.median(c[name]["worker"] for c in cpus)
            table.add("cpu", f"{name}: CPU per review", ms, "ms", "", f"= {1000 / ms:,.0f} reviews/s per core")
        for part in ("broker", "postgres"):
            ms = statistics.median(c["worker, lean"][part] for c in cpus)
            table.add("cpu", f"{part} under the lean worker: CPU per review", ms, "ms", "",
                      f"= {1000 / ms:,.0f} reviews/s per core")  # fmt: skip
        table.add("e2e", "with PostgreSQL, 1 host, best of 1 or 2 proc.", max(median("worker, lean"),
                  median("worker --processes 2")), "reviews/s", ">= 10,000")  # fmt: skip
        table.add("memory", "peak RSS per worker process (largest)", max(rss), "MB", "< 400")
        for name, update in (
            ("stock path: ", {"lean_path": False}),
            ("lean, batch wait 0.1 s (the default before): ", {"batch_wait": 0.1}),
            ("lean: ", {}),
        ):
            run_settings = settings.model_copy(update={"database_url": sql_sink.database(pg.url), **update})
            latency(table, run_settings, broker, rows, 200, 20, workdir, name)
        for name, profile in profiles.items():
            print(f"\npy-spy --gil, {name}, own time (Python level, thread holding the GIL):\n{profile}")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"rounds": rounds, "cpu_ms": cpus, "rows": table.rows, "profiles": profiles}
        args.json.write_text(json.dumps(result, indent=2))
        print(f"written: {args.json}")
    finally:
        pg.stop()
        broker.stop()


if __name__ == "__main__":
    main()
