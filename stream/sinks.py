"""Where results go: the SQL sink. It knows nothing of Kafka.

``write`` stores a batch in one transaction and is idempotent: a review id already in
``review_scores`` is skipped, and only newly stored reviews move the per-film aggregates,
so replaying events after a crash changes nothing.

On PostgreSQL the batch goes in with ``COPY`` into a temporary table and one prepared statement that inserts
the new reviews and upserts the aggregates of exactly those (one round trip for the data, one for the statement).
A live stream brings new review ids, so that statement first inserts plainly (no conflict check per row); a batch
that holds an id already stored (a replay after a crash) fails on the unique key and is written again with
``ON CONFLICT DO NOTHING``, and the sink keeps that statement until a batch comes back all new.
SQLite takes the portable path of a multi-row insert and an upsert. All give the same rows
(``tests/test_sinks.py``; ``bench/sql_sink.py`` measures them side by side).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from schemas import LABEL_POSITIVE, Sentiment
from stream.db import movie_sentiment, review_scores

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_COLUMNS = ("review_id", "movie_id", "score", "label", "model_version", "scored_at", "event_time", "uncertain")

# Inserts the copied rows that are new and moves the aggregates of exactly those, in film order (so that concurrent
# writers lock films in one order). Data-modifying CTEs run once, to completion, whether or not the outer query reads
# them; the outer query returns how many reviews were new. {skip_stored} is empty in the optimistic statement (every
# id new: a stored one raises unique_violation) and ON CONFLICT DO NOTHING in the one that skips stored ids.
_MERGE = """
WITH new AS (
    INSERT INTO review_scores ({columns})
    SELECT {columns} FROM incoming_scores
    {skip_stored}
    RETURNING movie_id, score, label, uncertain
), sums AS (
    SELECT movie_id, count(*) AS n, count(*) FILTER (WHERE label = 'positive') AS positive,
           count(*) FILTER (WHERE uncertain) AS uncertain, sum(score) AS total
    FROM new GROUP BY movie_id
), upserted AS (
    INSERT INTO movie_sentiment AS m
        (movie_id, review_count, positive_count, uncertain_count, score_sum, mean_score, rating, updated_at)
    SELECT movie_id, n, positive, uncertain, total, total / n, 1 + 9 * total / n, now() FROM sums ORDER BY movie_id
    ON CONFLICT (movie_id) DO UPDATE SET
        review_count = m.review_count + EXCLUDED.review_count,
        positive_count = m.positive_count + EXCLUDED.positive_count,
        uncertain_count = m.uncertain_count + EXCLUDED.uncertain_count,
        score_sum = m.score_sum + EXCLUDED.score_sum,
        mean_score = (m.score_sum + EXCLUDED.score_sum) / (m.review_count + EXCLUDED.review_count),
        rating = 1 + 9 * (m.score_sum + EXCLUDED.score_sum) / (m.review_count + EXCLUDED.review_count),
        updated_at = EXCLUDED.updated_at
    RETURNING 1
)
SELECT count(*) FROM new
"""
_MERGE_NEW = _MERGE.format(columns=", ".join(_COLUMNS), skip_stored="")
_MERGE_SKIPPING_STORED = _MERGE.format(columns=", ".join(_COLUMNS), skip_stored="ON CONFLICT (review_id) DO NOTHING")
_COPY_INTO_INCOMING = f"COPY incoming_scores ({', '.join(_COLUMNS)}) FROM STDIN"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(results: Sequence[Sentiment]) -> str:
    """The batch in COPY's text format, one line per result. Timestamps go as RFC 3339 text (PostgreSQL parses it
    faster than Python); a float's repr reads back exactly. Only a batch whose ids hold a tab, a line break or a
    backslash pays for escaping: the counts of separators show it."""
    lines = "".join(
        [
            f"{r.review_id}\t{r.movie_id}\t{r.score!r}\t{r.label}\t{r.model_version}\t{r.scored_at}\t{r.event_time}\t"
            f"{'t' if r.uncertain else 'f'}\n"
            for r in results
        ]
    )
    n = len(results)
    if lines.count("\t") == 7 * n and lines.count("\n") == n and "\\" not in lines and "\r" not in lines:
        return lines
    return "".join(
        [
            "\t".join(
                (
                    r.review_id.translate(_COPY_ESCAPES),
                    r.movie_id.translate(_COPY_ESCAPES),
                    repr(r.score),
                    r.label.translate(_COPY_ESCAPES),
                    r.model_version.translate(_COPY_ESCAPES),
                    r.scored_at.translate(_COPY_ESCAPES),
                    r.event_time.translate(_COPY_ESCAPES),
                    "t" if r.uncertain else "f",
                )
            )
            + "\n"
            for r in results
        ]
    )


class SqlSink:
    def __init__(self, engine: Engine, use_copy: bool | None = None) -> None:
        if engine.dialect.name not in _INSERTS:
            raise ValueError(f"unsupported database {engine.dialect.name!r}: use PostgreSQL (or SQLite locally)")
        self.engine = engine
        self._insert = _INSERTS[engine.dialect.name]
        is_psycopg = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self.use_copy = is_psycopg if use_copy is None else use_copy and is_psycopg
        self._expect_new = True  # False after a batch held stored ids, until a batch is all new again

    def write(self, results: Sequence[Sentiment]) -> int:
        """Store a batch; returns how many reviews were new (the rest were already stored)."""
        first_by_id: dict[str, Sentiment] = {}
        for result in results:
            first_by_id.setdefault(result.review_id, result)  # the first score of a review id wins
        if not first_by_id:
            return 0
        if self.use_copy:
            return self._write_with_copy(list(first_by_id.values()))
        rows = [
            {
                "review_id": r.review_id,
                "movie_id": r.movie_id,
                "score": r.score,
                "label": r.label,
                "model_version": r.model_version,
                "scored_at": _parse_time(r.scored_at),
                "event_time": _parse_time(r.event_time),
                "uncertain": r.uncertain,
            }
            for r in first_by_id.values()
        ]
        store_new = (
            self._insert(review_scores)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["review_id"])
            .returning(
                review_scores.c.movie_id, review_scores.c.score, review_scores.c.label, review_scores.c.uncertain
            )
        )
        with self.engine.begin() as conn:
            stored = conn.execute(store_new).all()
            aggregates = _aggregate(stored)
            if aggregates:
                conn.execute(self._upsert_aggregates(aggregates))
        return len(stored)

    def _write_with_copy(self, results: list[Sentiment]) -> int:
        if self._expect_new:
            try:
                return self._copy_and_merge(results, _MERGE_NEW)
            except psycopg.errors.UniqueViolation:
                self._expect_new = False  # a replay: this batch (and the next ones, likely) hold stored ids
        new = self._copy_and_merge(results, _MERGE_SKIPPING_STORED)
        self._expect_new = new == len(results)
        return new

    def _copy_and_merge(self, results: list[Sentiment], merge: str) -> int:
        with self.engine.connect() as conn:
            info = conn.connection.info
            try:
                with conn.begin():
                    cursor = conn.connection.driver_connection.cursor()
                    if not info.get("incoming_scores"):  # once per connection (each statement costs a round trip)
                        cursor.execute(
                            "CREATE TEMP TABLE IF NOT EXISTS incoming_scores (LIKE review_scores INCLUDING DEFAULTS) "
                            "ON COMMIT DELETE ROWS"
                        )
                        info["incoming_scores"] = True
                    with cursor.copy(_COPY_INTO_INCOMING) as copy:
                        copy.write(_copy_text(results))
                    cursor.execute(merge, prepare=True)  # parsed and planned once per connection
                    return int(cursor.fetchone()[0])
            except BaseException:
                info.pop("incoming_scores", None)  # a rolled-back transaction takes the table it created with it
                raise

    def _upsert_aggregates(self, aggregates: list[dict]):
        stmt = self._insert(movie_sentiment).values(aggregates)
        table, new = movie_sentiment.c, stmt.excluded
        count = table.review_count + new.review_count
        score_sum = table.score_sum + new.score_sum
        return stmt.on_conflict_do_update(
            index_elements=["movie_id"],
            set_={
                "review_count": count,
                "positive_count": table.positive_count + new.positive_count,
                "uncertain_count": table.uncertain_count + new.uncertain_count,
                "score_sum": score_sum,
                "mean_score": score_sum / count,
                "rating": 1 + 9 * score_sum / count,
                "updated_at": new.updated_at,
            },
        )


def _aggregate(stored: Sequence[tuple[str, float, str, bool]]) -> list[dict]:
    """Per-film sums of newly stored reviews, sorted by film so concurrent writers lock in one order."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])
    for movie_id, score, label, uncertain in stored:
        acc = sums[movie_id]
        acc[0] += 1
        acc[1] += label == LABEL_POSITIVE
        acc[2] += score
        acc[3] += bool(uncertain)
    now = datetime.now(UTC)
    return [
        {
            "movie_id": movie_id,
            "review_count": int(count),
            "positive_count": int(positive),
            "uncertain_count": int(uncertain),
            "score_sum": total,
            "mean_score": total / count,
            "rating": 1 + 9 * total / count,
            "updated_at": now,
        }
        for movie_id, (count, positive, total, uncertain) in sorted(sums.items())
    ]
