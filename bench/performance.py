"""Every performance figure of the worker, side by side in one run on this machine: prints a table, writes JSON.

    .venv/bin/python bench/performance.py [--reviews 20000] [--json runs/performance.json] [--profile]
                                          [--only scoring,codec,sql,worker,latency]

Starts its own Tansu broker and PostgreSQL cluster and uses real imdb_test reviews (../shared/data or
$SENTIMENT_DATA_DIR). Sections:

- scoring: the TensorFlow model and the compiled path (model/compiled/) at batch 256, reviews/s, and the largest
  score difference between them on all 25,000 imdb_test reviews;
- codec: decoding a review (full JSON Schema validator vs msgspec) and encoding a result (json vs msgspec);
- sql: the SQL sink's COPY path against the multi-row insert (bench/sql_sink.py), new rows/s;
- worker: the same backlog drained by a Faust no-op agent (noack_take + ack; before and after), the worker, two
  worker processes in one group, and a bare aiokafka consume -> produce loop; ratios to the no-op agent;
- latency: reviews produced at a fixed rate (200/s and 2,000/s) into a running worker; produce -> sentiments event
  p50/p95/p99, whether it kept up, and the worker's peak resident memory.

Absolute rates drift between runs on a shared 2-core machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import subprocess
import sys
import threading
import time
import timeit
import urllib.request
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sql_sink  # noqa: E402
from worker_throughput import noop_rate, peak_rss_mb, worker_env, worker_rate  # noqa: E402

from core.settings import DEFAULT_MODEL, Settings  # noqa: E402
from schemas import Review, Sentiment, _decode_review_fully, decode_review, encode_review, utc_iso  # noqa: E402
from sentiment.local import LocalBroker, LocalPostgres, free_port, scratch_dir  # noqa: E402
from sentiment.producing import produce_reviews  # noqa: E402
from stream.ingest.topics import create_topics
from training.datasets import read_reviews, shared_data_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTIONS = ("scoring", "codec", "sql", "worker", "latency")


class Table:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, section: str, figure: str, value: float, unit: str, goal: str = "", note: str = "") -> None:
        self.rows.append(
            {"section": section, "figure": figure, "value": value, "unit": unit, "goal": goal, "note": note}
        )
        print(f"{section:<9} {figure:<44} {_fmt(value):>12} {unit:<10} {goal:<12} {note}", flush=True)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 0.01 or value == 0:
        return f"{value:,.2f}"
    return f"{value:.2g}"


def best_rate(call, batches: list[list[str]], repeat: int = 3) -> float:
    call(batches[0])  # warm up: traces, compiles
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for batch in batches:
            call(batch)
        best = min(best, time.perf_counter() - started)
    return sum(map(len, batches)) / best


def scoring(table: Table, texts: list[str], compare: Path | None = None) -> None:
    from model.scorer import load_scorer

    scorer = load_scorer(DEFAULT_MODEL, scoring="compiled", cache_dir=scratch_dir("sentiment-bench-cache-"))
    assert scorer.scoring == "compiled", "the compiled path did not build: see the warning above"
    batches = [texts[i : i + 256] for i in range(0, 5120, 256)]
    tf_rate = best_rate(scorer.inspect_tensorflow, batches)
    threads = scorer.fast.threads  # the default: the CPUs this process may use, at most 4
    scorer.fast.threads = 1
    single = best_rate(scorer.inspect, batches)
    scorer.fast.threads = threads
    fast_rate = best_rate(scorer.inspect, batches)
    table.add("scoring", "TensorFlow model, batch 256", tf_rate, "reviews/s")
    table.add("scoring", "compiled path, batch 256, 1 thread", single, "reviews/s", "", f"{single / tf_rate:.1f}x")
    table.add(
        "scoring", f"compiled path, batch 256, {threads} threads (default)", fast_rate, "reviews/s", ">= 20,000",
        f"{fast_rate / tf_rate:.1f}x TF, {fast_rate / single:.2f}x 1 thread",
    )  # fmt: skip
    one = [[t] for t in texts[:500]]
    table.add("scoring", "compiled path, batch 1", best_rate(scorer.inspect, one), "reviews/s")
    worst = 0.0
    for i in range(0, len(texts), 1024):
        batch = texts[i : i + 1024]
        worst = max(worst, float(np.abs(scorer.inspect(batch).scores - scorer.inspect_tensorflow(batch).scores).max()))
    table.add("scoring", f"largest |score difference| on {len(texts):,} reviews", worst, "", "<= 1e-5")
    if compare is not None:
        other = load_scorer(compare, scoring="compiled", cache_dir=scratch_dir("sentiment-bench-cache-"))
        assert other.scoring == "compiled", f"the compiled path did not build for {compare}"
        rates: dict[str, list[float]] = {"default": [], "other": []}
        for _ in range(3):  # alternated, so that the machine's drift weighs on both alike
            rates["default"].append(best_rate(scorer.inspect, batches, repeat=1))
            rates["other"].append(best_rate(other.inspect, batches, repeat=1))
        ours, theirs = max(rates["default"]), max(rates["other"])
        table.add("scoring", f"compiled, batch 256, {other.version} (--compare)", theirs, "reviews/s")
        table.add(
            "scoring", f"compiled, batch 256, default {scorer.version}", ours, "reviews/s", ">= 0.9x",
            f"{ours / theirs:.2f}x --compare",
        )  # fmt: skip


def codec(table: Table, rows) -> None:
    raws = [encode_review(Review(f"r{i}", f"tt{i % 3500:07d}", r.text)) for i, r in enumerate(rows[:5000])]
    limits = {"max_text_chars": 100_000, "max_message_bytes": 1_000_000}
    full = min(
        timeit.repeat(lambda: [_decode_review_fully(r, max_text_chars=100_000) for r in raws], number=1, repeat=3)
    )
    fast = min(timeit.repeat(lambda: [decode_review(r, **limits) for r in raws], number=1, repeat=3))
    same = all(decode_review(r, **limits) == _decode_review_fully(r, max_text_chars=100_000) for r in raws)
    table.add("codec", "decode + validate, full JSON Schema", full / len(raws) * 1e6, "us/review")
    table.add(
        "codec",
        "decode + validate, msgspec",
        fast / len(raws) * 1e6,
        "us/review",
        "",
        f"{full / fast:.1f}x, same results: {same}",
    )
    now = utc_iso()
    events = [Sentiment(f"r{i}", f"tt{i:07d}", random.random(), "positive", "abc", now, now) for i in range(5000)]
    import dataclasses

    old = min(
        timeit.repeat(
            lambda: [
                json.dumps(dataclasses.asdict(e), ensure_ascii=False, separators=(",", ":")).encode() for e in events
            ],
            number=1,
            repeat=3,
        )
    )  # noqa: E501
    new = min(timeit.repeat(lambda: [e.to_json() for e in events], number=1, repeat=3))
    table.add("codec", "encode a result, json.dumps", old / len(events) * 1e6, "us/event")
    table.add("codec", "encode a result, msgspec", new / len(events) * 1e6, "us/event", "", f"{old / new:.1f}x")


def sql(table: Table, server: str, count: int) -> None:
    rows = sql_sink.reviews(count)
    results = {}
    # the COPY path twice, each into a fresh database: the first run on a fresh cluster is slower (cold caches)
    for name, use_copy in (("insert", False), ("copy", True), ("copy again", True)):
        url = sql_sink.database(server)
        results[name] = sql_sink.run(url, rows, 256, use_copy)
    table.add("sql", "multi-row insert + upsert, new rows", results["insert"][0], "rows/s")
    for name, label in (("copy", "first run"), ("copy again", "second run")):
        ratio = results[name][0] / results["insert"][0]
        table.add("sql", f"COPY + one merge statement, new rows, {label}", results[name][0], "rows/s", ">= 50,000",
                  f"{ratio:.1f}x")  # fmt: skip
    table.add("sql", "COPY path, replay of the same rows (no change)", results["copy again"][1], "rows/s")


def preload(settings: Settings, broker: LocalBroker, topic: str, rows) -> None:
    create_topics(broker.bootstrap, [topic], 4)
    produce_reviews(settings.model_copy(update={"topic_reviews": topic}), rows, progress=False)


def passthrough_rate(bootstrap: str, topic: str, count: int, workdir: Path) -> float:
    out = workdir / f"{topic}.rate"
    subprocess.run(
        [sys.executable, str(HERE / "aiokafka_passthrough.py"), bootstrap, topic, f"{topic}-out", str(count), str(out)],
        capture_output=True, timeout=600, check=True,
    )  # fmt: skip
    return float(out.read_text())


def worker_section(table: Table, settings: Settings, broker: LocalBroker, rows, workdir: Path, profile: bool) -> dict:
    topics = (
        "bench-reviews", "bench-reviews-again", "bench-reviews-1t", "bench-reviews-2w", "bench-noop", "bench-noop-2",
        "bench-pass",
    )  # fmt: skip
    for topic in topics:
        preload(settings, broker, topic, rows)
    create_topics(broker.bootstrap, ["bench-sentiments", "bench-dlq", "bench-pass-out"], 4)
    n = len(rows)
    # alternated, so that neither side gets the fresh broker's first (slower) minutes: no-op, worker, no-op, worker
    noop_first = noop_rate(broker.url, "bench-noop", n, workdir)
    one = worker_rate(settings, n, workdir, profile)
    noop_second = noop_rate(broker.url, "bench-noop-2", n, workdir)
    again = worker_rate(settings.model_copy(update={"topic_reviews": "bench-reviews-again"}), n, workdir, False)
    one_thread = worker_rate(
        settings.model_copy(update={"topic_reviews": "bench-reviews-1t", "scoring_threads": 1}), n, workdir, False
    )
    two = worker_rate(settings.model_copy(update={"topic_reviews": "bench-reviews-2w"}), n, workdir, False, workers=2)
    passthrough = passthrough_rate(broker.bootstrap, "bench-pass", n, workdir)
    noop, worker = (noop_first + noop_second) / 2, (one.rate + again.rate) / 2
    table.add("worker", "1. Faust no-op agent (noack_take + ack)", noop_first, "reviews/s")
    table.add("worker", "2. sentiment worker, 1 process", one.rate, "reviews/s")
    table.add("worker", "3. Faust no-op agent", noop_second, "reviews/s")
    table.add("worker", "4. sentiment worker, 1 process", again.rate, "reviews/s")
    table.add("worker", "worker / no-op (mean of 2 and 4 / mean of 1 and 3)", worker / noop, "", ">= 0.8")
    table.add(
        "worker", "sentiment worker, 1 process, SENTIMENT_SCORING_THREADS=1", one_thread.rate, "reviews/s", "",
        f"{one_thread.rate / worker:.2f} x the default (2 and 4)",
    )  # fmt: skip
    table.add(
        "worker",
        "sentiment worker, 2 processes, one group",
        two.rate,
        "reviews/s",
        "",
        f"{two.rate / worker:.2f} x 1 process",
    )  # noqa: E501
    table.add(
        "worker",
        "bare aiokafka consume -> produce",
        passthrough,
        "reviews/s",
        "",
        f"worker = {worker / passthrough:.2f} x this",
    )  # noqa: E501
    table.add("worker", "peak resident memory, 1 process", max(one.peak_rss_mb + again.peak_rss_mb), "MB", "< 1,024")
    if one.profile:
        print("py-spy, worker, own time (Python level):\n" + one.profile)
    return {"profile": one.profile}


def produce_at_rate(bootstrap: list[str], topic: str, texts: list[str], rate: int, total: int, out: str) -> None:
    """Produce ``total`` reviews at ``rate`` per second; write each one's send time (ms) to ``out``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    sent: dict[str, int] = {}
    started = time.time()
    for i in range(total):
        wait = started + i / rate - time.time()
        if wait > 0:
            time.sleep(wait)
        review = Review(f"lat-{rate}-{i}", f"tt{i % 3500:07d}", texts[i % len(texts)])
        now_ms = int(time.time() * 1000)
        producer.send(topic, encode_review(review), key=review.movie_id.encode(), timestamp_ms=now_ms)
        sent[review.review_id] = now_ms
    producer.flush()
    ended = time.time()
    Path(out).write_text(json.dumps({"sent": sent, "seconds": ended - started, "ended": ended}))


def latency(
    table: Table,
    settings: Settings,
    broker: LocalBroker,
    rows,
    rate: int,
    seconds: float,
    workdir: Path,
    name: str = "",
) -> None:
    """Reviews produced at ``rate`` for ``seconds`` into a running worker (``settings``): latency rows, named
    ``name`` (for side-by-side variants)."""
    suffix = uuid.uuid4().hex[:6]
    run = settings.model_copy(
        update={
            "topic_reviews": f"lat-{suffix}",
            "topic_sentiments": f"lat-{suffix}-out",
            "topic_dlq": f"lat-{suffix}-dlq",
        }
    )
    create_topics(broker.bootstrap, [run.topic_reviews, run.topic_sentiments, run.topic_dlq], 4)
    port = free_port()
    log = open(workdir / f"latency-{rate}.log", "ab")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "worker"], env=worker_env(run, port, f"lat-{suffix}"), stdout=log,
        stderr=subprocess.STDOUT, cwd=workdir,  # Faust keeps an "<app id>-data" folder in its working directory
    )  # fmt: skip
    from kafka import KafkaConsumer

    received: dict[str, int] = {}
    stop = threading.Event()

    def consume() -> None:
        consumer = KafkaConsumer(
            run.topic_sentiments, bootstrap_servers=run.bootstrap_servers(), auto_offset_reset="earliest",
            fetch_max_wait_ms=20, group_id=None,
        )  # fmt: skip
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                for r in records:
                    received[json.loads(r.value)["review_id"]] = r.timestamp
        consumer.close()

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited: see {workdir / f'latency-{rate}.log'}")
            time.sleep(0.25)
        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        time.sleep(1.0)
        # the producer runs in a process of its own: sharing a GIL with the reader above, it fell behind at 2,000/s
        # and its lateness counted as the worker's latency
        total = int(rate * seconds)
        out = workdir / f"sent-{rate}.json"
        texts = [r.text for r in rows[: min(len(rows), 2000)]]
        ctx = multiprocessing.get_context("spawn")
        producing = ctx.Process(
            target=produce_at_rate, args=(run.bootstrap_servers(), run.topic_reviews, texts, rate, total, str(out))
        )
        producing.start()
        producing.join(seconds * 3 + 60)
        report = json.loads(out.read_text())
        sent: dict[str, int] = report["sent"]
        produced_for = report["seconds"]
        wait_until = time.monotonic() + 60
        while len(received) < total and time.monotonic() < wait_until:
            time.sleep(0.1)
        drained_after = time.time() - report["ended"]
        stop.set()
        reader.join(5)
        lat = np.array([received[k] - sent[k] for k in sent if k in received], dtype=np.float64)
        p50, p95, p99 = (np.percentile(lat, q) for q in (50, 95, 99)) if lat.size else (float("nan"),) * 3
        kept_up = len(received) == total and drained_after <= 1.0  # all scored within a second of the last review
        label = f"{name}{rate:,}/s for {seconds:.0f} s"
        goal = "p99 < 250" if rate <= 200 else "keeps up"
        table.add("latency", f"{label}: p50", p50, "ms")
        table.add("latency", f"{label}: p95", p95, "ms")
        table.add(
            "latency", f"{label}: p99", p99, "ms", goal,
            f"{len(received):,}/{total:,} delivered (produced at {total / produced_for:,.0f}/s), all done "
            f"{drained_after:.1f} s after the last review, kept up: {kept_up}",
        )  # fmt: skip
        table.add("latency", f"{label}: worker peak resident memory", peak_rss_mb(worker.pid), "MB", "< 1,024")
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=Path("runs/performance.json"))
    parser.add_argument("--profile", action="store_true", help="py-spy the one-process worker run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--compare", type=Path, help="another model folder: its compiled scoring speed beside the default's"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(SECTIONS):
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    test_rows = list(read_reviews(data / "imdb_test.csv.gz"))
    rows = list(test_rows)
    random.Random(0).shuffle(rows)
    rows = rows[: args.reviews]
    table = Table()
    print(f"{'section':<9} {'figure':<44} {'value':>12} {'unit':<10} {'goal':<12} note")
    extra: dict = {}
    if "scoring" in only:
        scoring(table, [r.text for r in test_rows], args.compare)
    if "codec" in only:
        codec(table, rows)
    needs_services = only & {"sql", "worker", "latency"}
    if needs_services:
        workdir = scratch_dir("sentiment-bench-")
        broker = LocalBroker(workdir).start()
        pg = LocalPostgres(workdir / "pg").start()
        try:
            if "sql" in only:
                sql(table, pg.url, args.reviews)
            url = sql_sink.database(pg.url)
            settings = Settings(
                broker=broker.url, database_url=url, topic_reviews="bench-reviews", topic_sentiments="bench-sentiments",
                topic_dlq="bench-dlq",
            )  # fmt: skip
            if "worker" in only:
                extra |= worker_section(table, settings, broker, rows, workdir, args.profile)
            if "latency" in only:
                latency(table, settings, broker, rows, 200, 20, workdir)
                latency(table, settings, broker, rows, 2000, 15, workdir)
        finally:
            pg.stop()
            broker.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": table.rows, **extra}, indent=2))
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
