"""The two tables users query, and the database engine.

``review_scores``: one row per review ever scored (the first score of a review id wins).
``movie_sentiment``: per-film aggregates over the rows of ``review_scores``.
The schema itself is created by the Alembic migrations in ``stream/migrations`` (``sentiment db upgrade``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

review_scores = Table(
    "review_scores",
    metadata,
    Column("review_id", String(200), primary_key=True),
    Column("movie_id", String(200), nullable=False, index=True),
    Column("score", Float, nullable=False),
    Column("label", String(16), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=True),
)

movie_sentiment = Table(
    "movie_sentiment",
    metadata,
    Column("movie_id", String(200), primary_key=True),
    Column("review_count", Integer, nullable=False),
    Column("positive_count", Integer, nullable=False),
    Column("score_sum", Float, nullable=False),
    Column("mean_score", Float, nullable=False),
    Column("rating", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created, and ``postgresql://`` uses psycopg 3."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True, future=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    cfg.attributes["engine"] = make_engine(url)
    command.upgrade(cfg, revision)
