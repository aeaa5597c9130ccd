"""What users ask of the tables, in plain SQL: the command line's top and bottom films, the page's one film, the
demo's read-back of what was scored."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

MOVIES_SQL = """
SELECT movie_id, review_count, positive_count, mean_score, rating, updated_at
FROM movie_sentiment
WHERE review_count >= :min_reviews AND mean_score IS NOT NULL
ORDER BY mean_score {direction}, review_count DESC, movie_id
LIMIT :limit
"""


def top_and_bottom_movies(engine: Engine, *, limit: int = 5, min_reviews: int = 1) -> tuple[list[dict], list[dict]]:
    with engine.connect() as conn:
        params = {"limit": limit, "min_reviews": min_reviews}
        top = [dict(r._mapping) for r in conn.execute(text(MOVIES_SQL.format(direction="DESC")), params)]
        bottom = [dict(r._mapping) for r in conn.execute(text(MOVIES_SQL.format(direction="ASC")), params)]
    return top, bottom


FILM_SQL = "SELECT * FROM movie_sentiment WHERE movie_id = :movie_id"


def film_sentiment(engine: Engine, movie_id: str) -> dict | None:
    """A film's row of ``movie_sentiment``, or None when none of its reviews is scored yet."""
    with engine.connect() as conn:
        row = conn.execute(text(FILM_SQL), {"movie_id": movie_id}).first()
    return dict(row._mapping) if row else None


def scored_count(engine: Engine) -> int:
    """How many reviews ``review_scores`` holds."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM review_scores")).scalar_one()


def scored_reviews(engine: Engine) -> tuple[tuple, list]:
    """When the first and the last review were scored, and every review's id, score, label and model version."""
    with engine.connect() as conn:
        window = tuple(conn.execute(text("SELECT min(scored_at), max(scored_at) FROM review_scores")).one())
        rows = list(conn.execute(text("SELECT review_id, score, label, model_version FROM review_scores")).all())
    return window, rows
