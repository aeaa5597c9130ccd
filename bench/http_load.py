"""The stream comes first: the worker's stream throughput with and without HTTP scoring load, and slow clients.

    .venv/bin/python bench/http_load.py [--reviews 20000] [--rounds 2] [--clients 4] [--slow 200] [--profile]
                                        [--json runs/http_load.json] [--hostile]

Starts a Tansu broker, a PostgreSQL cluster and one real worker (`sentiment worker`, page and API on, metrics on),
then, in one run:

1. stream: a backlog of N real imdb_test reviews (produced while the worker is paused), drained by the worker and
   timed until all are rows in review_scores (rate from 10% to 100% of them), unloaded (A) and while ``--clients``
   processes post 64 x 2,000-character imdb_test texts with ``"explain": true`` to ``POST /api/score`` without
   pause (B), alternated A B A B, because the machine is shared; the ratio loaded / unloaded, the requests sent and
   answered while the backlog drained and their p50/p99 latency, and the worker's peak resident memory in each
   phase (VmRSS sampled every 0.2 s);
2. slow headers: ``--slow`` connections to each server (page and metrics) that send half a request header and
   then nothing: the worker's thread count before and with them, how many the servers closed within
   SENTIMENT_HTTP_TIMEOUT + 1 s (over SENTIMENT_HTTP_MAX_CONNECTIONS: a 503 at once), and what a /metrics scrape
   gets meanwhile;
3. slow bodies: ``--slow`` requests to the page with Content-Length 10,000 sent at 10 bytes/s: how many got a 408
   within the timeout + 1 s.

4. with ``--hostile`` (and only that): the attacks of the second hardening issue, one at a time, each beside
   undisturbed runs (alone, attack, alone, ...): a flood of 12.8 MB ``[[],[],...]`` bodies, 100 slow clients
   holding connections on the page and on the metrics port, 200 malformed requests per second. The attackers come
   from loopback addresses of their own (127.0.x.y: other clients, as the per-client limits see them) and run at
   nice 19 (they stand for other machines). For each: the stream's rate, its ratio to the mean of the undisturbed
   runs beside it, the worker's CPU per 1,000 reviews, and /healthz on the metrics port (p50, p99).

Goals, from the hardening issues: stream loaded / unloaded >= 0.8, worker under 1 GB resident, every slow connection
closed within the timeout; under each attack >= 0.8 and /healthz p99 < 100 ms. With --profile, py-spy samples the
worker during the first loaded phase (Python level) and the top functions by own time are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import multiprocessing
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.test_hostile_clients_integration: the attacks

from performance import Table  # noqa: E402
from worker_throughput import top_functions, worker_env  # noqa: E402

from core.settings import Settings  # noqa: E402
from sentiment.local import LocalBroker, LocalPostgres, free_port, scratch_dir  # noqa: E402
from sentiment.producing import produce_reviews  # noqa: E402
from stream.ingest.topics import create_topics  # noqa: E402
from stream.sql.db import make_engine, upgrade  # noqa: E402
from training.datasets import read_reviews, shared_data_dir  # noqa: E402

TEXTS_PER_REQUEST = 64
CHARS_PER_TEXT = 2000


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (kB for memory fields)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """The largest VmRSS of a process seen while it runs (the kernel's VmHWM only ever grows: no per-phase peak)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.peak_kb = pid, every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, proc_status(self.pid, "VmRSS"))
            self.stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def request_body(rows) -> bytes:
    """64 texts of exactly 2,000 characters, each made of consecutive imdb_test reviews."""
    texts, current = [], ""
    for row in rows:
        current = f"{current} {row.text}" if current else row.text
        if len(current) >= CHARS_PER_TEXT:
            texts.append(current[:CHARS_PER_TEXT])
            current = ""
            if len(texts) == TEXTS_PER_REQUEST:
                break
    return json.dumps({"texts": texts, "explain": True}).encode()


def post_score(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/api/score", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def client(port: int, body: bytes, stop, results) -> None:
    """One client process: post ``body`` on a keep-alive connection until ``stop``; (sent at, seconds, status)."""
    done = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    while not stop.is_set():
        started = time.time()
        try:
            status = post_score(conn, body)
        except OSError:  # the server closed an idle keep-alive between two requests: reconnect
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            status = 0
        done.append((started, time.time() - started, status))
    conn.close()
    results.put(done)


class Load:
    """``clients`` processes posting explain requests for as long as the ``with`` block lasts."""

    def __init__(self, clients: int, port: int, body: bytes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.results = ctx.Event(), ctx.Queue()
        self.procs = [ctx.Process(target=client, args=(port, body, self.stop, self.results)) for _ in range(clients)]
        self.requests: list[tuple[float, float, int]] = []
        self.window = (0.0, 0.0)  # wall-clock seconds in which the backlog drained

    def __enter__(self) -> Load:
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for _ in self.procs:
            self.requests += self.results.get(timeout=600)  # each finishes the request it is waiting for
        for p in self.procs:
            p.join(10)


@dataclasses.dataclass
class Phase:
    name: str
    loaded: bool
    rate: float  # reviews/s stored, from 10% to 100% of the backlog
    drained_in: float  # seconds from the worker's resumption to the last review stored
    peak_rss_mb: float
    threads: int  # the worker's, at the end of the phase
    answered: int = 0  # explain requests sent and answered 200 while the backlog drained
    failed: int = 0
    p50: float = float("nan")
    p99: float = float("nan")


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM review_scores")).scalar_one()


def stream_phase(
    name: str, settings: Settings, engine, rows, pid: int, load: Load | None = None, on_resume=None
) -> Phase:
    """A backlog of ``rows`` (under fresh review ids) drained by the worker, timed until all of them are stored.

    The worker is stopped (SIGSTOP) while the backlog is produced: a producer in this process is no faster than the
    worker, so producing into a running worker would time the producer. Its session timeout outlasts the pause."""
    rows = [dataclasses.replace(r, review_id=f"{name}-{r.review_id}") for r in rows]
    base, n = stored(engine), len(rows)
    with RssSampler(pid) as rss:
        os.kill(pid, signal.SIGSTOP)
        try:
            produce_reviews(settings, rows, progress=False)
        finally:
            os.kill(pid, signal.SIGCONT)
        if on_resume is not None:
            on_resume()
        resumed, since = time.perf_counter(), time.time()
        t10 = None
        while (count := stored(engine) - base) < n:
            if t10 is None and count >= n // 10:
                t10, n10 = time.perf_counter(), count
            if time.perf_counter() > resumed + 600:
                raise SystemExit(f"phase {name}: {count:,} of {n:,} reviews stored in 10 minutes")
            time.sleep(0.1)
        ended, until = time.perf_counter(), time.time()
    phase = Phase(name, load is not None, (n - n10) / (ended - t10), ended - resumed, rss.peak_mb,
                  proc_status(pid, "Threads"))  # fmt: skip
    if load is not None:
        load.window = (since, until)
    return phase


def latencies(phase: Phase, requests, since: float, until: float) -> None:
    """The requests sent and answered while the backlog drained (wall-clock ``since`` .. ``until``)."""
    within = [(seconds, status) for sent, seconds, status in requests if since <= sent and sent + seconds <= until]
    ok = np.array([s for s, status in within if status == 200])
    phase.answered, phase.failed = len(ok), len(within) - len(ok)
    if ok.size:
        phase.p50, phase.p99 = (float(np.percentile(ok, q)) for q in (50, 99))


@dataclasses.dataclass
class SlowResult:
    opened: int = 0
    busy: int = 0  # answered 503 at once (over the connection cap)
    timed_out: int = 0  # answered 408 within the timeout + 1 s
    closed_in_time: int = 0  # closed by the server (with or without an answer) within the timeout + 1 s
    still_open: int = 0  # after the watch
    slowest_answer: float = 0.0  # seconds from sending to the first byte of the answer, of those answered
    slowest_close: float = 0.0  # seconds from sending to the close, of those closed


def slow_connections(targets: dict[int, bytes], per_target: int, timeout: float, trickle: bytes = b"",
                     watch: float = 0, during=None) -> dict[int, SlowResult]:  # fmt: skip
    """Open ``per_target`` connections to each port and send its bytes; then ``trickle`` once a second on each
    until the server closes it. ``during()`` is called once all are open. Watches for ``watch`` s (default: the
    timeout + 3 s)."""
    selector = selectors.DefaultSelector()
    results = {port: SlowResult() for port in targets}
    opened: dict[socket.socket, tuple[int, float, bytearray]] = {}
    for port, first in targets.items():
        for _ in range(per_target):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(first)
            sock.setblocking(False)
            opened[sock] = (port, time.monotonic(), bytearray())
            selector.register(sock, selectors.EVENT_READ)
            results[port].opened += 1
    if during is not None:
        during()
    last_trickle = time.monotonic()
    watch_until = time.monotonic() + (watch or timeout + 3)
    while opened and time.monotonic() < watch_until:
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            port, since, answer = opened[sock]
            result = results[port]
            took = time.monotonic() - since
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if chunk:
                if not answer:
                    status = chunk[9:12]
                    result.busy += status == b"503"
                    result.timed_out += status == b"408" and took <= timeout + 1
                    result.slowest_answer = max(result.slowest_answer, took)
                answer += chunk
                continue
            result.closed_in_time += took <= timeout + 1
            result.slowest_close = max(result.slowest_close, took)
            selector.unregister(sock)
            sock.close()
            del opened[sock]
        if trickle and time.monotonic() - last_trickle >= 1:
            last_trickle = time.monotonic()
            for sock in opened:
                try:
                    sock.send(trickle)
                except OSError:
                    pass  # closed by the server: the read above sees it
    for sock, (port, _, _) in opened.items():
        results[port].still_open += 1
        sock.close()
    selector.close()
    return results


def scrape_status(port: int) -> str:
    try:
        return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except OSError as exc:
        return type(exc).__name__


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hostile_table(table: Table, settings: Settings, engine, rows, pid: int, web_port: int, port: int) -> list:
    """Section 4: each attack alone, between undisturbed runs of the same backlog."""
    from tests.test_hostile_clients_integration import Prober, attack

    ctx = multiprocessing.get_context("spawn")
    runs = []

    def run(name: str, kind: str | None) -> dict:
        stop, results = ctx.Event(), ctx.Queue()
        attacker = None
        if kind is not None:
            attacker = ctx.Process(target=attack, args=(web_port, port, stop, results, (kind,)))
            attacker.start()
            time.sleep(3)  # under way
        with Prober(port) as prober:
            cpu = cpu_seconds(pid)
            # probed from the worker's resumption on (stream_phase stops it while it produces the backlog)
            phase = stream_phase(name, settings, engine, rows, pid, None, on_resume=prober.on.set)
            prober.on.clear()
            cpu = cpu_seconds(pid) - cpu
        attacked = {}
        if attacker is not None:
            stop.set()
            attacked = results.get(timeout=120)
            attacker.join(30)
        latencies = np.array([t for t, _ in prober.health]) * 1000
        result = {"name": name, "attack": kind, "rate": phase.rate, "cpu_per_1000": 1000 * cpu / len(rows),
                  "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
                  "scrapes": prober.scrapes, "health_failed": sum(s != 200 for _, s in prober.health),
                  "flood": len(attacked.get("flood", [])), "slow_opened": attacked.get("slow_opened", 0),
                  "bad": len(attacked.get("bad", []))}  # fmt: skip
        runs.append(result)
        return result

    labels = {"flood": "a 12.8 MB body flood", "slow": "100 slow clients (each port)", "bad": "200 bad requests/s"}
    before = run("H0", None)
    for i, kind in enumerate(("flood", "slow", "bad"), 1):
        during = run(f"H{i}a", kind)
        after = run(f"H{i}b", None)
        alone = (before["rate"] + after["rate"]) / 2
        if i == 1:
            table.add("hostile", "stream alone (mean of the runs beside each)", alone, "reviews/s", "",
                      f"/healthz p50 {before['p50']:.1f} ms, p99 {before['p99']:.1f} ms; "
                      f"CPU {before['cpu_per_1000']:.2f} s per 1,000 reviews")  # fmt: skip
        scraped = f"{sum(s == 200 for s in during['scrapes'])} of {len(during['scrapes'])} scrapes 200"
        sent = {"flood": f"{during['flood']} bodies sent", "slow": f"{during['slow_opened']} slow connections opened",
                "bad": f"{during['bad']} bad requests sent"}[kind]  # fmt: skip
        table.add("hostile", f"under {labels[kind]}", during["rate"], "reviews/s", "",
                  f"{during['rate'] / alone:.2f}x of alone ({before['rate']:,.0f} / {after['rate']:,.0f} beside); "
                  f"/healthz p50 {during['p50']:.1f} ms, p99 {during['p99']:.1f} ms, {during['health_failed']} "
                  f"failed; {scraped}; CPU {during['cpu_per_1000']:.2f} s per 1,000 reviews; {sent}")  # fmt: skip
        table.add("hostile", f"  ratio to alone, {labels[kind]}", during["rate"] / alone, "", ">= 0.8")
        table.add("hostile", f"  /healthz p99, {labels[kind]}", during["p99"], "ms", "< 100")
        before = after
    return runs


def wait_until_ready(port: int, web_port: int, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited: see {log}")
        try:
            ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
            if ready and urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=5).status == 200:
                return
        except OSError:  # not ready (503) or not listening yet
            pass
        time.sleep(0.5)
    raise SystemExit(f"the worker was not ready in 5 minutes: see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reviews", type=int, default=20_000, help="reviews per stream phase (5,000 drain in about a second)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="unloaded/loaded pairs, alternated (A B A B)")
    parser.add_argument("--clients", type=int, default=4, help="processes posting explain requests in phase B")
    parser.add_argument("--slow", type=int, default=200, help="slow connections per server")
    parser.add_argument("--http-timeout", type=float, default=5.0, help="the worker's SENTIMENT_HTTP_TIMEOUT")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during the first loaded phase")
    parser.add_argument("--json", type=Path, default=Path("runs/http_load.json"))
    parser.add_argument("--hostile", action="store_true", help="only the attack table (section 4)")
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("no IMDB data: see README, Data")
    test_rows = list(read_reviews(data / "imdb_test.csv.gz"))
    random.Random(0).shuffle(test_rows)
    stream_rows, body = test_rows[: args.reviews], request_body(test_rows[-200:])

    workdir = scratch_dir("sentiment-bench-")
    broker = LocalBroker(workdir).start()
    pg = LocalPostgres(workdir / "pg").start()
    worker = log = None
    try:
        upgrade(pg.url)
        engine = make_engine(pg.url)
        settings = Settings(broker=broker.url, database_url=pg.url, topic_reviews="bench-reviews",
                            topic_sentiments="bench-sentiments", topic_dlq="bench-dlq")  # fmt: skip
        create_topics(broker.bootstrap, ["bench-reviews", "bench-sentiments", "bench-dlq"], 4)
        port, web_port = free_port(), free_port()
        env = worker_env(settings, port) | {
            "SENTIMENT_WEB_PORT": str(web_port),
            "SENTIMENT_HTTP_TIMEOUT": str(args.http_timeout),
            "SENTIMENT_SESSION_TIMEOUT": "60",  # outlasts the pause while a backlog is produced
        }
        log_path = workdir / "worker.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed below
        worker = subprocess.Popen([sys.executable, "-m", "sentiment", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=workdir)  # fmt: skip
        wait_until_ready(port, web_port, worker, log_path)
        # warm up: the stream's first batches and the explainer, built on the first explain request
        stream_phase("warm", settings, engine, stream_rows[:500], worker.pid, None)
        warm = http.client.HTTPConnection("127.0.0.1", web_port, timeout=300)
        if post_score(warm, body) != 200:
            raise SystemExit(f"the warm-up explain request failed: see {log_path}")
        warm.close()

        table = Table()
        print(f"{'section':<9} {'figure':<44} {'value':>12} {'unit':<10} {'goal':<12} note")
        if args.hostile:
            hostile = hostile_table(table, settings, engine, stream_rows, worker.pid, web_port, port)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"rows": table.rows, "hostile": hostile}, indent=2))
            print(f"written: {args.json}")
            return
        phases: list[Phase] = []
        profile = ""
        for round_ in range(1, args.rounds + 1):
            phases.append(stream_phase(f"A{round_}", settings, engine, stream_rows, worker.pid, None))
            spy = None
            if args.profile and round_ == 1:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "100",
                     "-o", str(workdir / "worker.stacks"), "--pid", str(worker.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            with Load(args.clients, web_port, body) as load:
                time.sleep(2)  # every client has a request in the server
                phase = stream_phase(f"B{round_}", settings, engine, stream_rows, worker.pid, load)
            if spy is not None:
                profile = top_functions(workdir / "worker.stacks", spy)
            latencies(phase, load.requests, *load.window)
            phases.append(phase)
        for p in phases:
            note = f"drained in {p.drained_in:.1f} s, {p.threads} threads"
            if p.loaded:
                note += f"; {p.answered} explain answered, p50 {p.p50:.1f} s, p99 {p.p99:.1f} s"
                note += f", {p.failed} failed" if p.failed else ""
            label = "loaded" if p.loaded else "unloaded"
            table.add("stream", f"{p.name} {label}, {args.reviews:,} reviews stored", p.rate, "reviews/s", "", note)
        unloaded = np.mean([p.rate for p in phases if not p.loaded])
        loaded = np.mean([p.rate for p in phases if p.loaded])
        table.add("stream", "loaded / unloaded (mean of the B / of the A)", loaded / unloaded, "", ">= 0.8")
        for p in phases:
            table.add("stream", f"{p.name} worker peak resident memory", p.peak_rss_mb, "MB", "< 1,024")
        table.add("stream", "worker VmHWM after the stream phases", proc_status(worker.pid, "VmHWM") / 1024, "MB",
                  "< 1,024")  # fmt: skip
        if profile:
            print("py-spy, worker during B1, own time (Python level):\n" + profile)

        slow = {}
        half_header = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag"
        before = proc_status(worker.pid, "Threads")
        seen: dict = {}

        def with_them() -> None:
            time.sleep(1)
            seen["threads"] = proc_status(worker.pid, "Threads")
            seen["scrape"] = scrape_status(port)

        headers = slow_connections({web_port: half_header, port: half_header}, args.slow, args.http_timeout,
                                   during=with_them)  # fmt: skip
        t = args.http_timeout
        table.add("slow", "worker threads, before", before, "")
        table.add("slow", f"worker threads, with {2 * args.slow} slow headers", seen["threads"], "", "< 200")
        for name, server_port in (("page", web_port), ("metrics", port)):
            r = headers[server_port]
            slow[f"headers_{name}"] = dataclasses.asdict(r)
            table.add(
                "slow", f"{name}: half headers closed within {t + 1:g} s", r.closed_in_time, f"of {r.opened}",
                f"{r.opened}", f"{r.busy} got 503 at once, slowest close {r.slowest_close:.1f} s, "
                f"{r.still_open} still open after {t + 3:g} s",
            )  # fmt: skip
        table.add("slow", "a /metrics scrape during them", float(seen["scrape"]) if seen["scrape"].isdigit()
                  else float("nan"), "status", "200", seen["scrape"])  # fmt: skip
        time.sleep(1)
        slow_post = (
            b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n"
        )
        # watched past aiohttp's lingering time (10 s), during which it reads what is left of an unread body
        bodies = slow_connections({web_port: slow_post}, args.slow, t, trickle=b"x" * 10, watch=t + 13)[web_port]
        slow["bodies_page"] = dataclasses.asdict(bodies)
        table.add(
            "slow", f"page: slow bodies answered 408 within {t + 1:g} s", bodies.timed_out, f"of {bodies.opened}",
            f"{bodies.opened}", f"{bodies.busy} got 503 at once, slowest answer {bodies.slowest_answer:.1f} s",
        )  # fmt: skip
        table.add(
            "slow", f"page: slow bodies closed within {t + 1:g} s", bodies.closed_in_time, f"of {bodies.opened}",
            f"{bodies.opened}", f"slowest close {bodies.slowest_close:.1f} s, {bodies.still_open} still open "
            f"after {t + 13:g} s",
        )  # fmt: skip
        table.add("slow", "worker threads, after", proc_status(worker.pid, "Threads"), "")
        table.add("all", "worker VmHWM at the end", proc_status(worker.pid, "VmHWM") / 1024, "MB", "< 1,024")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"rows": table.rows, "phases": [dataclasses.asdict(p) for p in phases], "slow": slow,
                  "body_bytes": len(body), "profile": profile}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2))
        print(f"written: {args.json}")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        if log is not None:
            log.close()
        pg.stop()
        broker.stop()


if __name__ == "__main__":
    main()
