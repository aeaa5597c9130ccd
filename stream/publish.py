"""Send a batch of events to one topic with aiokafka's batch API, under the Faust app's own producer.

Faust's ``Topic.send`` builds a pending message, a future and callbacks per event, then aiokafka's ``send`` its own;
this builds one ``BatchBuilder`` per partition and hands each to the producer whole. The
partition of each event is the producer's own partitioner's choice for its key, the one ``Topic.send`` would
make, so an event lands where it did before: a consumer that counts on "one film, one partition" still can.
``ResultPublisher`` sends one scored batch's results with it, and its rejected messages to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from stream.batch import BatchResult, dead_letter

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]  # key, value, headers


class BatchPublisher:
    def __init__(self, producer: Callable[[], object]) -> None:
        """``producer`` returns the running ``aiokafka.AIOKafkaProducer`` (Faust starts and stops it)."""
        self._producer = producer

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        """Send every record and wait until the broker has them all; raise if any batch fails."""
        if not records:
            return
        producer = self._producer()
        await producer.partitions_for(topic)  # metadata: at once when known
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            key, value, _ = record
            # aiokafka's private step of send(): the configured partitioner over the topic's partitions
            partition = producer._partition(topic, None, key, value, key, value)
            by_partition.setdefault(partition, []).append(record)
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

    def __init__(self, sentiments, dead_letters, producer: Callable[[], object], max_dead_letter_bytes: int) -> None:
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.sentiments = sentiments
        self.topic = sentiments.get_topic_name()
        self.dead_letters = dead_letters
        self.producer = producer
        self.publisher = BatchPublisher(producer)

    async def send(self, result: BatchResult) -> None:
        """Send every event of the batch and wait until the broker has them all. Called again after a failure, it
        sends only what the broker does not have yet: the sentiments are never sent twice for a dead letter's sake."""
        if not result.sentiments_sent:
            await self.sentiments.maybe_declare()  # creates the topic as Topic.send did (once: Faust remembers)
            records = [(s.movie_id.encode(), s.to_json(), None) for s in result.sentiments]
            await self.publisher.send(self.topic, records)
            result.sentiments_sent = True
        deliveries = []
        for message, why in result.rejected:
            key, value, headers = dead_letter(message, why, self.max_dead_letter_bytes)
            deliveries.append(await self.dead_letters.send(key=key, value=value, headers=headers, force=True))
        await asyncio.gather(*deliveries)

    async def warm_up(self) -> None:
        """Learn the results topic's partitions before the first batch waits for them."""
        await self.sentiments.maybe_declare()
        await self.producer().partitions_for(self.topic)
