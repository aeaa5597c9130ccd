"""Stream first, round two, on real parts (Tansu, PostgreSQL, a worker process): no request, client or event slows
the stream, nothing a client sends ends up in a log, and the worker stops on time with its broker gone.

The attackers come from addresses of their own on the loopback network (127.0.x.y), as clients on other machines
would: per-client limits are then what they meet, and the prober and scraper (127.0.0.1) are clients like any other.
"""

from __future__ import annotations

import dataclasses
import http.client
import multiprocessing
import os
import random
import select
import signal
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest

from sentiment.local import free_port, read_metric
from sentiment.producing import review_bytes
from tests.conftest import collect_values, probe, stored_count, wait_until

pytestmark = pytest.mark.integration

TOKEN = "Hostile7Token9Secret"
BIG = 12_800_000  # the API's body limit at the default settings: 64 texts x (50,000 x 4 + 64) + 1,024 bytes
REVIEWS = 5000  # per phase


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def exchange(port: int, source: str, request: bytes, timeout: float = 5) -> int:
    """Send ``request`` from ``source``; the answer's status (0: none, the connection reset)."""
    try:
        conn = connect(port, source)
    except OSError:
        return 0
    conn.settimeout(timeout)
    try:
        conn.sendall(request)
        answer = conn.recv(64)
        return int(answer[9:12]) if answer[:5] == b"HTTP/" else 0
    except OSError:
        return 0
    finally:
        conn.close()


FLOOD_PER_SECOND = 10  # attempts; each sends up to 12.8 MB, until the server answers and closes


def flood(port: int, sources: list[str], stop, statuses: list) -> None:
    """12.8 MB bodies of ``[[],[],...]`` with the right token (an authenticated abuser), ``FLOOD_PER_SECOND``. A
    status 0: the server answered (a 429) and closed before the client had sent it all, so the client saw a reset."""
    body = b'{"texts":[' + b"[]," * ((BIG - 20) // 3) + b"[]]}"
    head = (f"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    i = 0
    started = time.monotonic()
    while not stop.is_set():
        i += 1
        statuses.append(exchange(port, sources[i % len(sources)], head + body, timeout=10))
        time.sleep(max(0.0, started + i / FLOOD_PER_SECOND - time.monotonic()))


def slow_clients(ports: dict[int, list[str]], per_port: int, stop, opened: list) -> None:
    """``per_port`` connections to each port that send half a header and nothing more; each one the server closes
    is opened again (in rounds 5 times a second)."""
    held: dict[socket.socket, tuple[int, str]] = {}
    while not stop.is_set():
        for port, sources in ports.items():
            mine = [s for s, (p, _) in held.items() if p == port]
            for i in range(per_port - len(mine)):
                source = sources[i % len(sources)]
                try:
                    conn = connect(port, source)
                    conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Ag")
                    held[conn] = (port, source)
                    opened.append(port)
                except OSError:
                    pass
        time.sleep(0.2)
        readable, _, _ = select.select(list(held), [], [], 0)
        for conn in readable:  # an answer (a 429, a 503) or the close: let it go, open another
            try:
                conn.recv(4096)
            except OSError:
                pass
            conn.close()
            del held[conn]
    for conn in held:
        conn.close()


BAD_REQUESTS = [
    b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"GET /api/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"Q" * 12_000 + b"\r\n\r\n",
    b"GET /api/live?token=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: bearer " + TOKEN.encode() + b"\r\nContent-Type: "
    b"application/json\r\nContent-Length: 9\r\n\r\n{not json",
    b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: "
    b'application/json\r\nContent-Length: 30\r\n\r\n{"texts": ["a"], "explain": NaN}',
    b"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN[:-3].encode() + b"xyz\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS to a plain HTTP port
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
]


def bad_requests(port: int, sources: list[str], per_second: float, stop, statuses: list) -> None:
    i = 0
    started = time.monotonic()
    while not stop.is_set():
        i += 1
        statuses.append(exchange(port, sources[i % len(sources)], BAD_REQUESTS[i % len(BAD_REQUESTS)], timeout=3))
        time.sleep(max(0.0, started + i / per_second - time.monotonic()))


ATTACKS = ("flood", "slow", "bad")


def attack(web_port: int, metrics_port: int, stop, results, kinds: tuple[str, ...] = ATTACKS) -> None:
    """The ``kinds`` of attack at once (all of them by default), in a process of its own, at the lowest priority:
    the attackers stand for clients on other machines, so their own sending must not take this machine's cores from
    the worker (it did, on 2 shared cores)."""
    os.nice(19)
    flooded, opened, bad = [], [], []
    slow_sources = [f"127.0.1.{i}" for i in range(1, 11)]  # 10 clients of 10 slow connections each, per port
    threads = {
        "flood": threading.Thread(target=flood, args=(web_port, ["127.0.2.1", "127.0.2.2"], stop, flooded)),
        "slow": threading.Thread(
            target=slow_clients, args=({web_port: slow_sources, metrics_port: slow_sources}, 100, stop, opened)
        ),  # fmt: skip
        "bad": threading.Thread(
            target=bad_requests, args=(web_port, [f"127.0.3.{i}" for i in range(1, 11)], 200, stop, bad)
        ),  # fmt: skip
    }
    for kind in kinds:
        threads[kind].start()
    for kind in kinds:
        threads[kind].join()
    results.put({"flood": flooded, "slow_opened": len(opened), "bad": bad})


class Prober:
    """/healthz every 50 ms and /metrics every second on the metrics port, each on a new connection from 127.0.0.1,
    while ``on`` is set: latencies and statuses."""

    def __init__(self, port: int) -> None:
        self.port, self.on, self.stop = port, threading.Event(), threading.Event()
        self.health: list[tuple[float, int]] = []
        self.scrapes: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(path, every), daemon=True)
                        for path, every in (("/healthz", 0.05), ("/metrics", 1.0))]  # fmt: skip

    def _get(self, path: str) -> tuple[float, int]:
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            conn.close()
            return time.perf_counter() - started, response.status
        except OSError:
            return time.perf_counter() - started, 0

    def _run(self, path: str, every: float) -> None:
        while not self.stop.is_set():
            if self.on.is_set():
                took, status = self._get(path)
                if path == "/healthz":
                    self.health.append((took, status))
                else:
                    self.scrapes.append(status)
            time.sleep(every)

    def __enter__(self) -> Prober:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def backlog(settings, values: list[bytes], pid: int) -> None:
    """``values`` sent to the reviews topic while the worker is stopped (SIGSTOP), so that the drain times the worker,
    not this producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers(), linger_ms=20, acks="all")
    os.kill(pid, signal.SIGSTOP)
    try:
        for i, value in enumerate(values):
            producer.send(settings.topic_reviews, key=str(i % 97).encode(), value=value)
        producer.flush(30)
    finally:
        os.kill(pid, signal.SIGCONT)
        producer.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def spent_since(pid: int, before: tuple[float, float]) -> str:
    user, system = user_system(pid)
    return f"user {user - before[0]:.1f} s, system {system - before[1]:.1f} s"


def drain_rate(settings, base: int, n: int, worker) -> tuple[float, float]:
    """(reviews/s from 10% to 100% of the backlog stored, seconds to drain it all)."""
    started = time.perf_counter()
    t10 = n10 = None
    while (count := stored_count(settings.database_url) - base) < n:
        if t10 is None and count >= n // 10:
            t10, n10 = time.perf_counter(), count
        assert time.perf_counter() - started < 120, f"{count} of {n} stored in 120 s:\n{worker.tail()}"
        worker.assert_alive()
        time.sleep(0.05)
    ended = time.perf_counter()
    return (n - n10) / (ended - t10), ended - started


def events(rows, prefix: str) -> list[bytes]:
    """The review events of ``rows`` as `sentiment produce` sends them, under review ids of this phase."""
    return [review_bytes(dataclasses.replace(r, review_id=f"{prefix}-{r.review_id}")) for r in rows]


BAD_EVENTS = {
    b'{"review_id":"bad-1","movie_id":"m","text":"fine","created_at":"2024-13-45T00:00:00Z"}': "invalid_value",
    b'{"review_id":"bad-2","movie_id":"m","text":"fine","extra":[1,NaN]}': "invalid_json",
    b'{"review_id":"bad-3","movie_id":"m","text":"fine","rating":9.9999999999999999}': "wrong_type",
    b'{"review_id":"bad-4","movie_id":"m","text":"fine","created_at":"2024-02-01T10:00:00Z","x":Infinity}': "invalid_json",
}


def test_hostile_clients_do_not_slow_the_stream_nor_reach_the_log(stream_settings, start_worker, imdb_test_rows):
    settings = stream_settings.model_copy(
        update={"metrics_port": free_port(), "web_port": free_port(), "session_timeout": 10.0}
    )
    worker = start_worker(settings, {"SENTIMENT_WEB_TOKEN": TOKEN})  # the default limits
    port, web_port = settings.metrics_port, settings.web_port
    assert wait_until(lambda: probe(port, "/readyz")[0] == 200, 90, on_poll=worker.assert_alive), worker.tail()
    rows = random.Random(27).sample(imdb_test_rows, 3 * REVIEWS + 500)
    backlog(settings, events(rows[:500], "warm"), worker.process.pid)
    assert wait_until(lambda: stored_count(settings.database_url) == 500, 60, on_poll=worker.assert_alive)

    # A, B, A: undisturbed, under attack, undisturbed again (the machine is shared: its load drifts)
    pid = worker.process.pid
    phase_rows = {name: rows[500 + i * REVIEWS : 500 + (i + 1) * REVIEWS] for i, name in enumerate(("A1", "B", "A2"))}
    stored_before = 500
    spent: dict[str, str] = {}  # the worker's CPU in each phase, user and system

    def undisturbed(name: str, prober: Prober | None = None) -> tuple[float, float]:
        nonlocal stored_before
        backlog(settings, events(phase_rows[name], name), pid)
        if prober is not None:
            prober.on.set()
        cpu, threads = cpu_seconds(pid), user_system(pid)
        rate, _ = drain_rate(settings, stored_before, REVIEWS, worker)
        spent[name] = spent_since(pid, threads)
        if prober is not None:
            prober.on.clear()
        stored_before += REVIEWS
        return rate, cpu_seconds(pid) - cpu

    alone_1, cpu_alone = undisturbed("A1")

    # B: the same backlog, under every attack at once, with bad events among the reviews
    log_before = len(worker.log.read_text(errors="replace").splitlines())
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    attacker = ctx.Process(target=attack, args=(web_port, port, stop, results))
    with Prober(port) as prober:
        attacker.start()
        time.sleep(3)  # every attack under way
        backlog(settings, [*events(phase_rows["B"], "B"), *BAD_EVENTS], pid)
        prober.on.set()  # (not while the worker was stopped)
        spy = None
        if os.environ.get("HOSTILE_PROFILE"):  # where the worker's time goes under attack (py-spy, Python level)
            import subprocess
            import sys

            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--format", "raw",
                                    "--rate", "50", "--threads", "-o", os.environ["HOSTILE_PROFILE"], "--pid", str(pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        cpu, threads = cpu_seconds(pid), user_system(pid)
        under_attack, drained_in = drain_rate(settings, stored_before, REVIEWS, worker)
        spent["B"] = spent_since(pid, threads)
        cpu_attacked = cpu_seconds(pid) - cpu
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        prober.on.clear()
    stop.set()
    attacked = results.get(timeout=60)
    attacker.join(30)
    stored_before += REVIEWS
    time.sleep(1)
    log_lines = worker.log.read_text(errors="replace").splitlines()[log_before:]
    with Prober(port) as quiet:  # the same probes without the attack: what the machine's load alone costs them
        alone_2, _ = undisturbed("A2", quiet)
    alone = (alone_1 + alone_2) / 2
    quiet_latencies = np.array([took for took, _ in quiet.health]) * 1000

    latencies = np.array([took for took, _ in prober.health]) * 1000
    health_statuses = {status for _, status in prober.health}
    flood, bad = attacked["flood"], attacked["bad"]
    total = 500 + 3 * REVIEWS
    scored = read_metric(port, "sentiment_reviews_scored_total")
    rejected_http = read_metric(port, "sentiment_http_rejected_total")
    dead = collect_values(settings, settings.topic_dlq, lambda v: len(v) >= len(BAD_EVENTS), timeout=30)
    reasons = {r.value: dict(r.headers)["dlq.reason"].decode() for r in dead}
    print(
        f"\nstream alone {alone_1:,.0f} and {alone_2:,.0f} reviews/s (before and after); under attack {under_attack:,.0f} reviews/s "
        f"({under_attack / alone:.2f}x, drained in {drained_in:.1f} s); the worker's CPU per 1,000 reviews "
        f"{1000 * cpu_alone / REVIEWS:.2f} s alone, {1000 * cpu_attacked / REVIEWS:.2f} s under attack"
        f"\nattack: {len(flood)} x 12.8 MB bodies (statuses {dict(Counter(flood))}, 0: reset after a 429), "
        f"{attacked['slow_opened']} slow connections "
        f"opened, {len(bad)} bad requests ({len(bad) / max(drained_in + 3, 1):.0f}/s; statuses {sorted(set(bad))})"
        f"\n/healthz on the metrics port: {len(latencies)} probes, p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p99 {np.percentile(latencies, 99):.1f} ms, max {latencies.max():.1f} ms, statuses {sorted(health_statuses)}; "
        f"without the attack p50 {np.percentile(quiet_latencies, 50):.1f} ms, p99 {np.percentile(quiet_latencies, 99):.1f} ms"
        f"\nscrapes: {len(prober.scrapes)}, statuses {sorted(set(prober.scrapes))}; HTTP refusals counted "
        f"{rejected_http:,.0f}; worker log: {len(log_lines)} lines during the attack"
        f"\nthe worker's CPU: "
        + "; ".join(f"{name}: {where}" for name, where in spent.items())
        + f"\nscored {scored:,.0f} of {total:,} reviews, {stored_count(settings.database_url):,} rows; dead letters "
        f"{reasons}"
    )
    assert prober.scrapes and set(prober.scrapes) == {200}
    assert stored_count(settings.database_url) == total and scored == total  # each review scored once
    assert {value: reasons.get(value) for value in BAD_EVENTS} == BAD_EVENTS
    assert not [s for s in flood + bad if s >= 500 and s != 503], "a server error"
    assert len(log_lines) < 60, "\n".join(log_lines[:80])
    log = worker.log.read_text(errors="replace")
    assert TOKEN not in log and TOKEN[:8] not in log and "QQQQ" not in log
    assert "Traceback" not in log
    # The goals (>= 0.8x the stream's rate alone, /healthz p99 < 100 ms) are measured by bench/http_load.py
    # --hostile on a quiet machine: on CI's 2 shared cores the rate alone swings 2-4x between runs. What this test
    # asserts is what a user would notice even on a loaded machine: the stall the attack caused before (4,339 -> 212
    # reviews/s, /healthz 3.6 s) is gone. Checked last, so that a failure still shows that everything above held.
    assert under_attack >= 0.5 * alone, f"the attack slowed the stream to {under_attack / alone:.2f}x"
    assert np.percentile(latencies, 99) < 1000 and health_statuses == {200}
