"""A Faust agent that does nothing but take micro-batches and ack them: the speed limit of Faust itself on this
broker, for bench/worker_throughput.py and bench/throughput_goals.py. Writes to OUT its rate (messages/s) from 10%
to 100% of ``count`` messages, and the CPU milliseconds it spent per message over the same stretch.

    python bench/noop_agent.py BROKER TOPIC APP_ID COUNT OUT [BATCH] [--lean]

Stock (the default): Faust 0.15 as it comes, ``noack_take(BATCH, within=0.5)``. ``--lean``: the worker's own path
with scoring switched off: the consumer, stream and monitor of stream/ingest/consumer.py with the worker's fetch settings,
``take_batches(BATCH, 0.1)`` and ``ack_batch``, as the worker acks.
"""

from __future__ import annotations

import os
import sys
import time

import faust

args = [a for a in sys.argv[1:] if a != "--lean"]
lean = "--lean" in sys.argv
broker, topic_name, app_id, count, out = args[0], args[1], args[2], int(args[3]), args[4]
batch = int(args[5]) if len(args) > 5 else 256
options = {}
if lean:
    from core.settings import Settings
    from stream.ingest.consumer import lean_app_options

    defaults = Settings()
    options = lean_app_options(True) | {
        "consumer_max_fetch_size": defaults.fetch_max_bytes,
        "stream_buffer_maxsize": defaults.stream_buffer,
    }
app = faust.App(
    app_id,
    broker=broker,
    broker_session_timeout=3.0,
    broker_heartbeat_interval=0.5,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    store="memory://",
    **options,
)
if lean:
    from stream.ingest.consumer import tuned_consumer

    app.transport.Consumer = tuned_consumer(defaults.fetch_max_wait_ms, lean=True)
topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
seen = {"n": 0, "t10": None}


@app.agent(topic)
async def take_and_ack(stream):
    batches = stream.take_batches(batch, 0.1) if lean else stream.noack_take(batch, within=0.5)
    async for events in batches:
        if lean:
            await stream.ack_batch(events)  # the worker's acks: by offset, a batch at a time
        else:
            for event in events:
                await stream.ack(event)
        seen["n"] += len(events)
        if seen["t10"] is None and seen["n"] >= count // 10:
            seen["t10"] = (time.perf_counter(), seen["n"], time.process_time())
        if seen["n"] >= count:
            t10, n10, cpu10 = seen["t10"]
            rate = (count - n10) / (time.perf_counter() - t10)
            cpu_ms = 1000 * (time.process_time() - cpu10) / (seen["n"] - n10)  # every thread of this process
            with open(out, "w") as fh:  # Faust redirects stdout into its log
                fh.write(f"{rate:.1f} {cpu_ms:.4f}\n")
            os._exit(0)


if __name__ == "__main__":
    # INFO, not WARN: at WARN, Faust's terminal spinner lowers the root logger to DEBUG and every aiokafka request
    # builds a debug record; the worker runs without the spinner, and so does this baseline
    sys.argv = [sys.argv[0], "worker", "--loglevel", "INFO"]
    app.main()
