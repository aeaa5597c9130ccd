"""Kafka clients of the command line (kafka-python): send reviews, read events.

Both check the broker first and give up after ``connect_timeout`` with a message that says what to do.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from core.errors import UserError
from core.network import broker_timeout_error, check_broker
from core.settings import Settings, kafka_client_options
from schemas import Rejection, Review, decode_review, encode_review, review_event, validator
from training.datasets import BadRow, ReviewRow


def row_review(row: ReviewRow) -> Review:
    """The review of a row: exactly the fields the row has, nothing made up (a missing one stays None and is left out
    of the event; sent with --send-invalid, the worker dead-letters it)."""
    return Review(row.review_id, row.movie_id, row.text, row.rating)  # type: ignore[arg-type]


def row_problem(row: ReviewRow) -> str | None:
    """Why the worker would reject this row's event (the schema's own rules), or None when it is valid."""
    errors = sorted(
        validator("review").iter_errors(review_event(row_review(row))), key=lambda e: (list(e.path), e.validator)
    )
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.path)
    if first.validator == "required":
        missing = [name for name in first.validator_value if name not in first.instance]
        return f"no {missing[0]}" if missing else "a required field is missing"
    if first.validator in ("minLength", "pattern"):
        return f"empty {where}"
    return f"{where}: {first.message[:120]}"


class Problem(NamedTuple):
    """Why a row is not sent: ``kind`` is counted in the final line, ``reason`` is reported with the row's line."""

    kind: str
    reason: str

    @classmethod
    def of(cls, reason: str) -> Problem:
        return cls(reason.split(":", 1)[0], reason)


def review_bytes(row: ReviewRow) -> bytes:
    """The ``review`` event of a row as sent (:func:`encode_review`). A lone surrogate, which JSON Lines can hold as an
    escape, stays escaped, so that the worker can name it."""
    review = row_review(row)
    try:
        return encode_review(review)
    except UnicodeEncodeError:
        return json.dumps(review_event(review), separators=(",", ":")).encode("ascii")


def worker_problem(row: ReviewRow, value: bytes, settings: Settings) -> Problem | None:
    """Why the worker would dead-letter ``value``, the event of ``row``, or None when it would score it: the worker's
    own decoder with the worker's limits (``max_text_chars``, ``max_message_bytes``) decides."""
    decoded = decode_review(value, max_text_chars=settings.max_text_chars, max_message_bytes=settings.max_message_bytes)
    if not isinstance(decoded, Rejection):
        return None
    if decoded.reason == "too_large":
        return Problem(
            "message too large",
            f"message is {len(value):,} bytes; the worker takes at most {settings.max_message_bytes:,}",
        )
    if decoded.reason == "text_too_long":
        return Problem(
            "text too long",
            f"text is {len(row.text or ''):,} characters; the worker takes at most {settings.max_text_chars:,}",
        )
    if reason := row_problem(row):  # the schema's rule in the words of the file's fields
        return Problem.of(reason)
    return Problem(decoded.reason.replace("_", " "), decoded.detail)


def message_of(row: ReviewRow | BadRow, settings: Settings) -> tuple[bytes | None, bytes | None, Problem | None]:
    """Key, value and problem of a row: a readable row is its ``review`` event keyed by film; a row that could not be
    read is its own bytes from the file, without a key (sent only with --send-invalid)."""
    if isinstance(row, BadRow):
        return None, row.raw_bytes(), Problem.of(row.reason)
    value = review_bytes(row)
    key = row.movie_id.encode("utf-8", "replace") if row.movie_id else None
    return key, value, worker_problem(row, value, settings)


def _record_errors() -> tuple[type[Exception], ...]:
    """kafka-python's errors that concern one record, not the broker: that record is skipped and the run goes on."""
    from kafka import errors

    return (
        errors.MessageSizeTooLargeError,
        errors.RecordListTooLargeError,
        errors.InvalidRecordError,
        errors.CorruptRecordError,
    )


def _not_sent(exc: Exception, size: int) -> Problem:
    """A record that the Kafka client (``max_request_size``) or the broker (``message.max.bytes``) refused."""
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    kind = f"not sent ({type(exc).__name__})"
    if isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError):
        return Problem(kind, f"not sent: message is {size:,} bytes, more than Kafka takes ({type(exc).__name__})")
    return Problem(kind, f"not sent: {str(exc)[:200]}")


@dataclass
class ProduceReport:
    sent: int = 0  # acknowledged by the broker
    sent_invalid: int = 0  # of them, rows the worker will dead-letter (--send-invalid)
    skipped: list[tuple[int | None, Problem]] = field(default_factory=list)  # (line, problem)
    undelivered: list[Exception] = field(default_factory=list)  # sent, never acknowledged

    def skip_reasons(self) -> Counter:
        return Counter(problem.kind for _, problem in self.skipped)

    def summary(self) -> str:
        text = f"sent {self.sent:,}"
        if self.sent_invalid:
            text += f" (of them {self.sent_invalid:,} invalid, for the dead-letter topic)"
        text += f", skipped {len(self.skipped):,}"
        if self.skipped:
            text += " (" + ", ".join(f"{reason}: {n:,}" for reason, n in self.skip_reasons().most_common()) + ")"
        if self.undelivered:
            text += f", not delivered {len(self.undelivered):,}"
        return text


def _producer(settings: Settings):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    check_broker(settings)
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers(),
            acks="all",
            linger_ms=20,
            max_request_size=max(settings.max_message_bytes, 1_048_576),
            max_block_ms=int(settings.connect_timeout * 1000),
            client_id="sentiment-produce",
            **kafka_client_options(settings),
        )
    except KafkaError as exc:
        raise broker_timeout_error(settings, exc) from exc


def produce_reviews(
    settings: Settings,
    rows: Iterable[ReviewRow | BadRow],
    *,
    total: int | None = None,
    progress: bool = True,
    send_invalid: bool = False,
    on_skip: Callable[[int | None, str], None] | None = None,
    report: ProduceReport | None = None,
) -> ProduceReport:
    """Send each valid row as a ``review`` event keyed by film. A row the worker would reject (the schema's rules and
    the worker's limits), or one that the Kafka client or broker refuses, is skipped and reported
    (``on_skip(line, reason)``); with ``send_invalid`` a row the worker would reject is sent as it is, so that the
    worker dead-letters it. Only a broker that stops answering ends the run early (a :class:`UserError`); pass
    ``report`` to know what was sent even then, or after Ctrl-C."""
    from kafka.errors import KafkaError
    from tqdm import tqdm

    report = report if report is not None else ProduceReport()
    record_errors = _record_errors()
    outcomes: queue.SimpleQueue = queue.SimpleQueue()  # (line, invalid, size, error or None), from the producer
    bar = tqdm(total=total, unit=" reviews", disable=not progress, desc=f"→ {settings.topic_reviews}")

    def skip(line: int | None, problem: Problem) -> None:
        report.skipped.append((line, problem))
        if on_skip is not None:
            bar.clear()
            on_skip(line, problem.reason)

    def settle() -> None:
        """Count the answers the broker has given so far."""
        while True:
            try:
                line, invalid, size, error = outcomes.get_nowait()
            except queue.Empty:
                return
            if error is None:
                report.sent += 1
                report.sent_invalid += invalid
            elif isinstance(error, record_errors):
                skip(line, _not_sent(error, size))
            else:
                report.undelivered.append(error)

    try:
        producer = _producer(settings)
        broker_gone = False
        try:
            for row in rows:
                bar.update(1)
                key, value, problem = message_of(row, settings)
                if problem is not None and not (send_invalid and value is not None):
                    skip(row.line, problem)
                    continue
                try:
                    future = producer.send(settings.topic_reviews, key=key, value=value)
                except record_errors as exc:
                    skip(row.line, _not_sent(exc, len(value)))
                    continue
                except KafkaError as exc:
                    raise broker_timeout_error(settings, exc) from exc
                answer = (row.line, problem is not None, len(value))
                future.add_callback(lambda _, answer=answer: outcomes.put((*answer, None)))
                future.add_errback(lambda exc, answer=answer: outcomes.put((*answer, exc)))
                settle()
            _await_answers(producer, settings, settle, report)
        except UserError:
            broker_gone = True
            raise
        finally:  # also on Ctrl-C: what the producer holds is still sent, within the connect timeout
            _close(producer, 0 if broker_gone else settings.connect_timeout)
            settle()
    finally:
        bar.close()
    return report


def _await_answers(producer, settings: Settings, settle: Callable[[], None], report: ProduceReport) -> None:
    """Wait until the broker has answered for every record sent. While answers keep coming this waits; when none came
    within ``connect_timeout``, a broker that cannot be reached ends the run at once, and one that is reached but
    silent after 30 s."""
    from kafka.errors import KafkaTimeoutError

    def answered() -> int:
        settle()
        return report.sent + len(report.skipped) + len(report.undelivered)

    last, quiet_since = answered(), time.monotonic()
    while True:
        try:
            producer.flush(timeout=settings.connect_timeout)
            return
        except KafkaTimeoutError as exc:
            if (now := answered()) > last:
                last, quiet_since = now, time.monotonic()
                continue
            check_broker(settings)
            if time.monotonic() - quiet_since >= max(30.0, settings.connect_timeout):
                raise broker_timeout_error(settings, exc) from exc


def _close(producer, timeout: float) -> None:
    """Close within ``timeout``: what the broker has not taken by then is given up (its futures fail). kafka-python's
    own close raises instead, and leaves its I/O thread running with the records."""
    from kafka.errors import KafkaTimeoutError

    try:
        producer.close(timeout=timeout)
    except KafkaTimeoutError:
        producer._sender.force_close()  # fails the pending batches (kafka-python 2.x and 3.x)
        producer._sender.join(1.0)
        try:
            producer.close(timeout=0)
        except KafkaTimeoutError:
            pass


def consume_topic(
    settings: Settings, topic: str, *, from_beginning: bool = False, idle_timeout: float | None = None
) -> Iterator:
    """Records of ``topic`` from every partition (no consumer group, nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    check_broker(settings)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers(),
            enable_auto_commit=False,
            group_id=None,
            client_id="sentiment-consume",
            **kafka_client_options(settings),
        )
        partitions = consumer.partitions_for_topic(topic) or set()
    except KafkaError as exc:
        raise broker_timeout_error(settings, exc) from exc
    try:
        if not partitions:
            raise UserError(
                f"topic {topic!r} does not exist at {','.join(settings.bootstrap_servers())}",
                "check the name (--topic, SENTIMENT_TOPIC_*), or start the worker: it creates its topics",
            )
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            seek_to_true_end(consumer, assigned, settings)
            wait = f"until {idle_timeout:g} s pass without one" if idle_timeout is not None else "until Ctrl-C"
            print(
                f"waiting for new events on {topic} {wait} (reading from its end; --from-beginning shows earlier ones)",
                file=sys.stderr,
                flush=True,
            )
        idle_ms = int(idle_timeout * 1000) if idle_timeout is not None else None
        while True:
            batch = consumer.poll(timeout_ms=idle_ms if idle_ms is not None else 1000)
            if not batch:
                if idle_ms is not None:
                    return
                continue
            for records in batch.values():
                yield from records
    finally:
        consumer.close()


def seek_to_true_end(consumer, assigned: list, settings: Settings) -> None:
    """Put each partition's position at its end: the high watermark a Fetch answers, not ListOffsets(latest), which
    Tansu answers with the start of the last batch + 1 when that batch holds several records (the last records of
    the topic were then shown as new). kafka-python learns the high watermark from its fetches: from ListOffsets'
    end (at most one batch short), fetch until every partition has told, then seek there; what those fetches
    returned was old, and is dropped."""
    from kafka.errors import KafkaError

    consumer.seek_to_end(*assigned)
    within = max(settings.connect_timeout, 5.0)
    deadline = time.monotonic() + within
    try:
        while any(consumer.highwater(tp) is None for tp in assigned) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
    except KafkaError as exc:
        raise broker_timeout_error(settings, exc) from exc
    unknown = [tp.partition for tp in assigned if consumer.highwater(tp) is None]
    if unknown:
        raise UserError(
            f"the broker did not tell the end of partition(s) {', '.join(map(str, unknown))} within {within:g} s",
            "try again, or read with --from-beginning",
        )
    for tp in assigned:
        consumer.seek(tp, consumer.highwater(tp))


def record_json(record, with_headers: bool) -> str:
    """One consumed record as a line: its value as it is, or with ``with_headers`` an object that also carries the
    headers (the dead-letter reason is there), partition and offset; a value that is not UTF-8 JSON stays a string."""
    text = (record.value or b"").decode("utf-8", "replace")
    if not with_headers:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
    out = {"partition": record.partition, "offset": record.offset, "headers": headers, "value": value}
    return json.dumps(out, ensure_ascii=False)
