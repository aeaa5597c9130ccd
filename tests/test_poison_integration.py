"""A message larger than anything the worker may send on cannot stall its partition (the real worker, broker and
database): 2,000 reviews around one 17 MB message are all scored once, and the message is dead-lettered as a
bounded copy that says how large it was."""

from __future__ import annotations

import json
import random

import pytest
from kafka import KafkaProducer

from sentiment.producing import produce_reviews
from stream.sql.db import make_engine
from stream.sql.queries import scored_count
from tests.conftest import collect_values, wait_until

pytestmark = pytest.mark.integration

POISON_BYTES = 17_000_284


def test_a_17_mb_message_among_2000_reviews(stream_settings, start_worker, imdb_test_rows):
    reviews = random.Random(17).sample(imdb_test_rows, 2000)
    worker = start_worker()
    produce_reviews(stream_settings, reviews[:1000], progress=False)
    producer = KafkaProducer(bootstrap_servers=stream_settings.bootstrap_servers(), max_request_size=20_000_000)
    poison = json.dumps({"review_id": "poison", "movie_id": "tt-poison", "text": "x" * (POISON_BYTES - 60)}).encode()
    sent = producer.send(stream_settings.topic_reviews, key=b"tt-poison", value=poison).get(timeout=30)
    producer.close()
    produce_reviews(stream_settings, reviews[1000:], progress=False)

    # about a quarter of the 1,000 reviews sent after the poison share its partition: all of them must be scored
    expected = {r.review_id for r in reviews}
    records = collect_values(
        stream_settings,
        stream_settings.topic_sentiments,
        lambda rs: {json.loads(r.value)["review_id"] for r in rs} >= expected,
        180,
        worker,
    )
    ids = [json.loads(r.value)["review_id"] for r in records]
    dead = collect_values(stream_settings, stream_settings.topic_dlq, lambda rs: len(rs) >= 1, 60, worker)
    engine = make_engine(stream_settings.database_url)
    try:
        assert wait_until(lambda: scored_count(engine) >= len(expected), 60, on_poll=worker.assert_alive), worker.tail()
        stored = scored_count(engine)
    finally:
        engine.dispose()

    headers = {k: v.decode() for k, v in dead[0].headers}
    print(
        f"\n| 17 MB message among 2,000 reviews | scored {len(set(ids))} | duplicates {len(ids) - len(set(ids))} | "
        f"rows in SQL {stored} | DLQ {len(dead)} ({headers['dlq.reason']}, {len(dead[0].value):,} of "
        f"{int(headers['dlq.size']):,} bytes) |"
    )
    assert set(ids) == expected and len(ids) == len(expected), "lost or duplicated results"
    assert stored == len(expected)
    assert len(dead) == 1 and headers["dlq.offset"] == str(sent.offset) and headers["dlq.truncated"] == "true"
    assert int(headers["dlq.size"]) == len(poison) and len(dead[0].value) <= stream_settings.dlq_max_payload_bytes
    assert "publish failed" not in worker.tail(400)
