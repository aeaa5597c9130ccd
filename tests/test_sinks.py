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


def _check_idempotent(url, use_copy=None):
    upgrade(url)
    engine = make_engine(url)
    sink = SqlSink(engine, use_copy=use_copy)
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
@pytest.mark.parametrize("use_copy", [True, False], ids=["copy", "insert"])
def test_upsert_is_idempotent_on_postgres(fresh_database, use_copy):
    """Both PostgreSQL paths: COPY and one merging statement (the default), and the portable multi-row insert."""
    _check_idempotent(fresh_database, use_copy)


@pytest.mark.integration
def test_hostile_text_in_ids_is_stored_verbatim(fresh_database):
    engine = make_engine(fresh_database)
    sink = SqlSink(engine)
    nasty = "x'); DROP TABLE review_scores;--<script>"
    sink.write([_s(nasty, nasty, 0.7)])
    scores, films = _tables(engine)
    assert scores[0][0] == nasty and films[0][0] == nasty
    engine.dispose()


def _check_uncertain_counts(url, use_copy=None):
    upgrade(url)
    engine = make_engine(url)
    sink = SqlSink(engine, use_copy=use_copy)
    unsure = Sentiment("u1", "m9", 0.55, "positive", "v1", utc_iso(), utc_iso(), uncertain=True)
    sink.write([unsure, _s("u2", "m9", 0.95), unsure])  # the repeat of u1 counts once
    sink.write([unsure])  # and so does its replay
    with engine.connect() as conn:
        flags = conn.execute(text("SELECT review_id, uncertain FROM review_scores ORDER BY 1")).all()
        film = conn.execute(text("SELECT review_count, uncertain_count FROM movie_sentiment")).one()
    assert [tuple(r) for r in flags] == [("u1", True), ("u2", False)]
    assert tuple(film) == (2, 1)
    engine.dispose()


def test_uncertain_reviews_are_flagged_and_counted_on_sqlite(tmp_path):
    _check_uncertain_counts(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.integration
@pytest.mark.parametrize("use_copy", [True, False], ids=["copy", "insert"])
def test_uncertain_reviews_are_flagged_and_counted_on_postgres(fresh_database, use_copy):
    _check_uncertain_counts(fresh_database, use_copy)


@pytest.mark.integration
def test_migration_0002_keeps_the_rows_scored_before_it(postgres_url):
    """A database scored under schema version 1 upgrades in place: old rows read as not uncertain, counts 0."""
    import uuid

    from sqlalchemy.engine import make_url

    name = f"sentiment_migrate_{uuid.uuid4().hex[:8]}"
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url, "0001")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO review_scores VALUES ('old', 'm1', 0.52, 'positive', 'v0', now(), now());"
                    "INSERT INTO movie_sentiment VALUES ('m1', 1, 1, 0.52, 0.52, 5.68, now())"
                )
            )
        upgrade(url)
        SqlSink(engine).write([Sentiment("new", "m1", 0.5, "positive", "v1", utc_iso(), utc_iso(), uncertain=True)])
        with engine.connect() as conn:
            flags = conn.execute(text("SELECT review_id, uncertain FROM review_scores ORDER BY 1")).all()
            film = conn.execute(text("SELECT review_count, uncertain_count FROM movie_sentiment")).one()
        assert [tuple(r) for r in flags] == [("new", True), ("old", False)] and tuple(film) == (2, 1)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
def test_a_failed_copy_batch_leaves_the_connection_able_to_write(fresh_database):
    """The COPY path creates its temporary table once per connection; a batch that fails in the transaction that
    created it takes it away, and the next batch on that connection must create it again, not fail forever."""
    upgrade(fresh_database)
    engine = make_engine(fresh_database)  # one connection at a time: the pool hands the same one back
    sink = SqlSink(engine, use_copy=True)
    with pytest.raises(Exception, match="value too long"):
        sink.write([_s("x" * 300, "m1", 0.9)])  # review_id is at most 200 characters in the table
    assert sink.write([_s("a", "m1", 0.9)]) == 1
    assert sink.write([_s("b", "m1", 0.1)]) == 1
    assert _tables(engine)[1][0][:3] == ("m1", 2, 1)
    engine.dispose()
