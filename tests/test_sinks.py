"""The SQL sink is idempotent: the same batch twice gives the same rows (SQLite and PostgreSQL); a review the model
cannot read is stored but stays out of its film's mean."""

import json

import pytest
from sqlalchemy import text

from schemas import Sentiment, utc_iso
from stream.ingest.batch import BatchScorer, Incoming
from stream.ingest.sinks import SqlSink
from stream.sql.db import make_engine, upgrade
from stream.sql.queries import top_and_bottom_movies


def _s(review_id, movie_id, score, readable=True):
    label = "positive" if score >= 0.5 else "negative"
    share = 0.8 if readable else 0.0
    return Sentiment(
        review_id, movie_id, score, label, "v1", utc_iso(), utc_iso(), known_share=share, readable=readable
    )


BATCH = [_s("a", "m1", 0.9), _s("b", "m1", 0.2), _s("c", "m2", 0.6), _s("a", "m1", 0.1)]


def _tables(engine):
    with engine.connect() as conn:
        scores = conn.execute(text("SELECT review_id, movie_id, score, label FROM review_scores ORDER BY 1")).all()
        films = conn.execute(
            text(
                "SELECT movie_id, review_count, positive_count, mean_score, rating, unreadable_count "
                "FROM movie_sentiment ORDER BY 1"
            )
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
    """SQL, and what COPY's text format gives a meaning to (tab, line breaks, backslash, its NULL marker \\N and
    end marker \\.), in a batch with ordinary ids that are stored beside them."""
    upgrade(fresh_database)
    engine = make_engine(fresh_database)
    sink = SqlSink(engine)
    nasty = ["x'); DROP TABLE review_scores;--<script>", "a\tb", "line\nbreak\r", "back\\slash", "\\N", "\\.", "é\t😀"]
    assert sink.write([_s(n, n, 0.7) for n in nasty] + [_s("plain", "m1", 0.2)]) == len(nasty) + 1
    scores, films = _tables(engine)
    assert sorted(r[0] for r in scores) == sorted([*nasty, "plain"])
    assert sorted(f[0] for f in films) == sorted([*nasty, "m1"]) and all(f[1] == 1 for f in films)
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
def test_migration_0002_keeps_the_rows_scored_before_it(empty_database):
    """A database scored under schema version 1 upgrades in place: old rows read as not uncertain, counts 0."""
    url = empty_database
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


@pytest.mark.integration
def test_replays_mixed_with_new_batches_give_the_rows_of_the_portable_path(fresh_database, tmp_path):
    """The COPY path inserts optimistically and, when a batch holds a stored id, writes it again skipping stored
    ids, until a batch comes back all new. Whatever the sequence, it must store what the plain insert path stores."""
    sequence = [
        [_s("a", "m1", 0.9), _s("b", "m2", 0.2)],  # all new
        [_s("a", "m1", 0.1), _s("c", "m1", 0.7)],  # a replayed id beside a new one
        [_s("c", "m1", 0.3)],  # all stored
        [_s("d", "m3", 0.6), _s("e", "m2", 0.8)],  # all new again
        [_s("f", "m3", 0.4), _s("e", "m2", 0.0), _s("f", "m3", 0.9)],  # a repeat in the batch and a stored id
        [_s("g", "m1", 0.5)],
        [_s("h", "m1", 0.496, readable=False), _s("i", "m4", 0.496, readable=False)],  # out of the mean
        [_s("h", "m1", 0.496, readable=False), _s("j", "m4", 0.7)],  # a replayed unreadable one beside a new one
    ]
    copy_engine = make_engine(fresh_database)
    sqlite_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(sqlite_url)
    plain_engine = make_engine(sqlite_url)
    copy_sink, plain_sink = SqlSink(copy_engine), SqlSink(plain_engine)
    assert copy_sink.use_copy and not plain_sink.use_copy
    new_counts = [(copy_sink.write(batch), plain_sink.write(batch)) for batch in sequence]
    assert new_counts == [(2, 2), (1, 1), (0, 0), (2, 2), (1, 1), (1, 1), (2, 2), (1, 1)]
    (copy_scores, copy_films), (plain_scores, plain_films) = _tables(copy_engine), _tables(plain_engine)
    assert copy_scores == plain_scores
    counts = [(f[0], f[1], f[2], f[5]) for f in copy_films]
    assert counts == [(f[0], f[1], f[2], f[5]) for f in plain_films]
    assert counts == [("m1", 3, 3, 1), ("m2", 2, 1, 0), ("m3", 2, 1, 0), ("m4", 1, 1, 1)]
    assert [f[3] for f in copy_films] == pytest.approx([f[3] for f in plain_films])
    assert copy_films[0][3] == pytest.approx((0.9 + 0.7 + 0.5) / 3)  # h, unreadable, is not in m1's mean
    copy_engine.dispose()
    plain_engine.dispose()


ENGLISH = ["A wonderful film, beautifully acted and moving.", "Dull and far too long, I was bored."]
CHINESE = "这部电影非常好看，演员的表演很出色，我强烈推荐给大家。"


def _store_reviews(scorer, sink, reviews):
    """Raw ``review`` events through the worker's batch step into the sink: the results, as the worker makes them."""
    messages = [
        Incoming(json.dumps({"review_id": r, "movie_id": m, "text": t}).encode(), topic="reviews", offset=i)
        for i, (r, m, t) in enumerate(reviews)
    ]
    results = BatchScorer(scorer, max_text_chars=10_000, max_message_bytes=100_000).process(messages).sentiments
    sink.write(results)
    return {r.review_id: r for r in results}


def _check_unreadable_kept_out_of_the_mean(url, scorer, use_copy=None):
    upgrade(url)
    engine = make_engine(url)
    sink = SqlSink(engine, use_copy=use_copy)
    reviews = [("en1", "tt1", ENGLISH[0]), ("en2", "tt1", ENGLISH[1]), ("zh1", "tt1", CHINESE), ("zh2", "tt2", CHINESE)]
    results = _store_reviews(scorer, sink, reviews)
    assert not results["zh1"].readable and results["zh1"].known_share == 0.0
    assert results["en1"].readable and results["en2"].readable
    _store_reviews(scorer, sink, reviews)  # a replay changes nothing
    english_mean = (results["en1"].score + results["en2"].score) / 2
    with engine.connect() as conn:
        films = {
            r.movie_id: r
            for r in conn.execute(
                text(
                    "SELECT movie_id, review_count, positive_count, uncertain_count, unreadable_count, mean_score, "
                    "rating FROM movie_sentiment"
                )
            )
        }
        stored = dict(conn.execute(text("SELECT review_id, readable FROM review_scores")).all())
    assert stored == {"en1": True, "en2": True, "zh1": False, "zh2": False}  # published and stored, marked
    film = films["tt1"]
    assert (film.review_count, film.positive_count, film.uncertain_count, film.unreadable_count) == (2, 1, 0, 1)
    assert film.mean_score == pytest.approx(english_mean) and film.rating == pytest.approx(1 + 9 * english_mean)
    only_chinese = films["tt2"]  # no review the model could read: no mean, and no place among the top films
    assert (only_chinese.review_count, only_chinese.unreadable_count, only_chinese.mean_score) == (0, 1, None)
    top, bottom = top_and_bottom_movies(engine, min_reviews=0)
    assert [f["movie_id"] for f in top] == [f["movie_id"] for f in bottom] == ["tt1"]
    engine.dispose()


@pytest.mark.integration
def test_an_unreadable_review_is_kept_out_of_the_mean_on_sqlite(tmp_path, fast_scorer):
    _check_unreadable_kept_out_of_the_mean(f"sqlite:///{tmp_path / 'db.sqlite'}", fast_scorer)


@pytest.mark.integration
@pytest.mark.parametrize("use_copy", [True, False], ids=["copy", "insert"])
def test_an_unreadable_review_is_kept_out_of_the_mean_on_postgres(fresh_database, fast_scorer, use_copy):
    """A Chinese review of a film with two English ones: the film's mean is the English reviews' mean, and the
    Chinese one is counted apart, on both PostgreSQL paths (COPY and merge, and the portable insert)."""
    _check_unreadable_kept_out_of_the_mean(fresh_database, fast_scorer, use_copy)


@pytest.mark.integration
def test_migration_0003_keeps_the_films_scored_before_it(empty_database):
    """A database at migration 0002 upgrades in place: its rows read as readable with no known share measured,
    its films keep their means and count no unreadable review; an unreadable review after it is counted apart."""
    url = empty_database
    upgrade(url, "0002")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO review_scores VALUES ('old', 'm1', 0.8, 'positive', 'v0', now(), now(), false);"
                "INSERT INTO movie_sentiment VALUES ('m1', 1, 1, 0.8, 0.8, 8.2, now(), 0)"
            )
        )
    upgrade(url)
    SqlSink(engine).write([_s("new", "m1", 0.496, readable=False)])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT review_id, known_share, readable FROM review_scores ORDER BY 1")).all()
        film = conn.execute(text("SELECT review_count, unreadable_count, mean_score FROM movie_sentiment")).one()
    assert [tuple(r) for r in rows] == [("new", 0.0, False), ("old", None, True)]
    assert tuple(film) == (1, 1, pytest.approx(0.8))
    engine.dispose()


def _check_reviewer_ratings(url, use_copy=None):
    """Each review's own rating is stored with its score (NULL when it had none); the first of a repeated id wins,
    rating included; ids COPY must escape are stored beside ratings and NULLs."""
    upgrade(url)
    engine = make_engine(url)
    sink = SqlSink(engine, use_copy=use_copy)
    batch = [_s("a", "m1", 0.9), _s("b", "m1", 0.2), _s("a", "m1", 0.1), _s("back\\slash\t", "m2", 0.6)]
    assert sink.write(batch, [9, None, 2, 7]) == 3
    assert sink.write([_s("c", "m2", 0.3)]) == 1  # no ratings handed in: NULL
    assert sink.write([_s("a", "m1", 0.3)], [1]) == 0  # a replay changes nothing
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT review_id, reviewer_rating FROM review_scores")).all())
    assert rows == {"a": 9, "b": None, "back\\slash\t": 7, "c": None}
    engine.dispose()


def test_reviewer_ratings_are_stored_on_sqlite(tmp_path):
    _check_reviewer_ratings(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.integration
@pytest.mark.parametrize("use_copy", [True, False], ids=["copy", "insert"])
def test_reviewer_ratings_are_stored_on_postgres(fresh_database, use_copy):
    _check_reviewer_ratings(fresh_database, use_copy)


@pytest.mark.integration
def test_migration_0004_leaves_the_rows_scored_before_it_without_a_rating(empty_database):
    url = empty_database
    upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO review_scores VALUES ('old', 'm1', 0.8, 'positive', 'v0', now(), now(), false, 0.7, true)"
            )
        )
    upgrade(url)
    SqlSink(engine).write([_s("new", "m1", 0.9)], [10])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT review_id, reviewer_rating FROM review_scores ORDER BY 1")).all()
    assert [tuple(r) for r in rows] == [("new", 10), ("old", None)]
    engine.dispose()
