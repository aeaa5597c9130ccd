"""Kafka clients of the command line (kafka-python): send reviews, read events.

Both check the broker first and give up after ``connect_timeout`` with a message that says what to do.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from core.errors import UserError
from core.network import broker_timeout_error, check_broker
from core.settings import Settings, kafka_client_options
from schemas import Review, encode_review, review_event, validator
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


@dataclass
class ProduceReport:
    sent: int = 0
    sent_invalid: int = 0  # rows sent unchanged although the worker will dead-letter them (--send-invalid)
    skipped: list[tuple[int | None, str]] = field(default_factory=list)  # (line, reason)
    undelivered: list[Exception] = field(default_factory=list)

    def skip_reasons(self) -> Counter:
        return Counter(reason.split(":", 1)[0] for _, reason in self.skipped)

    def summary(self) -> str:
        text = f"sent {self.sent:,}"
        if self.sent_invalid:
            text += f" (of them {self.sent_invalid:,} invalid, for the dead-letter topic)"
        text += f", skipped {len(self.skipped):,}"
        if self.skipped:
            text += " (" + ", ".join(f"{reason}: {n:,}" for reason, n in self.skip_reasons().most_common()) + ")"
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
    on_skip=None,
) -> ProduceReport:
    """Send each valid row as a ``review`` event keyed by film. A row the worker would reject is skipped and reported
    (``on_skip(line, reason)``), or with ``send_invalid`` sent as it is, so that the worker dead-letters it."""
    from kafka.errors import KafkaError
    from tqdm import tqdm

    report = ProduceReport()
    producer = _producer(settings)
    try:
        with tqdm(total=total, unit=" reviews", disable=not progress, desc=f"→ {settings.topic_reviews}") as bar:
            for row in rows:
                bar.update(1)
                problem = row.reason if isinstance(row, BadRow) else row_problem(row)
                if problem is not None and not (send_invalid and isinstance(row, ReviewRow)):
                    report.skipped.append((row.line, problem))
                    if on_skip is not None:
                        bar.clear()
                        on_skip(row.line, problem)
                    continue
                key = row.movie_id.encode() if row.movie_id else None
                value = encode_review(row_review(row))
                try:
                    future = producer.send(settings.topic_reviews, key=key, value=value)
                except KafkaError as exc:
                    raise broker_timeout_error(settings, exc) from exc
                future.add_errback(report.undelivered.append)
                report.sent += 1
                report.sent_invalid += problem is not None
            producer.flush(timeout=max(30.0, settings.connect_timeout))
    finally:
        producer.close(timeout=settings.connect_timeout)
    return report


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
            consumer.seek_to_end(*assigned)
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
