"""The batch publisher without a broker: each result goes to its key's partition as the producer's partitioner
chooses it, the choice remembered per key only while the topic's partitions stay the same."""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import DefaultPartitioner

from stream.ingest.publish import BatchPublisher


class Cluster:
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions)


class Batch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, key, value, timestamp, headers):
        self.records.append(key)
        return object()


class Producer:
    """aiokafka's producer as the publisher uses it: its partitioner, its batches; records where each batch went."""

    def __init__(self, partitions: set[int]) -> None:
        self.client = type("Client", (), {})()
        self.client.cluster = Cluster(partitions)
        self.partitioner = DefaultPartitioner()
        self.calls = 0
        self.sent: list[tuple[int, list[bytes]]] = []

    async def partitions_for(self, topic):
        return self.client.cluster.partitions_for_topic(topic)

    def _partition(self, topic, partition, key, value, serialized_key, serialized_value):
        self.calls += 1
        every = sorted(self.client.cluster.partitions)
        return self.partitioner(serialized_key, every, every)

    def create_batch(self):
        return Batch()

    async def send_batch(self, batch, topic, partition):
        self.sent.append((partition, batch.records))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def where(producer: Producer) -> dict[bytes, int]:
    return {key: partition for partition, keys in producer.sent for key in keys}


def test_each_key_goes_to_the_partitioners_choice_and_is_hashed_once_while_the_partitions_stay():
    producer = Producer({0, 1, 2, 3})
    publisher = BatchPublisher(lambda: producer)
    films = [f"tt{i:07d}".encode() for i in range(40)]
    records = [(film, b"{}", None) for film in films * 3]

    asyncio.run(publisher.send("sentiments", records))
    asyncio.run(publisher.send("sentiments", records))
    every = [0, 1, 2, 3]
    assert where(producer) == {film: DefaultPartitioner()(film, every, every) for film in films}
    assert len(set(where(producer).values())) == 4
    assert producer.calls == len(films)  # once per film, not once per result

    producer.client.cluster.partitions = {0, 1, 2, 3, 4, 5}  # the topic grew: every key is placed again
    producer.sent.clear()
    asyncio.run(publisher.send("sentiments", records))
    every = [0, 1, 2, 3, 4, 5]
    assert where(producer) == {film: DefaultPartitioner()(film, every, every) for film in films}
    assert producer.calls == 2 * len(films)


def test_results_without_a_key_are_spread_by_the_partitioner_each_time():
    producer = Producer({0, 1, 2, 3})
    publisher = BatchPublisher(lambda: producer)
    asyncio.run(publisher.send("sentiments", [(None, b"{}", None)] * 50))
    assert producer.calls == 50
    assert sum(len(keys) for _, keys in producer.sent) == 50
