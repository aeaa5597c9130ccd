"""The lean per-event path: Faust's consumer, stream and monitor, minus what this worker does not need per message.

A small layer on Faust's public extension points (``app.transport.Consumer``, the ``Stream`` and ``Monitor``
settings), not a fork. What stock Faust 0.15 does per message, and what this layer does instead:

- ``Consumer._drain_messages`` wraps every message in ``wait_first(handler(message), suspend_flow.wait())``: four
  futures and an ``asyncio.wait`` each. :class:`LeanConsumer` drains each fetched batch partition by partition: it
  looks the conductor's handler of the partition up once per fetch and awaits it directly while the handler cannot
  block (flow control open, the producer buffer below its limit, room in every queue the partition feeds: then it
  runs to completion without yielding, so nothing can suspend the flow in between), and falls back to stock's
  ``wait_first`` when it can block. A partition read by one channel of raw bytes (the reviews topic) skips the
  handler and Faust's per-message objects too: each record goes into the channel's queue as the scorer's own
  :class:`Incoming` (with the handler's backpressure callbacks), and :meth:`LeanStream.ack_batch` acks a delivered
  batch by offset (:func:`ack_offsets`). Read offsets, gaps, ``commit_every``, the generation check and stopping on a
  rebalance are kept as stock has them.
- While backpressure (``stream_buffer_maxsize``) pauses some partitions, stock asks the fetcher for the others with a
  1 s timeout, and sleeps a fixed 1 s when all are paused: records of a partition that has drained meanwhile waited up
  to a second. Here the fetch waits at most ``PAUSED_POLL`` while anything is paused, and a fully paused consumer
  wakes on the first resumed partition instead of the fixed sleep.
- The stream's iterator takes one event per loop iteration (a ``sleep(0)`` each), runs the per-event sensors and
  feeds ``noack_take``'s buffer through a processor, one event at a time. :meth:`LeanStream.take_batches` reads the
  channel's queue directly, a whole batch per wake-up, and keeps only what acks and commits rely on (the message
  tracked as unacked, the skip of a stale generation).
- A topic of raw bytes (key and value ``bytes``, serializer ``raw``: the reviews topic) still goes through Faust's
  schema per message: the serializer registry, the raw codec and the type check, to give back the same bytes.
  :func:`lean_topic`'s topics hand the message's key and value to the event as they are.
- :class:`LeanMonitor` keeps Faust's monitor for what is read (end offsets, commit and rebalance figures) and drops
  the per-message and per-event bookkeeping nobody reads here (the worker exports its own metrics per batch).

The fetch itself is tuned by settings: ``SENTIMENT_FETCH_MAX_WAIT_MS`` (Faust fixes 1,500 ms; Tansu holds a fetch
that long when no record is there), ``SENTIMENT_FETCH_MAX_BYTES`` (per partition), ``SENTIMENT_FETCH_MAX_RECORDS``
and ``SENTIMENT_STREAM_BUFFER``. ``SENTIMENT_LEAN_PATH=false`` runs stock Faust with the same fetch settings (A/B).

Guarantees are Faust's: an event is acked only by the agent once its results are stored and published, and the
offsets committed are those of acked messages; tests/test_faults_integration.py runs unchanged on this path, and
tests/test_lean_path_integration.py kills the worker with kill -9 in the middle of batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from stream.ingest.batch import Incoming

# How long a fetch waits while backpressure pauses some partitions, and how often a fully paused consumer looks again
PAUSED_POLL = 0.05
# Messages handed to the streams between two yields to the event loop (stock: 100): heartbeats and the agent run
YIELD_EVERY = 1000


class _ConsumerThread(AIOKafkaConsumerThread):
    # How long a fetch waits at the broker when no record is there. Faust fixes 1,500 ms; Apache Kafka answers as
    # soon as a record is there, but Tansu holds the fetch for the whole wait, which made the latency at 200 reviews/s
    # p50 464 ms / p99 849 ms (bench/performance.py); at 100 ms a bare consumer sees p50 27 / p99 55 ms.
    fetch_max_wait_ms = 100

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the consumer starts (aiokafka's Fetcher)
        return consumer


class TunedConsumer(AIOKafkaConsumer):
    """Faust's own consumer with a shorter fetch wait (the stock path of the A/B)."""

    thread_class: type[_ConsumerThread] = _ConsumerThread

    def _new_consumer_thread(self) -> _ConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


class LeanConsumer(TunedConsumer):
    """Faust's consumer draining each fetch in batches (see the module's docstring)."""

    _resumed: asyncio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pressure_callbacks: dict = {}

    def _resumed_event(self) -> asyncio.Event:
        if self._resumed is None:
            self._resumed = asyncio.Event()
        return self._resumed

    def on_buffer_drop(self, tp) -> None:
        super().on_buffer_drop(tp)
        self._resumed_event().set()  # a fully paused consumer fetches again now, not after a fixed second

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        await super().on_partitions_assigned(assigned, generation_id)
        self._resumed_event().set()

    async def _wait_next_records(self, timeout: float):
        if self.app.client_only:
            return await super()._wait_next_records(timeout)
        if not self.flow_active:
            await self.wait(self.can_resume_flow)
        try:
            self.not_waiting_next_records.set()
            active = self._get_active_partitions()
            if active:
                if self._buffered_partitions:  # some are paused: do not hold their records up for the others
                    timeout = min(timeout, PAUSED_POLL)
                return await self._getmany(active_partitions=active, timeout=timeout), active
            resumed = self._resumed_event()
            resumed.clear()
            await self.wait_for_stopped(resumed, timeout=timeout if not self._buffered_partitions else PAUSED_POLL)
            return {}, active
        finally:
            self.not_waiting_next_records.set()

    async def _drain_messages(self, fetcher) -> None:  # noqa: C901 - stock's loop, batch-wise
        if self.app.client_only:
            return await super()._drain_messages(fetcher)
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                if not self.flow_active:
                    # as stock getmany: records fetched while the flow stopped are dropped, and the offsets go back
                    try:
                        await self.perform_seek()
                    except Exception as exc:  # noqa: BLE001 - stock logs it and goes on
                        self.log.warning(f"exception performing seek when flow not active {exc}")
                    continue
                if not records:
                    unset_flag(CONSUMER_FETCHING)
                    continue
                generation = self.app.consumer_generation_id
                for tp, tp_records in records.items():
                    if tp not in active and tp not in self._buffered_partitions:
                        continue
                    if not await self._deliver_partition(tp, tp_records, generation):
                        break  # the flow stopped or the generation changed: a rebalance; drop the rest
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _deliver_partition(self, tp, tp_records: list, generation: int) -> bool:
        """Hand one partition's fetched records to its streams; False when a rebalance began on the way."""
        app = self.app
        conductor = app.topics
        async with conductor._tp_to_callback_lock:  # once per partition per fetch, not per message
            handler = conductor._tp_to_callback.get(tp)
        if handler is None:
            handler = self.callback  # stock's path, which looks it up (and fails as stock does when it is not there)
        app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        to_message = self._to_message
        read_offsets = self._read_offset
        commit_every = self._commit_every
        acks_enabled = conductor.acks_enabled_for(tp.topic)
        room = self._room(tp)
        direct = self._direct_put(tp)
        if direct is not None:
            put, on_high, on_drop = direct[1:]
        topic, partition = tp.topic, tp.partition
        since_yield = 0
        offset = None
        for record in tp_records:
            if not self.flow_active or app.consumer_generation_id != generation:
                return False
            offset = record.offset
            last_read = read_offsets[tp]
            if last_read is not None and offset < last_read:
                continue  # stock drops it too (read before: a seek back)
            suspended = False
            if offset - (last_read or 0) > 1 and last_read and acks_enabled:
                await self._add_gap(tp, last_read + 1, offset)
                suspended = True
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
                suspended = True
            since_yield += 1
            if since_yield >= YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield, suspended = 0, True
            if suspended:
                if not self.flow_active or app.consumer_generation_id != generation:
                    return False
                room = self._room(tp)
                direct = self._direct_put(tp)
                if direct is not None:
                    put, on_high, on_drop = direct[1:]
            if direct is not None:
                stamp = record.timestamp
                item = (
                    generation,
                    Incoming(record.value, record.key, stamp and stamp / 1000, topic, partition, offset),
                )
                if room > 0:
                    put(item, on_pressure_high=on_high, on_pressure_drop=on_drop)
                    room -= 1
                else:
                    await self.wait_first(self._put_when_room(tp, direct, item), self.suspend_flow.wait())
                    room = self._room(tp)
            elif room > 0:
                await handler(to_message(tp, record))  # cannot block: completes without yielding to the loop
                room -= 1
            else:
                await self.wait_first(handler(to_message(tp, record)), self.suspend_flow.wait())
                room = self._room(tp)
            read_offsets[tp] = offset
        if direct is not None and offset is not None:
            app.monitor.tp_read_offsets[tp] = offset  # what on_message_in keeps, once a fetch (see LeanMonitor)
        return True

    async def _put_when_room(self, tp, direct, item) -> None:
        """What the conductor's handler does when it can block, for a direct partition: wait for flow control and
        the producer buffer, then for a free place in the queue."""
        app = self.app
        queue, put, on_high, on_drop = direct
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        if queue.full():
            app.sensors.on_topic_buffer_full(tp)
            await queue.put(item)
        else:
            put(item, on_pressure_high=on_high, on_pressure_drop=on_drop)

    def _direct_put(self, tp):
        """How a partition read by one channel of a :func:`lean_topic` of raw bytes is fed: each fetched record goes
        into that channel's queue as ``(consumer generation, Incoming)``, made straight from the record (no Faust
        message or event), with the conductor's backpressure callbacks, as ``(queue, put, on high, on drop)``; None
        for any other partition (the conductor's handler serves it). Without the handler's per-message flow-control
        wait, producer-buffer check, decode call and sets (CPU per review 0.171 -> 0.159 ms, A/B in one run), and
        without the message and event objects that acks and the scorer never needed (:meth:`LeanStream.ack_batch`
        acks by offset)."""
        channels = self.app.topics._tp_index.get(tp)
        if not channels or len(channels) != 1:
            return None
        (channel,) = channels
        if not getattr(channel, "raw_bytes", False):
            return None
        tp = TP(tp.topic, tp.partition)  # Faust's tuple: its buffer bookkeeping asserts the type (aiokafka's here)
        callbacks = self._pressure_callbacks.get(tp)
        if callbacks is None:
            consumer, sensors = self, self.app.sensors

            def on_high() -> None:
                sensors.on_topic_buffer_full(tp)
                consumer.on_buffer_full(tp)

            def on_drop() -> None:
                consumer.on_buffer_drop(tp)

            # the same two functions each time: the queue keeps the drop callback in a set until the pressure drops
            callbacks = self._pressure_callbacks[tp] = (on_high, on_drop)
        queue = channel.queue
        return (queue, queue.put_nowait_enhanced, *callbacks)

    def _room(self, tp) -> int:
        """How many messages of ``tp`` the conductor's handler takes without blocking: 0 while flow control is
        suspended or the producer buffer is over its limit, else the free places of the fullest queue it feeds."""
        app = self.app
        if not app.flow_control.is_active():
            return 0
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return 0
        channels = app.topics._tp_index.get(tp) or ()
        room = 1 << 30
        for channel in channels:
            queue = channel.queue
            if queue.maxsize > 0:
                room = min(room, queue.maxsize - queue.qsize())
        return room


class LeanStream(faust.Stream):
    """Faust's stream with :meth:`take_batches`: ``noack_take`` without the per-event iteration."""

    async def take_batches(self, max_: int, within: float) -> AsyncIterator[list]:
        """Yield lists of at most ``max_`` items, each list once it is full or ``within`` seconds after its first
        item arrived. An item is the :class:`Incoming` the consumer's direct path made (see
        :meth:`LeanConsumer._direct_put`), or, for a topic it does not serve, the Faust event. Nothing is acked: the
        caller hands each list to :meth:`ack_batch` once its results are stored (as with ``noack_take``)."""
        await self.maybe_start()
        self.enable_acks = False
        channel = self.channel
        if not isinstance(channel, faust.types.ChannelT):
            raise TypeError("take_batches reads a channel's queue; this stream iterates something else")
        queue = channel.queue
        app = self.app
        consumer = app.consumer
        add_unacked = consumer.unacked.add
        on_message_in = app.sensors.on_message_in
        acking_topics = app.topics.acking_topics
        flow_control = app.flow_control
        loop = asyncio.get_running_loop()
        try:
            while not self.should_stop:
                batch: list = []
                deadline = None
                while len(batch) < max_:
                    if queue._errors:
                        raise queue._errors.popleft()
                    if queue.empty():
                        if deadline is None:  # nothing yet: wait for the first event, looking at should_stop
                            try:
                                value = await asyncio.wait_for(queue.get(), timeout=max(within, 0.05))
                            except TimeoutError:
                                if self.should_stop:
                                    return
                                continue
                        else:
                            left = deadline - loop.time()
                            if left <= 0:
                                break
                            try:
                                value = await asyncio.wait_for(queue.get(), timeout=left)
                            except TimeoutError:
                                break
                    else:
                        value = queue.get_nowait()
                    if type(value) is tuple:  # the direct path's (generation, Incoming)
                        generation, value = value
                    else:
                        message = value.message
                        generation = message.generation_id
                    if not flow_control.is_active() or generation != app.consumer_generation_id:
                        # fetched before a rebalance: dropped unacked (stock acks it, which may let a commit pass
                        # it); whoever owns its partition now reads it again from the committed offset
                        continue
                    if type(value) is not Incoming and message.topic in acking_topics and not message.tracked:
                        message.tracked = True
                        add_unacked(message)
                        on_message_in(message.tp, message.offset, message)
                    batch.append(value)
                    if deadline is None:
                        deadline = loop.time() + within
                if batch:
                    self.events_total += len(batch)
                    yield batch
        except StopAsyncIteration:
            # Faust ends a stream's iteration by throwing this into its queue (on stop); a batch being filled then
            # stays unacked and is scored again after a restart
            return
        finally:
            self._channel_stop_iteration(channel)

    async def ack_batch(self, items: Sequence) -> None:
        """Ack a list :meth:`take_batches` gave, once its results are stored and delivered: each Faust event as
        ``Stream.ack`` does, the direct path's messages by offset, partition by partition, into the consumer's
        acked offsets (what ``Consumer.ack`` records per message, under the same lock; the commit reads only those).
        Stock's per-event sensor calls are not made (:class:`LeanMonitor` ignores them)."""
        offsets: dict[tuple[str, int], list[int]] = {}
        for item in items:
            if type(item) is Incoming:
                key = (item.topic, item.partition)
                if (found := offsets.get(key)) is None:
                    found = offsets[key] = []
                found.append(item.offset)
            else:
                await self.ack(item)
        if offsets:
            ack_offsets(self.app.consumer, offsets)


def ack_offsets(consumer, offsets: dict[tuple[str, int], list[int]]) -> int:
    """Record these offsets as acked, as ``Consumer.ack`` does one message at a time: offsets below the committed one
    and offsets acked before are left out. Returns how many were new."""
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    added = 0
    with ack_lock:
        try:
            for (topic, partition), taken in offsets.items():
                if not acks_enabled_for(topic):
                    continue
                tp = TP(topic, partition)
                committed = consumer._committed_offset[tp]
                index = consumer._acked_index[tp]
                acked = consumer._acked[tp]
                for offset in taken:
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        added += 1
            consumer._n_acked += added
        finally:
            notify(consumer._waiting_for_ack)
    return added


def incoming(item) -> Incoming:
    """A batch item as the batch scorer takes it: the direct path's :class:`Incoming` as it is, a Faust event's (or
    message's) fields copied."""
    if type(item) is Incoming:
        return item
    message = getattr(item, "message", item)
    return Incoming(
        value=message.value,
        key=message.key,
        timestamp=message.timestamp,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )


class LeanMonitor(Monitor):
    """Faust's monitor without the per-message and per-event bookkeeping (counters by topic, timings per event):
    nothing reads them in this worker, which exports its own metrics per batch (stream/observe/metrics.py)."""

    def on_message_in(self, tp, offset: int, message) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp, offset: int, stream, event) -> dict | None:
        return None

    def on_stream_event_out(self, tp, offset: int, stream, event, state: dict | None = None) -> None:
        return None

    def on_message_out(self, tp, offset: int, message) -> None:
        return None


def lean_topic(base: type[faust.Topic]) -> type[faust.Topic]:
    """``base`` whose topics of raw bytes make each event from the message's own key and value (what Faust's schema
    returns for them, without the registry and codec calls per message); other topics decode as ``base`` does."""

    class LeanTopic(base):
        def _compile_decode(self) -> None:
            super()._compile_decode()
            schema = self.schema
            raw_bytes = (
                type(schema) is faust.Schema
                and schema.key_type is bytes
                and schema.value_type is bytes
                and schema.key_serializer == "raw"
                and schema.value_serializer == "raw"
            )
            self.raw_bytes = raw_bytes
            if raw_bytes:
                create_event = self.app.create_event

                async def decode(message, *, propagate: bool = False):
                    return create_event(message.key, message.value, message.headers, message)

                self.decode = decode

    LeanTopic.__name__ = LeanTopic.__qualname__ = f"Lean{base.__name__}"
    return LeanTopic


def tuned_consumer(fetch_max_wait_ms: int, lean: bool) -> type[TunedConsumer]:
    """The consumer class for ``app.transport.Consumer``: lean or stock, with this fetch wait."""
    thread = type("TunedConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
    base = LeanConsumer if lean else TunedConsumer
    return type(base.__name__, (base,), {"thread_class": thread})


def lean_app_options(lean: bool) -> dict[str, Any]:
    """The ``faust.App`` settings of the lean path (none for stock)."""
    return {"Stream": LeanStream, "Monitor": LeanMonitor} if lean else {}
