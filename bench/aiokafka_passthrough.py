"""A bare aiokafka consume -> produce loop, no Faust: the broker's own speed limit for bench/performance.py.
Reads TOPIC from the start in batches of BATCH, sends each message to OUT_TOPIC, waits for delivery, commits.
Writes to OUT its rate (messages/s) from 10% to 100% of ``count`` messages.

    python bench/aiokafka_passthrough.py BOOTSTRAP TOPIC OUT_TOPIC COUNT OUT [BATCH]
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main(bootstrap: str, topic: str, out_topic: str, count: int, out: str, batch: int) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"{topic}-passthrough", auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        seen, t10 = 0, None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=batch)
            deliveries = [
                await producer.send(out_topic, record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            await asyncio.gather(*deliveries)
            await consumer.commit()
            seen += len(deliveries)
            if t10 is None and seen >= count // 10:
                t10 = (time.perf_counter(), seen)
        with open(out, "w") as fh:
            fh.write(f"{(count - t10[1]) / (time.perf_counter() - t10[0]):.1f}\n")
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], args[2], int(args[3]), args[4], int(args[5]) if len(args) > 5 else 256))
