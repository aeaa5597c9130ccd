"""Where results go: the SQL sink. It knows nothing of Kafka.

``write`` stores a batch in one transaction and is idempotent: a review id already in
``review_scores`` is skipped, and only newly stored reviews move the per-film aggregates,
so replaying events after a crash changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from schemas import LABEL_POSITIVE, Sentiment
from stream.db import movie_sentiment, review_scores

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class SqlSink:
    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in _INSERTS:
            raise ValueError(f"unsupported database {engine.dialect.name!r}: use PostgreSQL (or SQLite locally)")
        self.engine = engine
        self._insert = _INSERTS[engine.dialect.name]

    def write(self, results: Sequence[Sentiment]) -> int:
        """Store a batch; returns how many reviews were new (the rest were already stored)."""
        first_by_id: dict[str, Sentiment] = {}
        for result in results:
            first_by_id.setdefault(result.review_id, result)  # the first score of a review id wins
        if not first_by_id:
            return 0
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
