"""The worker's log: one line per event worth a human's attention.

With the broker away, aiokafka logs the same few errors dozens of times a second (every reconnect, fetch, metadata
and coordinator attempt); on stop, a thread of Faust's consumer ends with a traceback that Faust's stderr redirect
spreads over a hundred WARNING lines. Here the first of a repeated message goes through, then at most one line every
``every`` seconds that says how many like it were held back; and a thread that dies says so in one line, with its
traceback only at the debug level.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.messages import first_line

log = logging.getLogger("sentiment.worker")

# the libraries whose retry loops repeat themselves; our own lines are few and each one says something new
NOISY_LOGGERS = ("aiokafka", "kafka", "faust", "mode")
REPEAT_EVERY = 30.0


@dataclass
class _Seen:
    since: float  # when the last line of this kind went through
    held: int = 0  # how many were held back since


class RepeatedLines(logging.Filter):
    """A handler filter: lets the first warning or error of a kind (logger and message template) from a noisy library
    through, then at most one every ``every`` seconds, with the count of those held back in between."""

    def __init__(
        self,
        every: float = REPEAT_EVERY,
        loggers: tuple[str, ...] = NOISY_LOGGERS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.every = every
        self.loggers = loggers
        self.clock = clock or time.monotonic
        self.seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not self._noisy(record.name):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            seen = self.seen.get(key)
            if seen is not None and now - seen.since < self.every:
                seen.held += 1
                return False
            self.seen[key] = _Seen(since=now)
        if seen is not None and seen.held:
            record.msg = f"{record.getMessage()} (and {seen.held:,} more like it in the last {now - seen.since:,.0f} s)"
            record.args = None
        return True

    def _noisy(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.loggers)


OWN_LOGGERS = "sentiment"  # every logger of the project's own is sentiment.<part>


class OwnLinesOnly(logging.Filter):
    """A handler filter: below warning, only the project's own lines. At info, Faust, mode and the Kafka client say
    about 48 lines at every start (each service starting, subscription tables, group joins) and as many at every
    stop; the worker's own lines say what a reader needs (what it reads, where it writes, the model, ready)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == OWN_LOGGERS or record.name.startswith("sentiment.")


def own_lines_only(logger: logging.Logger | None = None) -> None:
    """Put an ``OwnLinesOnly`` filter on every handler of ``logger`` (the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, OwnLinesOnly) for f in handler.filters):
            handler.addFilter(OwnLinesOnly())


def quiet_repeats(logger: logging.Logger | None = None, every: float = REPEAT_EVERY) -> RepeatedLines:
    """Put one ``RepeatedLines`` filter on every handler of ``logger`` (the root logger): records of all loggers pass
    through these handlers, whereas a filter on a logger sees only that logger's own records."""
    logger = logger or logging.getLogger()
    repeats = RepeatedLines(every)
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatedLines) for f in handler.filters):
            handler.addFilter(repeats)
    return repeats


def log_thread_deaths(show_traceback: Callable[[], bool]) -> None:
    """A thread that ends with an exception logs one line (the traceback only when ``show_traceback()``), instead
    of Python printing a traceback to stderr, which Faust redirects to the log one WARNING line per write."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        if show_traceback():
            log.warning("%s ended with an error", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        elif issubclass(args.exc_type, asyncio.CancelledError):
            log.debug("%s cancelled while stopping", name)  # the consumer's fetch task, cancelled on stop
        else:
            log.warning("%s ended with an error: %s", name, first_line(args.exc_value))

    threading.excepthook = hook
