"""The lean path acks a batch by offset (``LeanStream.ack_batch`` -> ``ack_offsets``) instead of one Faust message at a
time: the consumer must end with the same acked offsets, and so commit the same offset, as Faust's own
``Consumer.ack`` gives for the same messages, whatever the offsets (repeats, gaps, below the committed one)."""

from __future__ import annotations

import asyncio

import faust
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ingest.batch import Incoming
from stream.ingest.consumer import LeanStream, ack_offsets, incoming

TOPIC = "reviews"


def consumer_of_a_new_app(acking: bool = True):
    app = faust.App("test-lean-acks", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
    if acking:
        app.topics._acking_topics.add(TOPIC)  # what subscribing an agent to the topic does
    return app.consumer


def state(consumer, tps):
    return (
        {tp: sorted(consumer._acked[tp]) for tp in tps},
        {tp: set(consumer._acked_index[tp]) for tp in tps},
        consumer._n_acked,
        {tp: consumer._new_offset(tp) for tp in tps},
    )


batches = st.lists(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60)), max_size=40),  # (partition, offset), repeats allowed
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(batches=batches, committed=st.dictionaries(st.integers(0, 2), st.integers(0, 30)), acking=st.booleans())
def test_acking_a_batch_by_offset_leaves_what_acking_each_message_leaves(batches, committed, acking):
    by_offset, one_by_one = consumer_of_a_new_app(acking), consumer_of_a_new_app(acking)
    tps = [TP(TOPIC, p) for p in range(3)]
    for consumer in (by_offset, one_by_one):
        for partition, offset in committed.items():
            consumer._committed_offset[TP(TOPIC, partition)] = offset
    for batch in batches:
        offsets: dict = {}
        for partition, offset in batch:
            offsets.setdefault((TOPIC, partition), []).append(offset)
            tp = TP(TOPIC, partition)
            one_by_one.ack(Message(TOPIC, partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp))
        ack_offsets(by_offset, offsets)
    assert state(by_offset, tps) == state(one_by_one, tps)


def test_ack_batch_acks_direct_messages_by_offset_and_faust_events_as_faust_does():
    async def run():
        consumer = consumer_of_a_new_app()
        app = consumer.app
        stream = LeanStream(app.topic(TOPIC), app=app)
        tp = TP(TOPIC, 1)
        message = ConsumerMessage(TOPIC, 1, 2, 0.0, 0, None, b"k", b"v", None, tp=tp)
        message.incref()  # one stream holds it, as the conductor's handler counts
        event = app.create_event(b"k", b"v", None, message)
        direct = [Incoming(b"v", b"k", None, TOPIC, 1, offset) for offset in (0, 1, 3)]
        await stream.ack_batch([direct[0], direct[1], event, direct[2]])
        assert message.acked
        assert sorted(consumer._acked[tp]) == [0, 1, 2, 3] and consumer._n_acked == 4
        assert consumer._new_offset(tp) == 4  # the next offset to read: the commit covers all four
        assert [incoming(item).offset for item in (*direct, event)] == [0, 1, 3, 2]

    asyncio.run(run())
