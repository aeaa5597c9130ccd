"""The worker's log filter and thread hook, without a broker: a storm of the same error becomes a few lines."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from stream.observe.logs import RepeatedLines, log_thread_deaths


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def captured():
    clock = FakeClock()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.getMessage()}")

    handler = Collect()
    handler.addFilter(RepeatedLines(every=30, clock=clock))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield clock, lines
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_repeated_library_error_goes_through_once_then_once_per_period_with_a_count(captured):
    clock, lines = captured
    conn = logging.getLogger("aiokafka.conn")
    for second in range(61):  # 60 a second for a minute, as with the broker away
        clock.now = second
        for _ in range(60):
            conn.error("Unable connect to node with id %s: %s", 111, "Connect call failed")
    assert lines == [
        "ERROR Unable connect to node with id 111: Connect call failed",
        "ERROR Unable connect to node with id 111: Connect call failed (and 1,799 more like it in the last 30 s)",
        "ERROR Unable connect to node with id 111: Connect call failed (and 1,799 more like it in the last 30 s)",
    ]


def test_other_kinds_our_own_lines_and_info_lines_are_never_held_back(captured):
    _, lines = captured
    for _ in range(3):
        logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from %s", 111)
        logging.getLogger("aiokafka.cluster").error("Unable to update metadata from %s", [111])
        logging.getLogger("sentiment.worker").warning("database write failed")
        logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    assert lines.count("ERROR Failed fetch messages from 111") == 1
    assert lines.count("ERROR Unable to update metadata from [111]") == 1
    assert lines.count("WARNING database write failed") == 3
    assert lines.count("INFO Joined group") == 3


def run_thread_raising(exc: BaseException) -> None:
    def boom() -> None:
        raise exc

    thread = threading.Thread(target=boom, name="consumer-thread")
    thread.start()
    thread.join()


def test_a_thread_that_dies_logs_one_line_and_its_traceback_only_at_debug(caplog):
    saved = threading.excepthook
    show = False
    log_thread_deaths(show_traceback=lambda: show)
    try:
        with caplog.at_level(logging.DEBUG, logger="sentiment.worker"):
            run_thread_raising(RuntimeError("fetcher closed\nsecond line"))
            run_thread_raising(asyncio.CancelledError())
            show = True
            run_thread_raising(RuntimeError("again"))
    finally:
        threading.excepthook = saved
    died, cancelled, shown = caplog.records
    assert died.getMessage() == "consumer-thread ended with an error: fetcher closed" and died.exc_info is None
    assert cancelled.levelno == logging.DEBUG
    assert shown.exc_info is not None
