import dataclasses
import json

import numpy as np

from schemas import validator
from stream.batch import BatchScorer, Incoming, dead_letter_headers


def _msg(obj, offset=0) -> Incoming:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return Incoming(value=raw, key=b"tt1", timestamp=1_700_000_000.0, topic="reviews", partition=2, offset=offset)


def test_a_batch_is_scored_in_one_call_and_matches_single_scoring(scorer):
    texts = ["An absolute masterpiece, I loved it.", "Dreadful. The worst film I have ever seen.", "It was ok."]
    batch = BatchScorer(scorer, max_text_chars=1000, max_message_bytes=10_000)
    result = batch.process([_msg({"review_id": f"r{i}", "movie_id": "tt1", "text": t}) for i, t in enumerate(texts)])
    assert [s.review_id for s in result.sentiments] == ["r0", "r1", "r2"]
    singles = np.array([scorer.score([t])[0] for t in texts])
    np.testing.assert_allclose([s.score for s in result.sentiments], singles, atol=1e-5)
    assert result.sentiments[0].label == "positive" and result.sentiments[1].label == "negative"
    for s in result.sentiments:
        validator("sentiment").validate(json.loads(s.to_json()))
        assert s.event_time == "2023-11-14T22:13:20.000Z"
        assert s.model_version == scorer.version


def test_bad_messages_are_set_aside_and_the_rest_scored(scorer):
    batch = BatchScorer(scorer, max_text_chars=1000, max_message_bytes=10_000)
    result = batch.process([_msg(b"garbage", 7), _msg({"review_id": "ok", "movie_id": "tt1", "text": "good"}, 8)])
    assert [s.review_id for s in result.sentiments] == ["ok"]
    [(message, rejection)] = result.rejected
    assert message.offset == 7 and rejection.reason == "invalid_json"
    headers = dict(dead_letter_headers(message, rejection))
    assert headers["dlq.reason"] == b"invalid_json"
    assert headers["dlq.offset"] == b"7" and headers["dlq.partition"] == b"2" and headers["dlq.topic"] == b"reviews"


def test_scores_are_probabilities(scorer):
    scores = scorer.score(["", "!!!", "good " * 5000, "映画"])
    assert scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_a_message_whose_timestamp_is_no_date_is_set_aside(scorer):
    """Kafka takes any 64-bit timestamp; one past the year 9999 cannot be an event time (nor a database value)."""
    batch = BatchScorer(scorer, max_text_chars=1000, max_message_bytes=10_000)
    late = dataclasses.replace(
        _msg({"review_id": "late", "movie_id": "tt1", "text": "good"}, 3), timestamp=253_402_300_800.0
    )
    ok = _msg({"review_id": "ok", "movie_id": "tt1", "text": "good"}, 4)
    result = batch.process([late, ok])
    assert [s.review_id for s in result.sentiments] == ["ok"]
    [(message, rejection)] = result.rejected
    assert message.offset == 3 and rejection.reason == "invalid_value"
    assert rejection.detail == "message timestamp 253402300800000 ms is not a date between the years 1 and 9999"
