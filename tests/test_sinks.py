"""The SQL sink is idempotent: the same batch twice gives the same rows (SQLite and PostgreSQL)."""

import pytest
from sqlalchemy import text

from schemas import Sentiment, utc_iso
from stream.db import make_engine, upgrade
from stream.sinks import SqlSink


def _s(review_id, movie_id, score):
    return Sentiment(review_id, movie_id, score, "positive" if score >= 0.5 else "negative", "v1", utc_iso(), utc_iso())


BATCH = [_s("a", "m1", 0.9), _s("b", "m1", 0.2), _s("c", "m2", 0.6), _s("a", "m1", 0.1)]


def _tables(engine):
    with engine.connect() as conn:
        scores = conn.execute(text("SELECT review_id, movie_id, score, label FROM review_scores ORDER BY 1")).all()
        films = conn.execute(
            text("SELECT movie_id, review_count, positive_count, mean_score, rating FROM movie_sentiment ORDER BY 1")
        ).all()
    return [tuple(r) for r in scores], [tuple(r) for r in films]


def _check_idempotent(url):
    upgrade(url)
    engine = make_engine(url)
    sink = SqlSink(engine)
    assert sink.write(BATCH) == 3  # "a" twice in one batch: the first wins
    first = _tables(engine)
    assert sink.write(BATCH) == 0
    assert _tables(engine) == first
    scores, films = first
    assert scores == [("a", "m1", 0.9, "positive"), ("b", "m1", 0.2, "negative"), ("c", "m2", 0.6, "positive")]
    assert films[0][:3] == ("m1", 2, 1)
    assert films[0][3] == pytest.approx(0.55)
    assert films[0][4] == pytest.approx(1 + 9 * 0.55)
    # a later batch with one new review moves only that film's aggregate
    assert sink.write([_s("c", "m2", 0.0), _s("d", "m2", 0.0)]) == 1
    _, films = _tables(engine)
    assert films[1][:3] == ("m2", 2, 1) and films[1][3] == pytest.approx(0.3)
    engine.dispose()


def test_upsert_is_idempotent_on_sqlite(tmp_path):
    _check_idempotent(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.integration
def test_upsert_is_idempotent_on_postgres(fresh_database):
    _check_idempotent(fresh_database)


@pytest.mark.integration
def test_hostile_text_in_ids_is_stored_verbatim(fresh_database):
    engine = make_engine(fresh_database)
    sink = SqlSink(engine)
    nasty = "x'); DROP TABLE review_scores;--<script>"
    sink.write([_s(nasty, nasty, 0.7)])
    scores, films = _tables(engine)
    assert scores[0][0] == nasty and films[0][0] == nasty
    engine.dispose()
