"""Shared fixtures. Services are real and started here; if one cannot start, tests error out loudly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import DEFAULT_MODEL, Settings
from sentiment.local import LocalBroker, LocalPostgres, scratch_dir
from stream.ingest.topics import create_topics
from training.datasets import ReviewRow, read_reviews, shared_data_dir

ROOT = Path(__file__).resolve().parent.parent

# Fixtures that read the real IMDB data; a run that selects a test using one needs the data.
DATA_FIXTURES = {"data_dir", "imdb_test_rows", "tiny_data"}
NO_DATA = (
    "IMDB data not found (../shared/data, $SENTIMENT_DATA_DIR, ~/.local/share/sentiment/data): run "
    "`.venv/bin/sentiment data prepare PATH/aclImdb_v1.tar.gz` (or `--download`), or set SENTIMENT_DATA_DIR"
)


# Fixtures that load the model into TensorFlow, build the compiled tables, or start a service: a test that uses one
# belongs to the slow tier (`-m integration`); `./dev test -m "not integration"` is the fast one.
SLOW_FIXTURES = {
    "scorer",
    "compiled_cache",
    "fast_scorer",
    "broker",
    "postgres_url",
    "empty_database",
    "fresh_database",
    "stream_settings",
    "start_worker",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(session, config, items):
    """Mark the tests that need a slow fixture as integration; then fail the whole run at its start, in one line,
    when selected tests need the IMDB data and it is not there."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    needing = [item for item in items if DATA_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needing and shared_data_dir() is None:
        pytest.exit(f"{NO_DATA} ({len(needing)} of the selected tests read it)", returncode=4)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = scratch_dir("sentiment-tests-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def scorer():
    from model.scorer import load_scorer

    return load_scorer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def compiled_cache(workdir: Path) -> Path:
    """A cache folder holding the compiled scorer's tables for the default model, built (and numba's code compiled)
    once for the session, so that every worker started by a test starts in seconds."""
    from model.scorer import load_scorer

    cache = workdir / "cache"
    scorer = load_scorer(DEFAULT_MODEL, scoring="compiled", cache_dir=cache)
    assert scorer.scoring == "compiled", "the compiled scorer did not build: see the warning above"
    return cache


@pytest.fixture(scope="session")
def fast_scorer(compiled_cache: Path):
    from model.scorer import load_scorer

    return load_scorer(DEFAULT_MODEL, scoring="compiled", cache_dir=compiled_cache)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.fail(NO_DATA)
    return found


@pytest.fixture(scope="session")
def imdb_test_rows(data_dir: Path) -> list[ReviewRow]:
    return list(read_reviews(data_dir / "imdb_test.csv.gz"))


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[LocalBroker]:
    """A real Tansu broker for the whole session."""
    tansu = LocalBroker(workdir).start()
    yield tansu
    tansu.stop()


@pytest.fixture(scope="session")
def postgres_url(workdir: Path) -> Iterator[str]:
    """``SENTIMENT_TEST_DATABASE_URL`` if set, else a throwaway PostgreSQL cluster."""
    url = os.environ.get("SENTIMENT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = LocalPostgres(workdir / "postgres").start()
    yield pg.url
    pg.stop()


@pytest.fixture()
def empty_database(postgres_url: str) -> Iterator[str]:
    """A new PostgreSQL database of this test's own on the session's server, with no table yet; dropped after."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from stream.sql.db import make_engine

    name = f"sentiment_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def fresh_database(empty_database: str) -> str:
    """A new, migrated PostgreSQL database of this test's own on the session's server."""
    from stream.sql.db import upgrade

    upgrade(empty_database)
    return empty_database


class WorkerProcess:
    """A real ``sentiment worker`` process, with its log kept for failure messages."""

    def __init__(
        self, settings: Settings, log: Path, extra_env: dict | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.settings = settings
        self.log = log
        env = {
            **os.environ,
            "SENTIMENT_BROKER": settings.broker,
            "SENTIMENT_DATABASE_URL": settings.database_url,
            "SENTIMENT_APP_ID": settings.app_id,
            "SENTIMENT_TOPIC_REVIEWS": settings.topic_reviews,
            "SENTIMENT_TOPIC_SENTIMENTS": settings.topic_sentiments,
            "SENTIMENT_TOPIC_DLQ": settings.topic_dlq,
            "SENTIMENT_SESSION_TIMEOUT": str(settings.session_timeout),
            "SENTIMENT_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
            "SENTIMENT_BATCH_SIZE": str(settings.batch_size),
            "SENTIMENT_BATCH_WAIT": str(settings.batch_wait),
            "SENTIMENT_METRICS_PORT": str(settings.metrics_port),
            "SENTIMENT_WEB_PORT": str(settings.web_port),
            "SENTIMENT_CACHE_DIR": str(settings.cache_dir),
            **(extra_env or {}),
        }
        with open(log, "ab") as fh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sentiment", "worker", *args],
                env=env,
                cwd=log.parent,  # Faust keeps an "<app id>-data" folder in its working directory
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"worker exited with code {self.process.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture()
def stream_settings(broker: LocalBroker, fresh_database: str, compiled_cache: Path) -> Settings:
    """Settings with topics and a consumer group of this test's own, on the session's broker."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        broker=broker.url,
        database_url=fresh_database,
        app_id=f"sentiment-test-{suffix}",
        topic_reviews=f"reviews-{suffix}",
        topic_sentiments=f"sentiments-{suffix}",
        topic_dlq=f"reviews-{suffix}.dlq",
        session_timeout=3.0,
        heartbeat_interval=0.5,
        batch_size=256,
        batch_wait=0.3,
        metrics_port=0,
        web_port=0,
        cache_dir=compiled_cache,
    )
    create_topics(broker.bootstrap, [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq], 4)
    return settings


@pytest.fixture()
def start_worker(stream_settings: Settings, workdir: Path):
    workers: list[WorkerProcess] = []

    def start(
        settings: Settings = stream_settings, extra_env: dict | None = None, args: tuple[str, ...] = ()
    ) -> WorkerProcess:
        worker = WorkerProcess(settings, workdir / f"worker-{settings.app_id}-{len(workers)}.log", extra_env, args)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(predicate, timeout: float, interval: float = 0.25, on_poll=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll:
            on_poll()
        if predicate():
            return True
        time.sleep(interval)
    return False


def collect_values(settings: Settings, topic: str, stop, timeout: float, worker: WorkerProcess | None = None) -> list:
    """Read ``topic`` from the beginning until ``stop(values)`` is true or ``timeout`` passes."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop(values):
            if worker is not None:
                worker.assert_alive()
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(records)
        return values
    finally:
        consumer.close()


def probe(port: int, path: str) -> tuple[int, dict]:
    """GET a JSON endpoint of a worker on 127.0.0.1: (status, body), or (0, {}) when nothing answers."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def stored_count(url: str) -> int:
    """How many reviews the database at ``url`` holds."""
    from stream.sql.db import make_engine
    from stream.sql.queries import scored_count

    engine = make_engine(url)
    try:
        return scored_count(engine)
    finally:
        engine.dispose()


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own (the model store's unit tests)."""
    from stream.sql.db import upgrade

    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return url


@pytest.fixture()
def engine(db_url: str):
    from stream.sql.db import make_engine

    engine = make_engine(db_url)
    yield engine
    engine.dispose()
