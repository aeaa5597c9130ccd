"""The two tables users query, and the database engine.

``review_scores``: one row per review ever scored (the first score of a review id wins).
``movie_sentiment``: per-film aggregates over the rows of ``review_scores``: the mean and the counts over its
readable reviews, and how many were not readable (``unreadable_count``).
The schema itself is created by the Alembic migrations in ``stream/sql/migrations`` (``sentiment db upgrade``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    create_engine,
)
from sqlalchemy.engine import Engine

from core.errors import UserError
from core.messages import first_line, redact
from core.settings import Settings
from schemas import ID_MAX_CHARS

DATABASE_HINT = "start it, or point SENTIMENT_DATABASE_URL / --database-url at a running one"
MIGRATE_HINT = "run `sentiment db upgrade` (with the same SENTIMENT_DATABASE_URL) to create or update the tables"

metadata = MetaData()

review_scores = Table(
    "review_scores",
    metadata,
    Column("review_id", String(ID_MAX_CHARS), primary_key=True),
    Column("movie_id", String(ID_MAX_CHARS), nullable=False, index=True),
    Column("score", Float, nullable=False),
    Column("label", String(16), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=True),
    Column("uncertain", Boolean, nullable=False, server_default="false"),
    Column("known_share", Float, nullable=True),  # NULL: scored before migration 0003, not measured
    Column("readable", Boolean, nullable=False, server_default="true"),
    # the review's own star rating, 1-10 (NULL: it had none, or it was scored before migration 0004); not the film's
    # movie_sentiment.rating
    Column("reviewer_rating", SmallInteger, nullable=True),
)

movie_sentiment = Table(
    "movie_sentiment",
    metadata,
    Column("movie_id", String(ID_MAX_CHARS), primary_key=True),
    Column("review_count", Integer, nullable=False),
    Column("positive_count", Integer, nullable=False),
    Column("uncertain_count", Integer, nullable=False, server_default="0"),
    Column("score_sum", Float, nullable=False),
    Column("mean_score", Float, nullable=True),  # NULL while none of the film's reviews is readable
    Column("rating", Float, nullable=True),
    Column("unreadable_count", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and for ``:memory:``)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    return None


def without_password(text: str, password: str | None) -> str:
    """``text`` (a driver's message) with the password, and any part of it of 4 characters or more, masked: a
    driver may quote a host or a user name that a mistyped URL made of part of the password."""
    if not password:
        return text
    for size in range(len(password), 3, -1):
        for start in range(len(password) - size + 1):
            part = password[start : start + size]
            if part in text:
                text = text.replace(part, "***")
    return text


def make_engine(url: str, connect_timeout: float = 5.0, create_folder: bool = False) -> Engine:
    """An engine for ``url``; ``postgresql://`` uses psycopg 3 and gives up connecting after ``connect_timeout``.

    A SQLite file's folder is created only with ``create_folder`` (migrations), so that a read never
    leaves an empty database behind.
    """
    connect_args: dict = {}
    path = sqlite_path(url)
    if path is not None and create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg://"):
        connect_args["connect_timeout"] = max(2, round(connect_timeout))  # libpq's smallest useful value is 2 s
    return create_engine(url, pool_pre_ping=True, future=True, connect_args=connect_args)


def _alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head", connect_timeout: float = 5.0) -> None:
    """Apply the migrations up to ``revision``."""
    from alembic import command

    engine = make_engine(url, connect_timeout, create_folder=True)
    try:
        command.upgrade(_alembic_config(engine), revision)
    finally:
        engine.dispose()


def database_engine(settings: Settings, *, need_tables: bool = True) -> Engine:
    """An engine on the settings' database, checked: reachable and (with ``need_tables``) migrated to the newest
    revision. A SQLite file that does not exist is an error, never silently created."""
    from sqlalchemy.exc import SQLAlchemyError

    url = settings.database_url
    shown = redact(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UserError(f"no database at {path} ({shown})", MIGRATE_HINT)
    engine = make_engine(url, settings.connect_timeout)
    try:
        with engine.connect():
            pass
        if need_tables:
            revision = current_revision(engine)
            if revision != head_revision():
                state = "has no tables yet" if revision is None else f"is at migration {revision}, not the newest"
                raise UserError(f"the database at {shown} {state}", MIGRATE_HINT)
    except SQLAlchemyError as exc:
        engine.dispose()
        said = without_password(first_line(exc), engine.url.password)
        raise UserError(f"cannot reach the database at {shown}: {said}", DATABASE_HINT) from exc
    except UserError:
        engine.dispose()
        raise
    return engine
