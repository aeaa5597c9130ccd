"""Bad and strange input against a real worker: rejected with a reason to the dead-letter topic, or scored
and stored verbatim; the worker goes on."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer
from sqlalchemy import text

from stream.sql.db import make_engine
from stream.sql.queries import scored_count
from tests.conftest import collect_values, wait_until

pytestmark = pytest.mark.integration


def review(review_id, text_, movie="tt-odd", **extra):
    return json.dumps({"review_id": review_id, "movie_id": movie, "text": text_, **extra}).encode()


SQLISH = "'); DROP TABLE review_scores; --"
HTMLISH = "<script>alert('x')</script><img src=x onerror=alert(1)>"

DUPLICATE_KEYS = b'{"review_id": "dk1", "movie_id": "tt1", "text": "first", "review_id": "dk2", "text": "second"}'
UNKNOWN_VERSION = review("v99", "From a producer of the future.", schema_version=99)
REJECTED = {
    b"\xff\xfe\xfd": "not_utf8",
    b"{'single': 'quotes'}": "invalid_json",
    b"42": "not_an_object",
    b'{"review_id": "m1", "text": "no film"}': "missing_field",
    b'{"review_id": 7, "movie_id": "tt1", "text": "id is a number"}': "wrong_type",
    b'{"review_id": null, "movie_id": "tt1", "text": "null id"}': "wrong_type",
    b'{"review_id": "t1", "movie_id": "tt1", "text": ["a", "list"]}': "wrong_type",
    review("e1", ""): "empty_field",
    review("e2", " \n\t "): "empty_field",
    review("long", "word " * 20_000): "text_too_long",  # 100,000 characters, over the 50,000 limit
    b'{"review_id": "big", "movie_id": "tt1", "text": "' + b"a" * (5 * 1024 * 1024) + b'"}': "too_large",
    review("nul\u0000id", "A database cannot store this id."): "invalid_value",
    # the same rules as the API's (tests/test_input_rules.py)
    DUPLICATE_KEYS: "invalid_json",
    b'{"review_id": "deep", "movie_id": "tt1", "text": "x", "extra": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}": "invalid_json",
    review("surrogate", "half a pair \ud800 is no text"): "not_utf8",
    review("surrogate-film", "Fine film.", movie="tt\udfff"): "not_utf8",
    UNKNOWN_VERSION: "unknown_schema_version",
    review("v-str", "Version as a string.", schema_version="1"): "wrong_type",
}
# Kafka takes any 64-bit timestamp; this one (the year 10000) is no date, so the review has no event time
FAR_FUTURE = review("far-future", "Sent from the year 10000.")
FAR_FUTURE_MS = 253_402_300_800_000
ACCEPTED = {
    "emoji": review("emoji", "Loved it 😍🍿🎬 best film ever!!!"),
    "cjk": review("cjk", "这部电影非常好看，演员表演出色。"),
    "arabic": review("arabic", "فيلم رائع جدا"),
    "sql": review(SQLISH, SQLISH, movie=SQLISH),
    "html": review(HTMLISH, HTMLISH, movie=HTMLISH),
    "extra": review("extra", "Fine film.", lang="en", source={"app": "x"}),
    "dup-first": review("dup", "An outstanding, wonderful film.", movie="tt-dup"),
    "copy-escapes": review("tab\there\\N", "Fine film.", movie="line\nbreak\\."),  # COPY's special characters
    "version-1": review("version-1", "A film with a declared schema version.", schema_version=1),
    "nul-in-text": review("nul-in-text", "Text may hold \u0000: it is scored, never stored."),
}
DUPLICATE_LATER = review("dup", "The worst, most boring film ever made.", movie="tt-dup")


def test_bad_and_strange_input(stream_settings, start_worker):
    worker = start_worker()
    producer = KafkaProducer(bootstrap_servers=stream_settings.bootstrap_servers(), max_request_size=8 * 1024 * 1024)
    for raw in [*REJECTED, *ACCEPTED.values()]:
        producer.send(stream_settings.topic_reviews, key=b"k", value=raw)
    producer.send(stream_settings.topic_reviews, key=b"k", value=FAR_FUTURE, timestamp_ms=FAR_FUTURE_MS)
    producer.flush()
    producer.send(stream_settings.topic_reviews, key=b"k", value=DUPLICATE_LATER)  # same id, other text, later
    producer.flush()
    producer.close()

    # a dead letter carries the first SENTIMENT_DLQ_MAX_PAYLOAD_BYTES of the message (the 5 MB and 100,000-character ones)
    limit = stream_settings.dlq_max_payload_bytes
    expected = {raw[:limit]: reason for raw, reason in {**REJECTED, FAR_FUTURE: "invalid_value"}.items()}
    dead = collect_values(stream_settings, stream_settings.topic_dlq, lambda rs: len(rs) >= len(expected), 120, worker)
    got = {r.value: dict(r.headers)["dlq.reason"].decode() for r in dead}
    print(f"\nDLQ: {len(dead)} messages, reasons {sorted(got.values())}")
    assert got == expected, "every rejected message lands unchanged (up to the limit), with its reason"
    details = {r.value: dict(r.headers)["dlq.detail"].decode() for r in dead}
    assert details[DUPLICATE_KEYS] == "message has a duplicate key review_id"
    assert details[UNKNOWN_VERSION] == "schema_version: 99 is not 1, the only version known"

    ids = {json.loads(v)["review_id"] for v in ACCEPTED.values()}
    events = collect_values(
        stream_settings, stream_settings.topic_sentiments, lambda rs: len(rs) >= len(ids) + 1, 120, worker
    )
    assert {json.loads(r.value)["review_id"] for r in events} == ids

    engine = make_engine(stream_settings.database_url)
    assert wait_until(lambda: scored_count(engine) == len(ids), 30)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT review_id, movie_id FROM review_scores")).all())
        dup_score, dup_label = conn.execute(
            text("SELECT score, label FROM review_scores WHERE review_id = :id"), {"id": "dup"}
        ).one()
        dup_film = conn.execute(text("SELECT review_count FROM movie_sentiment WHERE movie_id = 'tt-dup'")).scalar_one()
    engine.dispose()
    assert stored[SQLISH] == SQLISH and stored[HTMLISH] == HTMLISH, "stored verbatim, never executed"
    assert dup_label == "positive" and dup_score > 0.5, "the first review of an id wins"
    assert dup_film == 1, "a duplicate id does not count twice"
    worker.assert_alive()
    log = worker.log.read_text(errors="replace")
    for secret in ("onerror=alert", "这部电影", "most boring film", "id is a number", "no film"):
        assert secret not in log, f"review text in the worker log: {secret!r}"
