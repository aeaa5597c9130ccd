"""A Faust agent that does nothing but take micro-batches and ack them: the speed limit of Faust itself on this
broker, for bench/worker_throughput.py. Writes to OUT its rate (messages/s) from 10% to 100% of ``count`` messages.

    python bench/noop_agent.py BROKER TOPIC APP_ID COUNT OUT [BATCH]
"""

from __future__ import annotations

import sys
import time

import faust

broker, topic_name, app_id, count, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
batch = int(sys.argv[6]) if len(sys.argv) > 6 else 256
app = faust.App(
    app_id,
    broker=broker,
    broker_session_timeout=3.0,
    broker_heartbeat_interval=0.5,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    store="memory://",
)
topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
seen = {"n": 0, "t10": None}


@app.agent(topic)
async def take_and_ack(stream):
    async for events in stream.noack_take(batch, within=0.5):
        for event in events:
            await stream.ack(event)
        seen["n"] += len(events)
        if seen["t10"] is None and seen["n"] >= count // 10:
            seen["t10"] = (time.perf_counter(), seen["n"])
        if seen["n"] >= count:
            t10, n10 = seen["t10"]
            with open(out, "w") as fh:  # Faust redirects stdout into its log
                fh.write(f"{(count - n10) / (time.perf_counter() - t10):.1f}\n")
            import os

            os._exit(0)


if __name__ == "__main__":
    # INFO, not WARN: at WARN, Faust's terminal spinner lowers the root logger to DEBUG and every aiokafka request
    # builds a debug record; the worker runs without the spinner, and so does this baseline
    sys.argv = [sys.argv[0], "worker", "--loglevel", "INFO"]
    app.main()
