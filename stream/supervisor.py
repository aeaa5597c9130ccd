"""``sentiment worker --processes N``: every core of a host, under one command.

Faust runs one worker per process (one event loop; the GIL). The supervisor starts N ordinary ``sentiment worker``
processes in one consumer group and is, to the outside, one worker:

- **one log**: each child's lines (standard output and error) come out of the supervisor's standard output with the
  process named first (``[worker-1] ...``), the supervisor's own lines as ``[supervisor] ...``;
- **one metrics endpoint** on ``SENTIMENT_METRICS_PORT``: the children write their metrics to
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode; a folder of its own per run) and the supervisor
  serves them combined: counters and histograms add up over every process that ever ran, also a killed one, and each
  gauge combines as ``stream/observe/metrics.py`` declares; ``/healthz`` and ``/readyz`` answer for all of them (``/readyz``
  lists each child's reasons, named);
- **one page**: child 0 serves the scoring page on ``SENTIMENT_WEB_PORT`` (its live charts show that child's share of
  the stream); the others serve none;
- a child that dies is restarted (after 1 s, doubling to 30 s while it keeps dying young); what it had not committed
  is scored again by whoever gets its partitions, and the database keeps the first score of a review id;
- SIGTERM or Ctrl-C stops every child within ``SENTIMENT_SHUTDOWN_GRACE`` (each child gets most of it, then the
  supervisor kills what is left); the exit code is 0 only if every child stopped cleanly. A child that fails on its
  first start (a broker or database it cannot reach, a bad setting) stops them all, with that child's message and
  exit code.

The children start together (one rebalance; a missing compiled-scorer cache is built by each, written atomically),
and each scores with ``cores / N`` threads unless ``SENTIMENT_SCORING_THREADS`` is set (not 0).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from core.settings import Settings

log = logging.getLogger("sentiment.supervisor")

RESTART_BACKOFF = (1.0, 30.0)  # first delay, most delay: doubles while a child keeps dying within YOUNG seconds
YOUNG = 30.0
POLL = 0.5  # seconds between the supervisor's looks at its children
CHILD_UNHEALTHY_AFTER = 30.0  # a child that has not answered /healthz for this long makes /healthz fail


def usable_cores() -> int:
    """The CPUs this process may use: its affinity (which a container's cpuset narrows), and at most its CPU quota
    (a container's CPU limit, cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), rounded down, at least 1."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    return max(1, min(cores, int(quota))) if quota is not None else cores


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs' worth of time this process's cgroup may use per period; None without a limit."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, IndexError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def parse_processes(value: str) -> int:
    """``--processes``: a count of at least 1, or ``auto`` (the usable cores: :func:`usable_cores`)."""
    if value == "auto":
        return usable_cores()
    try:
        number = int(value)
    except ValueError:
        raise UserError(
            f"--processes {value!r}: not a number", "give a count (1, 2, ...) or auto", exit_code=2
        ) from None
    if number < 1:
        raise UserError(f"--processes {number}: at least 1", "give a count (1, 2, ...) or auto", exit_code=2)
    return number


@dataclass
class Child:
    index: int
    port: int  # its own /healthz and /readyz, on loopback, for the supervisor only
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF[0]
    restart_at: float | None = None
    ever_ready: bool = False
    last_healthy: float = field(default_factory=time.monotonic)
    reasons: list[str] = field(default_factory=lambda: ["starting"])

    @property
    def name(self) -> str:
        return f"worker-{self.index}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ChildrenHealth:
    """What the supervisor's ``/healthz`` and ``/readyz`` answer (the shape of stream.observe.health.Health they read)."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False

    @property
    def alive(self) -> bool:
        now = time.monotonic()
        return all(now - child.last_healthy < CHILD_UNHEALTHY_AFTER for child in self.children)

    def reasons(self) -> list[str]:
        if self.stopping:
            return ["stopping"]
        return [f"{child.name}: {reason}" for child in self.children for reason in child.reasons]


def _probe(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


class Supervisor:
    def __init__(self, settings: Settings, processes: int, argv: list[str]) -> None:
        from core.network import free_port

        self.settings = settings
        self.argv = argv  # the worker's own options, passed on to every child
        self.children = [Child(i, free_port()) for i in range(processes)]
        self.health = ChildrenHealth(self.children)
        self.stopping: str | None = None
        self.failed: tuple[Child, int] | None = None  # a child that failed on its first start, and its code
        self.output_lock = threading.Lock()
        own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.metrics_dir = Path(own) if own else Path(tempfile.mkdtemp(prefix="sentiment-metrics-"))
        self.own_metrics_dir = not own
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.metrics_dir.glob("*.db"):  # the documented way: an empty folder at start
            stale.unlink()

    # the one log ------------------------------------------------------------------------------------------------
    def _own_log_lines(self) -> None:
        """What the supervisor's own parts log (its metrics server, say) goes out as ``[supervisor] ...`` too."""
        supervisor = self

        class Said(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                supervisor.say(f"{record.levelname} {self.format(record)}")

        root = logging.getLogger()
        root.handlers = [Said()]
        root.setLevel(getattr(logging, self.settings.log_level.upper(), logging.INFO))

    def say(self, line: str) -> None:
        with self.output_lock:
            sys.stdout.write(f"[supervisor] {line}\n")
            sys.stdout.flush()

    def _relay(self, child: Child, pipe) -> None:
        prefix = f"[{child.name}] ".encode()
        out = sys.stdout.buffer
        for line in iter(pipe.readline, b""):
            with self.output_lock:
                out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                out.flush()
        pipe.close()

    # children ---------------------------------------------------------------------------------------------------
    def _child_env(self, child: Child) -> dict[str, str]:
        env = dict(os.environ)
        env |= {
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "SENTIMENT_METRICS_PORT": str(child.port),
            "SENTIMENT_METRICS_HOST": "127.0.0.1",
            # the children stop within most of the grace, so that the supervisor stops within all of it
            "SENTIMENT_SHUTDOWN_GRACE": f"{max(1.0, self.settings.shutdown_grace * 0.8):.2f}",
        }
        if child.index != 0:
            env["SENTIMENT_WEB_PORT"] = "0"  # one page: child 0's
        if self.settings.scoring_threads == 0:  # 0: the default, which would give each child every core
            env["SENTIMENT_SCORING_THREADS"] = str(max(1, usable_cores() // len(self.children)))
        return env

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "worker", *self.argv],
            env=self._child_env(child),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on the terminal reaches the supervisor, which stops them in order
        )
        child.started = time.monotonic()
        child.last_healthy = child.started
        child.restart_at = None
        child.reasons = ["starting"]
        threading.Thread(target=self._relay, args=(child, child.process.stdout), daemon=True).start()
        self.say(f"{child.name} started (pid {child.process.pid})")

    def _look(self, child: Child) -> None:
        """Probe a running child; handle one that exited."""
        if child.running:
            status, body = _probe(child.port, "/readyz")
            if status:
                child.last_healthy = time.monotonic()
            if status == 200:
                child.ever_ready = True
                child.reasons = []
            else:
                child.reasons = body.get("reasons") or ["not answering yet"]
            return
        if child.process is None or child.restart_at is not None:
            return
        code = child.process.returncode
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(child.process.pid, str(self.metrics_dir))  # its live gauges go
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if self.stopping:
            return
        if not child.ever_ready and child.restarts == 0:
            self.say(f"{child.name} {how} on its first start: stopping all")
            self.failed = (child, code if code > 0 else 1)
            return
        young = time.monotonic() - child.started < YOUNG
        child.backoff = min(child.backoff * 2, RESTART_BACKOFF[1]) if young else RESTART_BACKOFF[0]
        child.restarts += 1
        child.restart_at = time.monotonic() + child.backoff
        child.reasons = [f"{how}; restarting in {child.backoff:.0f} s (restart {child.restarts})"]
        self.say(f"{child.name} (pid {child.process.pid}) {how}; restarting in {child.backoff:.0f} s")

    # the whole ---------------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            self.say(f"{name} again: killing every child now")
            for child in self.children:
                if child.running:
                    child.process.kill()
            return
        self.stopping = name

    def run(self) -> int:
        from core.network import check_broker
        from stream.sql.db import database_engine
        from stream.web.http import Limits, MetricsServer, check_exposure

        self._own_log_lines()
        # the quick checks once, here, so that a broker or database away is one message, not one per child
        check_exposure(self.settings)
        check_broker(self.settings)
        database_engine(self.settings).dispose()
        server = None
        if self.settings.metrics_port:
            server = MetricsServer(
                self.health,
                self.settings.metrics_host,
                self.settings.metrics_port,
                Limits.from_settings(self.settings),
                collect=self._collect,
            )
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        where = f"{server.url}/metrics (and /healthz, /readyz)" if server else "off (SENTIMENT_METRICS_PORT=0)"
        self.say(
            f"{len(self.children)} worker processes in group {self.settings.app_id} (usable cores: {usable_cores()}); "
            f"metrics of all of them at {where}; the page is worker-0's"
        )
        try:
            return self._supervise()
        finally:
            if server is not None:
                server.stop()
            if self.own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _supervise(self) -> int:
        for child in self.children:  # all at once: they join the group together, one rebalance
            self._start(child)
        while not self.stopping and self.failed is None:
            now = time.monotonic()
            for child in self.children:
                self._look(child)
                if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                    self._start(child)
            time.sleep(POLL)
        return self._stop_all()

    def _stop_all(self) -> int:
        self.health.stopping = True
        why = self.stopping or "a child failed"
        grace = self.settings.shutdown_grace
        self.say(f"{why}: stopping {sum(c.running for c in self.children)} worker processes (at most {grace:.0f} s)")
        deadline = time.monotonic() + grace * 0.95
        for child in self.children:
            if child.running:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in time: killed")
                child.process.kill()
                child.process.wait()
        if self.failed is not None:
            return self.failed[1]
        codes = {c.name: c.process.returncode for c in self.children if c.process is not None}
        unclean = {name: code for name, code in codes.items() if code != 0}
        if unclean:
            self.say("not every process stopped cleanly: " + ", ".join(f"{n} {c}" for n, c in unclean.items()))
            return 1
        self.say("all stopped")
        return 0

    def _collect(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))
        return generate_latest(registry)


def run_supervisor(settings: Settings, processes: int, argv: list[str]) -> int:
    return Supervisor(settings, processes, argv).run()
