import json

import numpy as np
import pytest

from schemas import validator
from stream.ingest.batch import BatchScorer, Incoming, dead_letter_headers


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


def test_a_review_the_model_cannot_read_is_published_marked_not_judged(scorer):
    """A Chinese review shares no n-gram with the English model: its event keeps the model's score (nothing is made
    up) but says readable false, known share 0, in schema version 3; an English review is readable."""
    texts = [
        "这部电影非常好看，演员的表演很出色。",
        "An absolute masterpiece, I loved it.",
        "Ce film était vraiment magnifique.",
    ]
    batch = BatchScorer(scorer, max_text_chars=1000, max_message_bytes=10_000, min_known_share=0.3)
    result = batch.process([_msg({"review_id": f"r{i}", "movie_id": "tt1", "text": t}) for i, t in enumerate(texts)])
    events = [json.loads(s.to_json()) for s in result.sentiments]
    for event in events:
        validator("sentiment").validate(event)
        assert event["schema_version"] == 3
    chinese, english, french = events
    assert (chinese["readable"], chinese["known_share"]) == (False, 0.0)
    assert chinese["score"] == pytest.approx(float(scorer.score([texts[0]])[0]), abs=1e-6)
    assert english["readable"] is True and english["known_share"] > 0.8
    assert french["readable"] is False and 0 < french["known_share"] < 0.3  # a few words it knows ("film")


def test_scores_are_probabilities(scorer):
    scores = scorer.score(["", "!!!", "good " * 5000, "映画"])
    assert scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_a_message_whose_timestamp_is_no_date_is_set_aside(scorer):
    """Kafka takes any 64-bit timestamp; one past the year 9999 cannot be an event time (nor a database value)."""
    batch = BatchScorer(scorer, max_text_chars=1000, max_message_bytes=10_000)
    late = _msg({"review_id": "late", "movie_id": "tt1", "text": "good"}, 3)._replace(timestamp=253_402_300_800.0)
    ok = _msg({"review_id": "ok", "movie_id": "tt1", "text": "good"}, 4)
    result = batch.process([late, ok])
    assert [s.review_id for s in result.sentiments] == ["ok"]
    [(message, rejection)] = result.rejected
    assert message.offset == 3 and rejection.reason == "invalid_value"
    assert rejection.detail == "message timestamp 253402300800000 ms is not a date between the years 1 and 9999"


def test_a_dead_letter_carries_a_bounded_copy_and_says_how_large_the_original_was():
    from schemas import Rejection
    from stream.ingest.batch import dead_letter

    huge = Incoming(value=b"x" * 17_000_000, key=b"k", timestamp=None, topic="reviews", partition=1, offset=9)
    key, value, headers = dead_letter(huge, Rejection("too_large", "message is 17000000 bytes"), max_payload=1000)
    headers = dict(headers)
    assert key == b"k" and value == b"x" * 1000
    assert headers["dlq.size"] == b"17000000" and headers["dlq.truncated"] == b"true"
    small = Incoming(value=b"{}", key=None, timestamp=None, topic="reviews", partition=0, offset=1)
    key, value, headers = dead_letter(small, Rejection("missing_field", "review_id"), max_payload=1000)
    assert (key, value, dict(headers)["dlq.truncated"]) == (None, b"{}", b"false")


def test_a_failed_dead_letter_does_not_send_the_results_again(tmp_path):
    import asyncio

    from schemas import Rejection, Sentiment
    from stream.ingest.batch import BatchResult
    from stream.ingest.publish import ResultPublisher, Undeliverable

    sent: list[str] = []

    class Topic:
        def __init__(self, name: str, fail_times: int = 0) -> None:
            self.name, self.fail_times = name, fail_times

        def get_topic_name(self) -> str:
            return self.name

        async def maybe_declare(self) -> None:
            pass

        async def send(self, **record):
            if self.fail_times:
                self.fail_times -= 1
                raise RuntimeError("broker away")  # an outage: the batch is tried again
            sent.append(self.name)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    publisher = ResultPublisher(
        Topic("sentiments"),
        Topic("reviews.dlq", fail_times=2),
        producer=None,
        max_dead_letter_bytes=10,
        undeliverable=Undeliverable(tmp_path / "undeliverable.jsonl"),
    )

    async def send_results(topic, records):
        sent.extend(topic for _ in records)

    publisher.publisher.send = send_results
    scored = Sentiment("r", "m", 0.9, "positive", "v", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
    result = BatchResult(
        sentiments=[scored],
        rejected=[
            (
                Incoming(value=b"x" * 50, key=None, timestamp=None, topic="reviews", partition=0, offset=3),
                Rejection("invalid_json", "no"),
            )
        ],
    )
    for _ in range(2):
        try:
            asyncio.run(publisher.send(result))
        except RuntimeError:
            pass
    asyncio.run(publisher.send(result))
    assert sent.count("sentiments") == len(result.sentiments) and sent.count("reviews.dlq") == 1


def test_a_dead_letter_the_broker_refuses_is_recorded_and_skipped(tmp_path):
    """No retry can send what the broker refuses for its own sake: record it and let the partition move on."""
    import asyncio
    import json

    from aiokafka.errors import MessageSizeTooLargeError
    from prometheus_client import REGISTRY

    from schemas import Rejection
    from stream.ingest.batch import BatchResult
    from stream.ingest.publish import ResultPublisher, Undeliverable

    class Refusing:
        def get_topic_name(self) -> str:
            return "reviews.dlq"

        async def send(self, **record):
            raise MessageSizeTooLargeError("the message is 17000284 bytes")

    record = tmp_path / "undeliverable.jsonl"
    publisher = ResultPublisher(Refusing(), Refusing(), None, 100, Undeliverable(record))
    before = REGISTRY.get_sample_value("sentiment_undeliverable_total") or 0.0
    poison = Incoming(value=b"x" * 500, key=b"k", timestamp=None, topic="reviews", partition=2, offset=41)
    result = BatchResult(rejected=[(poison, Rejection("too_large", "big"))], sentiments_sent=True)
    asyncio.run(publisher.send(result))  # returns: the batch can be acked
    line = json.loads(record.read_text())
    assert (line["topic"], line["partition"], line["offset"], line["size"], line["reason"]) == (
        "reviews",
        2,
        41,
        500,
        "too_large",
    )
    assert "MessageSizeTooLargeError" in line["error"]
    assert REGISTRY.get_sample_value("sentiment_undeliverable_total") == before + 1
