"""The product end to end on real parts: Tansu, PostgreSQL, a real worker process, real IMDB reviews."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text

from schemas import validator
from sentiment.producing import produce_reviews
from stream.sql.db import make_engine
from tests.conftest import collect_values
from training.datasets import ReviewRow

pytestmark = pytest.mark.integration

N_REVIEWS = 2000


def _aggregates(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT movie_id, review_count, positive_count, mean_score, rating, unreadable_count FROM movie_sentiment"
            )
        ).all()
    return {r.movie_id: (r.review_count, r.positive_count, r.mean_score, r.rating, r.unreadable_count) for r in rows}


def test_reviews_in_scores_out_to_kafka_and_postgres(stream_settings, start_worker, imdb_test_rows, scorer):
    reviews = random.Random(2).sample(imdb_test_rows, N_REVIEWS - 1)
    # a Chinese review of a film with English ones: published and stored, marked unreadable, out of the film's mean
    chinese = ReviewRow("zh-1", reviews[0].movie_id, "这部电影非常好看，演员的表演很出色，我强烈推荐给大家。")
    reviews.append(chinese)
    worker = start_worker()
    produce_reviews(stream_settings, reviews, progress=False)

    distinct = lambda records: len({json.loads(r.value)["review_id"] for r in records})  # noqa: E731
    records = collect_values(
        stream_settings, stream_settings.topic_sentiments, lambda rs: distinct(rs) >= N_REVIEWS, 180, worker
    )
    events = [json.loads(r.value) for r in records]
    print(f"first pass: {len(events)} events, {distinct(records)} distinct review ids")
    assert distinct(records) == N_REVIEWS, worker.tail()
    assert {e["review_id"] for e in events} == {r.review_id for r in reviews}

    check = validator("sentiment")
    for event in events:
        check.validate(event)
        assert event["schema_version"] == 3
    assert [e["review_id"] for e in events if not e["readable"]] == ["zh-1"]
    assert {e["known_share"] for e in events if e["review_id"] == "zh-1"} == {0.0}
    assert {r.key.decode() for r in records} == {e["movie_id"] for e in events}, "events are keyed by film"
    # one film, one partition: the one Kafka's default (murmur2) partitioner picks for its key, as Topic.send did
    partitions = sorted({r.partition for r in records})
    assert len(partitions) > 1
    choose = DefaultPartitioner()
    for r in records:
        assert r.partition == choose(r.key, list(range(4)), list(range(4))), r.key
    assert "scored compiled (checked against TensorFlow)" in worker.log.read_text(), worker.tail()

    # the worker's scores are the model's scores
    by_id = {e["review_id"]: e for e in events}
    expected = scorer.score([r.text for r in reviews])
    got = np.array([by_id[r.review_id]["score"] for r in reviews])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(by_id[r.review_id]["model_version"] == scorer.version for r in reviews)

    engine = make_engine(stream_settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM review_scores")).scalar_one() == N_REVIEWS
    aggregates = _aggregates(engine)
    recomputed: dict[str, list] = {}
    for e in by_id.values():
        acc = recomputed.setdefault(e["movie_id"], [0, 0, 0.0, 0])
        if not e["readable"]:
            acc[3] += 1
            continue
        acc[0] += 1
        acc[1] += e["label"] == "positive"
        acc[2] += e["score"]
    assert set(aggregates) == set(recomputed)
    assert recomputed[chinese.movie_id][0] >= 1 and aggregates[chinese.movie_id][4] == 1
    for movie_id, (count, positive, total, unreadable) in recomputed.items():
        got_count, got_positive, got_mean, got_rating, got_unreadable = aggregates[movie_id]
        assert (got_count, got_positive, got_unreadable) == (count, positive, unreadable), movie_id
        assert got_mean == pytest.approx(total / count, abs=1e-9)
        assert got_rating == pytest.approx(1 + 9 * total / count, abs=1e-8)
        assert 1 <= got_rating <= 10

    # a replay of the same reviews changes nothing in SQL
    produce_reviews(stream_settings, reviews, progress=False)
    records = collect_values(
        stream_settings, stream_settings.topic_sentiments, lambda rs: len(rs) >= 2 * N_REVIEWS, 180, worker
    )
    print(f"after replay: {len(records)} events on {stream_settings.topic_sentiments}")
    assert len(records) >= 2 * N_REVIEWS, worker.tail()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM review_scores")).scalar_one() == N_REVIEWS
    assert _aggregates(engine) == aggregates
    engine.dispose()
    assert worker.stop() == 0, worker.tail()
