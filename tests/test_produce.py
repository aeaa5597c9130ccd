"""`sentiment produce` applies the worker's own rules before it sends, reports every row it does not send by its line,
and always ends with its `sent N, skipped M (reasons)` line: one bad row never stops the rest of the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from core.errors import UserError
from core.settings import Settings
from schemas import Rejection, decode_review
from sentiment import producing
from sentiment.local import LocalBroker
from sentiment.producing import ProduceReport, message_of, produce_reviews
from stream.ingest.topics import create_topics
from tests.conftest import ROOT, collect_values
from training.datasets import BadRow, ReviewRow, read_records

SETTINGS = Settings()  # the worker's defaults: 50,000 characters, 1,000,000 bytes


def event(review_id: str, text: str, movie_id: str = "tt1") -> str:
    return json.dumps({"review_id": review_id, "movie_id": movie_id, "text": text})


def compact(line: str) -> bytes:
    """An event as the producer sends it (``encode_review``: compact UTF-8 JSON)."""
    return json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":")).encode()


def rows_of(tmp_path: Path, *lines: str | bytes, name: str = "reviews.jsonl") -> list:
    path = tmp_path / name
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    return list(read_records(path))


# --- the worker's limits and rules, before sending ----------------------------------------------------------------


def test_a_text_over_the_workers_limit_is_named_with_both_numbers():
    key, value, problem = message_of(ReviewRow("r1", "tt1", "a" * 72_000, line=4), SETTINGS)
    assert problem.reason == "text is 72,000 characters; the worker takes at most 50,000"
    assert problem.kind == "text too long"
    assert key == b"tt1" and decode_review(value, max_text_chars=50_000, max_message_bytes=1_000_000).reason == (
        "text_too_long"
    )


def test_a_message_over_the_workers_byte_limit_is_named_in_bytes():
    text = "é" * 40_000  # within 50,000 characters, 80,000 bytes
    _, value, problem = message_of(
        ReviewRow("r1", "tt1", text), SETTINGS.model_copy(update={"max_message_bytes": 50_000})
    )
    assert problem.kind == "message too large"
    assert problem.reason == f"message is {len(value):,} bytes; the worker takes at most 50,000"
    _, value, problem = message_of(ReviewRow("r1", "tt1", "a" * 1_020_000), SETTINGS)
    assert problem.reason == f"message is {len(value):,} bytes; the worker takes at most 1,000,000"


def test_the_limits_are_the_settings_of_the_worker():
    row = ReviewRow("r1", "tt1", "a" * 11)
    assert message_of(row, SETTINGS)[2] is None
    strict = SETTINGS.model_copy(update={"max_text_chars": 10})
    assert message_of(row, strict)[2].reason == "text is 11 characters; the worker takes at most 10"
    assert message_of(ReviewRow("r1", "tt1", "a" * 10), strict)[2] is None


def test_every_rule_of_the_workers_decoder_is_applied(tmp_path):
    """Whatever the worker would dead-letter is caught here, in the file's words where the schema has them."""
    rows = rows_of(
        tmp_path,
        event("ok", "fine"),
        json.dumps({"movie_id": "tt1", "text": "no id"}),
        event("blank", "   "),
        event("x" * 201, "id too long"),
        event("nul\u0000", "NUL in the id"),
        '{"review_id": "s", "movie_id": "tt1", "text": "half a pair \\ud800"}',
        json.dumps({"review_id": "r", "movie_id": "tt1", "text": "rated", "rating": 11}),
    )
    problems = [message_of(row, SETTINGS)[2] for row in rows]
    assert problems[0] is None
    assert [p.reason for p in problems[1:3]] == ["no review_id", "empty text"]
    assert all(p is not None for p in problems[3:]), problems
    assert problems[5].kind == "not utf8" and "lone surrogate" in problems[5].reason
    for row, problem in zip(rows[1:], problems[1:]):  # and the worker agrees that each is invalid
        _, value, _ = message_of(row, SETTINGS)
        assert isinstance(decode_review(value, max_text_chars=50_000, max_message_bytes=1_000_000), Rejection), problem


# --- rows that cannot be read keep their bytes, for --send-invalid ----------------------------------------------


def test_a_row_that_cannot_be_read_is_sent_as_its_own_bytes(tmp_path):
    jsonl = rows_of(tmp_path, "not json {", b'{"review_id": "b", "movie_id": "m", "text": "caf\xe9"}', "[1, 2]")
    assert [(r.line, r.raw_bytes()) for r in jsonl] == [
        (1, b"not json {"),
        (2, b'{"review_id": "b", "movie_id": "m", "text": "caf\xe9"}'),
        (3, b"[1, 2]"),
    ]
    assert jsonl[1].reason.startswith("not UTF-8: byte 0xe9")
    assert message_of(jsonl[0], SETTINGS) == (None, b"not json {", producing.Problem.of(jsonl[0].reason))

    csv = tmp_path / "reviews.csv"
    csv.write_bytes(
        b'id,movie_id,review\r\nc1,m1,"two\r\nlines"\r\nc2,m1,"x"y\r\nc3,m1\r\nc4,m1,caf\xe9\r\nc5,m1,ok\r\n'
    )
    rows = list(read_records(csv))
    assert rows[0] == ReviewRow("c1", "m1", "two\r\nlines", line=2)
    assert [(r.line, r.raw_bytes()) for r in rows[1:4]] == [(4, b'c2,m1,"x"y'), (5, b"c3,m1"), (6, b"c4,m1,caf\xe9")]
    assert rows[4] == ReviewRow("c5", "m1", "ok", line=7)


# --- sending: one record's failure is that record's, a broker's failure ends the run with what was sent known ----


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_callback(self, fn):
        if self.error is None:
            fn(None)

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)


class FakeProducer:
    """Refuses values over ``refuse_over`` bytes when they are sent, fails ``fail_later`` ids on delivery, and stops
    answering at the ``dies_at``-th send."""

    def __init__(self, refuse_over=10_000, fail_later=(), dies_at=None) -> None:
        self.refuse_over, self.fail_later, self.dies_at = refuse_over, fail_later, dies_at
        self.values: list[bytes] = []
        self.closed = False

    def send(self, topic, key=None, value=None):
        if self.dies_at is not None and len(self.values) + 1 >= self.dies_at:
            raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")
        if len(value) > self.refuse_over:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes when serialized")
        if any(i.encode() in value for i in self.fail_later):
            return FakeFuture(MessageSizeTooLargeError("the broker said so"))
        self.values.append(value)
        return FakeFuture(None)

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


@pytest.fixture()
def fake_producer(monkeypatch):
    def install(**kwargs) -> FakeProducer:
        producer = FakeProducer(**kwargs)
        monkeypatch.setattr(producing, "_producer", lambda settings: producer)
        return producer

    return install


def produce(rows, **kwargs) -> tuple[ProduceReport, list[tuple]]:
    skips: list[tuple] = []
    report = produce_reviews(SETTINGS, rows, progress=False, on_skip=lambda *skip: skips.append(skip), **kwargs)
    return report, skips


def test_a_record_the_client_or_broker_refuses_is_skipped_by_line_and_the_rest_is_sent(fake_producer):
    producer = fake_producer(refuse_over=500, fail_later=["later"])
    long_id = ReviewRow("r2", "tt1", "b" * 600, line=2)  # valid for the worker, refused by this producer
    rows = [ReviewRow("r1", "tt1", "a", line=1), long_id, ReviewRow("later", "tt1", "c", line=3)]
    rows.append(ReviewRow("r4", "tt1", "d", line=4))
    report, skips = produce(rows)
    assert report.sent == 2  # the third was handed over, and refused on delivery
    assert [(line, reason.split(":")[0]) for line, reason in skips] == [(2, "not sent"), (3, "not sent")]
    assert (
        skips[0][1]
        == f"not sent: message is {len(message_of(long_id, SETTINGS)[1]):,} bytes, more than Kafka takes (MessageSizeTooLargeError)"
    )
    assert report.summary() == "sent 2, skipped 2 (not sent (MessageSizeTooLargeError): 2)"
    assert producer.closed


def test_rows_over_the_limits_are_reported_by_line_and_counted_and_the_rest_is_sent(fake_producer):
    producer = fake_producer()
    rows = [
        ReviewRow("r1", "tt1", "a", line=1),
        ReviewRow("r2", "tt1", "b" * 72_000, line=2),
        BadRow(3, "not JSON: Expecting value: line 1 column 1 (char 0)", "nope"),
        ReviewRow("r4", "tt1", "c", line=4),
    ]
    report, skips = produce(rows)
    assert skips == [
        (2, "text is 72,000 characters; the worker takes at most 50,000"),
        (3, "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ]
    assert [json.loads(v)["review_id"] for v in producer.values] == ["r1", "r4"]
    assert report.summary() == "sent 2, skipped 2 (text too long: 1, not JSON: 1)"


def test_send_invalid_sends_what_the_worker_dead_letters_and_raw_bytes_for_unreadable_rows(fake_producer):
    producer = fake_producer(refuse_over=100_000)
    rows = [
        ReviewRow("r1", "tt1", "b" * 72_000, line=1),
        BadRow(2, "not JSON: Expecting value", "not json"),
        ReviewRow("r3", None, "no film", line=3),
    ]
    report, skips = produce(rows, send_invalid=True)
    assert skips == []
    assert producer.values[1] == b"not json"
    assert json.loads(producer.values[2]) == {"review_id": "r3", "text": "no film"}
    assert report.summary() == "sent 3 (of them 3 invalid, for the dead-letter topic), skipped 0"


def test_a_broker_that_stops_answering_ends_the_run_with_what_was_sent_known(fake_producer):
    producer = fake_producer(dies_at=3)
    rows = [ReviewRow(f"r{i}", "tt1", "text", line=i) for i in range(1, 6)]
    with pytest.raises(UserError, match="did not answer within"):
        produce(rows)
    assert producer.closed and len(producer.values) == 2


def test_ctrl_c_keeps_what_was_sent(fake_producer):
    producer = fake_producer()
    report = ProduceReport()

    def rows():
        yield ReviewRow("r1", "tt1", "text", line=1)
        yield ReviewRow("r2", "tt1", "x" * 60_000, line=2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        produce_reviews(SETTINGS, rows(), progress=False, report=report)
    assert producer.closed and report.summary() == "sent 1, skipped 1 (text too long: 1)"


# --- the command against a real broker ------------------------------------------------------------------------


def sentiment(*args: str, broker_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env["SENTIMENT_BROKER"] = broker_url
    return subprocess.run(
        [sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


@pytest.mark.integration
@pytest.mark.parametrize("send_invalid", [False, True], ids=["skip-invalid", "send-invalid"])
def test_produce_sends_every_valid_row_around_oversized_and_broken_ones(broker, tmp_path, send_invalid):
    topic = f"reviews-produce-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], 4)
    huge, long = event("huge", "h" * 2_000_000), event("long", "l" * 72_000)
    lines = [event("ok1", "Loved it."), huge, event("ok2", "Dull."), long, "this is not JSON", event("ok3", "Fine.")]
    path = tmp_path / "attack.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = sentiment("produce", str(path), "--topic-reviews", topic, *(["--send-invalid"] * send_invalid),
                     broker_url=broker.url)  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout.strip().splitlines()
    skipped = [line for line in done.stderr.splitlines() if ": skipped: " in line]
    if send_invalid:
        # the worker's limits do not hold these back; the 2 MB message is more than the client sends at all
        assert skipped == [
            f"{path}:2: skipped: not sent: message is {len(compact(huge)):,} bytes, more than Kafka takes "
            "(MessageSizeTooLargeError)"
        ]
        assert out[-1].startswith(
            "sent 5 (of them 2 invalid, for the dead-letter topic), skipped 1 (not sent (MessageSizeTooLargeError): 1)"
        )
        expected = {lines[0], lines[2], long, "this is not JSON", lines[5]}
    else:
        assert skipped == [
            f"{path}:2: skipped: message is {len(compact(huge)):,} bytes; the worker takes at most 1,000,000",
            f"{path}:4: skipped: text is 72,000 characters; the worker takes at most 50,000",
            f"{path}:5: skipped: not JSON: Expecting value: line 1 column 1 (char 0)",
        ]
        assert out[-1] == (
            f"sent 3, skipped 3 (message too large: 1, text too long: 1, not JSON: 1) to {topic} at {broker.bootstrap}"
        )
        expected = {lines[0], lines[2], lines[5]}
    assert f"{len(skipped)} {'row was' if send_invalid else 'rows were'} skipped (lines above)" in done.stderr

    arrived = collect_values(Settings(broker=broker.url), topic, lambda v: len(v) >= len(expected), timeout=20)
    assert sorted(
        r.value for r in arrived
    ) == sorted(  # every row once: an event as the producer encodes it, the rest raw
        compact(v) if v.startswith("{") else v.encode() for v in expected
    )


def start_produce(*args: str, broker_url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env["SENTIMENT_BROKER"] = broker_url
    return subprocess.Popen(
        [sys.executable, "-m", "sentiment", "produce", "-", "--quiet", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def feed(proc: subprocess.Popen, *lines: str) -> None:
    proc.stdin.write("".join(line + "\n" for line in lines))
    proc.stdin.flush()


@pytest.mark.integration
def test_ctrl_c_ends_with_the_final_line_of_what_was_sent(broker):
    topic = f"reviews-produce-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], 4)
    proc = start_produce("--topic-reviews", topic, broker_url=broker.url)
    feed(proc, event("a", "Loved it."), event("b", "Dull."), event("long", "l" * 72_000), event("c", "Fine."))
    arrived = collect_values(Settings(broker=broker.url), topic, lambda v: len(v) >= 3, timeout=30)
    assert len(arrived) == 3
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "standard input:3: skipped: text is 72,000 characters; the worker takes at most 50,000" in err
    assert out.strip().splitlines()[-1] == f"sent 3, skipped 1 (text too long: 1) to {topic} at {broker.bootstrap}"
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.integration
def test_a_broker_that_goes_away_ends_the_run_fast_after_the_final_line(tmp_path):
    own = LocalBroker(tmp_path).start()  # this test stops its broker
    try:
        create_topics(own.bootstrap, ["reviews"], 4)
        proc = start_produce(broker_url=own.url)
        feed(proc, event("a", "Loved it."), event("b", "Dull."))
        assert len(collect_values(Settings(broker=own.url), "reviews", lambda v: len(v) >= 2, timeout=30)) == 2
    finally:
        own.stop()
    gone = time.monotonic()
    feed(proc, event("c", "Fine."))
    proc.stdin.close()
    proc.wait(timeout=60)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert time.monotonic() - gone < 20, f"took {time.monotonic() - gone:.1f} s after the broker went away"
    assert proc.returncode == 1, err
    assert out.strip().splitlines()[-1] == f"sent 2, skipped 0, not delivered 1 to reviews at {own.bootstrap}"
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "cannot reach the Kafka broker" in lines[0], err


@pytest.mark.integration
def test_consume_without_from_beginning_starts_at_the_true_end_of_multi_record_batches(broker):
    """Tansu's ListOffsets(latest) is the start of the last batch + 1 when a batch holds several records: reading
    "from the end" showed the rest of that batch as new. The end is the Fetch high watermark."""
    from kafka import KafkaProducer

    from sentiment.producing import consume_topic

    topic = f"consume-end-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], 1)
    settings = Settings(broker=broker.url)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers(), linger_ms=200, batch_size=1 << 20)
    for i in range(50):  # one partition, a few large batches
        producer.send(topic, f"old-{i}".encode())
    producer.flush()
    assert len(collect_values(settings, topic, lambda v: len(v) >= 50, timeout=20)) == 50

    shown: list[bytes] = []

    def read() -> None:
        for record in consume_topic(settings, topic, idle_timeout=6):
            shown.append(record.value)

    import threading

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(3)  # the reader has found the end and waits
    for i in range(3):
        producer.send(topic, f"new-{i}".encode())
    producer.flush()
    producer.close()
    reader.join(30)
    assert shown == [b"new-0", b"new-1", b"new-2"], shown[:5]
