"""Kafka clients of the command line (kafka-python): send reviews, read events."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from schemas import Review, encode_review
from sentiment.datasets import ReviewRow
from sentiment.settings import Settings, kafka_client_options


def produce_reviews(
    settings: Settings, rows: Iterable[ReviewRow], *, limit: int | None = None, progress: bool = True
) -> int:
    """Send each row as a ``review`` event keyed by film; returns how many the broker acknowledged."""
    from kafka import KafkaProducer
    from tqdm import tqdm

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(),
        acks="all",
        linger_ms=20,
        max_request_size=max(settings.max_message_bytes, 1_048_576),
        client_id="sentiment-produce",
        **kafka_client_options(settings),
    )
    rows = itertools.islice(rows, limit) if limit is not None else rows
    failures: list[Exception] = []
    sent = 0
    try:
        with tqdm(total=limit, unit=" reviews", disable=not progress, desc=f"→ {settings.topic_reviews}") as bar:
            for row in rows:
                review = Review(review_id=row.review_id, movie_id=row.movie_id, text=row.text, rating=row.rating)
                future = producer.send(settings.topic_reviews, key=row.movie_id.encode(), value=encode_review(review))
                future.add_errback(failures.append)
                sent += 1
                bar.update(1)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} reviews were not delivered: {failures[0]!r}")
    return sent


def consume_topic(
    settings: Settings, topic: str, *, from_beginning: bool = False, idle_timeout: float | None = None
) -> Iterator[bytes]:
    """Values of ``topic`` from every partition (no consumer group, nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers(),
        enable_auto_commit=False,
        group_id=None,
        client_id="sentiment-consume",
        **kafka_client_options(settings),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist at {','.join(settings.bootstrap_servers())}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        idle_ms = int(idle_timeout * 1000) if idle_timeout is not None else None
        while True:
            batch = consumer.poll(timeout_ms=idle_ms if idle_ms is not None else 1000)
            if not batch:
                if idle_ms is not None:
                    return
                continue
            for records in batch.values():
                for record in records:
                    yield record.value
    finally:
        consumer.close()
