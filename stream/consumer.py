"""Faust's own Kafka consumer, with a shorter fetch wait."""

from __future__ import annotations

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

# How long a fetch may wait at the broker when no data is ready. Faust fixes 1,500 ms for its consumer; Apache Kafka
# answers as soon as a record is there, but Tansu holds each fetch until it runs out, which made the latency at
# 200 reviews/s p50 464 ms / p99 849 ms (bench/performance.py); at 100 ms a bare consumer sees p50 27 / p99 55 ms.
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts (aiokafka's Fetcher)
        return consumer


class ShortFetchWaitConsumer(AIOKafkaConsumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
