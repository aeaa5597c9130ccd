"""Faust's worker with a deadline on stopping, and a log a human can read (stream/logs.py)."""

from __future__ import annotations

import logging
import os
import sys
import threading

import faust

from stream.health import health
from stream.logs import log_thread_deaths, quiet_repeats

log = logging.getLogger("sentiment.worker")


class ScorerWorker(faust.Worker):
    """Faust's worker with a deadline on stopping: after the first SIGTERM or Ctrl-C it has ``grace`` seconds, then
    it exits at once. Offsets only ever cover stored and delivered results, so nothing unstored is acknowledged
    either way; a second Ctrl-C exits at once too."""

    def __init__(self, *args, grace: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # no terminal spinner in a service: with it, Faust lowers the root logger to DEBUG (so that every record
        # spins it), and each debug line of aiokafka, one per request, is built and then dropped
        self.spinner = None
        self.grace = grace
        self._deadline: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_repeats(logger)
        log_thread_deaths(show_traceback=lambda: logger.isEnabledFor(logging.DEBUG))

    def _on_sigint(self) -> None:
        self._begin_stop("Ctrl-C")
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._begin_stop("SIGTERM")
        super()._on_sigterm()

    def _begin_stop(self, why: str) -> None:
        health.update(stopping=True)
        if self._deadline is not None:
            self._exit_now(f"{why} again: stopping now")
        log.info("%s: stopping (at most %.0f s); an unfinished batch stays unacked", why, self.grace)
        self._deadline = threading.Timer(
            self.grace, self._exit_now, args=(f"not stopped within {self.grace:.0f} s (SENTIMENT_SHUTDOWN_GRACE)",)
        )
        self._deadline.daemon = True
        self._deadline.start()

    @staticmethod
    def _exit_now(why: str) -> None:
        log.warning("%s; exiting: offsets cover only stored and delivered results", why)
        for stream_ in (sys.stdout, sys.stderr):
            stream_.flush()
        os._exit(1)
