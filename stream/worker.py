"""Faust's worker with a deadline on stopping, and a log a human can read (stream/observe/logs.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import faust

from stream.observe.health import health
from stream.observe.logs import log_thread_deaths, own_lines_only, quiet_repeats

log = logging.getLogger("sentiment.worker")

# The deadline fires this much before the grace is up: the exit itself (a log line, flushing) takes a moment.
EXIT_MARGIN = 0.3


class ScorerWorker(faust.Worker):
    """Faust's worker with a deadline on stopping: after the first SIGTERM or Ctrl-C it has ``grace`` seconds, then
    it exits at once. Offsets only ever cover stored and delivered results, so nothing unstored is acknowledged
    either way; a second Ctrl-C exits at once too."""

    def __init__(self, *args, grace: float, verbose: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.verbose = verbose
        # no terminal spinner in a service: with it, Faust lowers the root logger to DEBUG (so that every record
        # spins it), and each debug line of aiokafka, one per request, is built and then dropped
        self.spinner = None
        self.grace = grace
        self._stopping = False
        self._signalled_at: float | None = None
        self._signalled = threading.Event()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if not self.verbose and level > logging.DEBUG:
            own_lines_only(logger)
        quiet_repeats(logger)
        log_thread_deaths(show_traceback=lambda: logger.isEnabledFor(logging.DEBUG))

    def _install_signal_handlers_unix(self) -> None:
        """Faust's handlers run on the event loop, when it gets to them: under load that was up to 1.8 s after the
        signal, and the deadline started only then (SIGTERM took 11.3-11.8 s with the broker gone, where aiokafka's
        close waits for the dead coordinator until the deadline). The deadline now starts when the signal arrives:
        a Python handler (run at once in the main thread) notes the time for a watchdog thread; the loop still gets
        the signal through its wake-up descriptor and runs Faust's handler, which begins the stop."""
        super()._install_signal_handlers_unix()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._signal_arrived)
        threading.Thread(target=self._deadline, name="stop-deadline", daemon=True).start()

    def _signal_arrived(self, number: int, frame) -> None:
        if self._signalled_at is None:  # (no lock, no log here: this interrupts whatever the main thread does)
            self._signalled_at = time.monotonic()
            self._signalled.set()

    def _deadline(self) -> None:
        self._signalled.wait()
        time.sleep(max(0.0, self._signalled_at + self.grace - EXIT_MARGIN - time.monotonic()))
        self._exit_now(f"not stopped within {self.grace:.0f} s (SENTIMENT_SHUTDOWN_GRACE)")

    def _on_sigint(self) -> None:
        self._begin_stop("Ctrl-C")
        if self.verbose:
            super()._on_sigint()
        else:  # Faust's own handler also writes "-INT- -INT- -INT- ..." to the standard error: our line says it
            self._schedule_shutdown(signal.SIGINT)

    def _on_sigterm(self) -> None:
        self._begin_stop("SIGTERM")
        super()._on_sigterm()

    def _begin_stop(self, why: str) -> None:
        health.update(stopping=True)
        if self._stopping:
            self._exit_now(f"{why} again: stopping now")
        self._stopping = True
        self._signal_arrived(0, None)  # (already noted by the signal handler, unless this came another way)
        log.info("%s: stopping (at most %.0f s); an unfinished batch stays unacked", why, self.grace)

    @staticmethod
    def _exit_now(why: str) -> None:
        log.warning("%s; exiting: offsets cover only stored and delivered results", why)
        for stream_ in (sys.stdout, sys.stderr):
            stream_.flush()
        os._exit(1)
