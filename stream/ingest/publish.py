"""Send a batch of events to one topic with aiokafka's batch API, under the Faust app's own producer.

Faust's ``Topic.send`` builds a pending message, a future and callbacks per event, then aiokafka's ``send`` its own;
this builds one ``BatchBuilder`` per partition and hands each to the producer whole. The
partition of each event is the producer's own partitioner's choice for its key, the one ``Topic.send`` would
make, so an event lands where it did before: a consumer that counts on "one film, one partition" still can.
``ResultPublisher`` sends one scored batch's results with it, and its rejected messages to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from core.messages import first_line
from schemas import Rejection
from stream.ingest.batch import BatchResult, Incoming, dead_letter
from stream.observe import metrics

log = logging.getLogger("sentiment.worker")

# What the broker refuses for the record itself: sending it again cannot help.
UNSENDABLE = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
)

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]  # key, value, headers


# Keys whose partition is remembered, per topic: a film's results go where its key hashes, and hashing it again for
# every result (aiokafka's murmur2 is pure Python) cost 4% of the worker's time. Forgotten when full.
REMEMBERED_KEYS = 100_000


class BatchPublisher:
    def __init__(self, producer: Callable[[], object]) -> None:
        """``producer`` returns the running ``aiokafka.AIOKafkaProducer`` (Faust starts and stops it)."""
        self._producer = producer
        self._partitions: dict[str, tuple[object, dict[bytes, int]]] = {}  # topic -> (its partitions, key -> one)

    def _partition_of(self, producer, topic: str) -> Callable[[bytes | None, bytes], int]:
        """The producer's partitioner for ``topic``, remembered per key while the topic's partitions stay the same."""
        known = producer.client.cluster.partitions_for_topic(topic)
        partitions, memo = self._partitions.get(topic, (None, {}))
        if partitions != known or len(memo) > REMEMBERED_KEYS:
            memo = {}
            self._partitions[topic] = (known, memo)

        def partition(key: bytes | None, value: bytes) -> int:
            if key is None:  # no key: the partitioner spreads them, each its own choice
                return producer._partition(topic, None, key, value, key, value)
            found = memo.get(key)
            if found is None:
                # aiokafka's private step of send(): the configured partitioner over the topic's partitions
                found = memo[key] = producer._partition(topic, None, key, value, key, value)
            return found

        return partition

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        """Send every record and wait until the broker has them all; raise if any batch fails."""
        if not records:
            return
        producer = self._producer()
        await producer.partitions_for(topic)  # metadata: at once when known
        partition_of = self._partition_of(producer, topic)
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            key, value, _ = record
            by_partition.setdefault(partition_of(key, value), []).append(record)
        deliveries = []
        for partition, batch_records in by_partition.items():
            batch = producer.create_batch()
            for key, value, headers in batch_records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()  # full: the record goes into the next one
                    if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                        raise ValueError(f"an event of {len(value):,} bytes is larger than the producer's batch size")
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*deliveries)


class ResultPublisher:
    """Sends one batch's results: its ``sentiments`` events whole through ``BatchPublisher``, its rejected messages
    (few, and maybe large) one by one to the dead-letter topic through Faust. The topics are Faust topics."""

    def __init__(
        self,
        sentiments,
        dead_letters,
        producer: Callable[[], object],
        max_dead_letter_bytes: int,
        undeliverable: Undeliverable,
    ) -> None:
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.undeliverable = undeliverable
        self.sentiments = sentiments
        self.topic = sentiments.get_topic_name()
        self.dead_letters = dead_letters
        self.producer = producer
        self.publisher = BatchPublisher(producer)

    async def send(self, result: BatchResult) -> None:
        """Send every event of the batch and wait until the broker has them all. Called again after a failure, it
        sends only what the broker does not have yet: the sentiments are never sent twice for a dead letter's sake."""
        if not result.sentiments_sent:
            await self.sentiments.maybe_declare()  # creates the topic as Topic.send did (once: DeclaredOnceTopic)
            records = [(s.movie_id.encode(), s.to_json(), None) for s in result.sentiments]
            await self.publisher.send(self.topic, records)
            result.sentiments_sent = True
        await asyncio.gather(*(self._dead_letter(message, why) for message, why in result.rejected))

    async def _dead_letter(self, message: Incoming, why: Rejection) -> None:
        """Send one dead letter. One the broker refuses for what it is (too large, corrupt: no retry can help) is
        recorded and skipped, so that its partition moves on; an outage raises, and the batch is tried again."""
        key, value, headers = dead_letter(message, why, self.max_dead_letter_bytes)
        try:
            sent = await self.dead_letters.send(key=key, value=value, headers=headers, force=True)
            await sent
        except UNSENDABLE as exc:
            self.undeliverable.record(message, why, exc)

    async def warm_up(self) -> None:
        """Learn the results topic's partitions before the first batch waits for them."""
        await self.sentiments.maybe_declare()
        await self.producer().partitions_for(self.topic)


class Undeliverable:
    """Where a message goes that cannot even be dead-lettered: one log line, the counter
    ``sentiment_undeliverable_total``, and one JSON line in ``SENTIMENT_UNDELIVERABLE_FILE`` (topic, partition,
    offset, size, reason, error), so that nothing is skipped without a trace."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, message: Incoming, why: Rejection, error: Exception) -> None:
        line = {
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "size": len(message.value or b""),
            "reason": why.reason,
            "error": f"{type(error).__name__}: {first_line(error)}",
        }
        metrics.UNDELIVERABLE.inc()
        log.warning(
            "%s[%d]@%d (%s) could not be dead-lettered (%s): skipped, recorded in %s",
            message.topic,
            message.partition,
            message.offset,
            why.reason,
            line["error"],
            self.path,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        except OSError as exc:
            log.warning("could not write %s (%s): the log line above is the record", self.path, exc)
