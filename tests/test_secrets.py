"""A password never reaches any output, in any form a user may write it, through any command, with or without
--debug, nor through the worker's log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.settings import Settings
from tests.conftest import wait_until

# Every position at once: user-info, a query parameter, libpq's sslpassword; and SASL's own setting.
URL = "postgresql+psycopg://scorer:Userinfo7pw@127.0.0.1:1/reviews?password=Query7pw&sslpassword=Sslkey7pw"
SECRETS = ("Userinfo7pw", "Query7pw", "Sslkey7pw", "Sasl7pw")
ENV = {
    "SENTIMENT_DATABASE_URL": URL,
    "SENTIMENT_TEST_DATABASE_URL": URL,
    "SENTIMENT_SASL_PASSWORD": "Sasl7pw",
    "SENTIMENT_CONNECT_TIMEOUT": "1",
}


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    return subprocess.run(
        [sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [
        ["settings"],
        ["settings", "--json"],
        ["db", "upgrade"],
        ["db", "upgrade", "--debug"],
        ["movies"],
        ["movies", "--debug"],
        ["worker", "--broker", "kafka://127.0.0.1:1"],
        ["worker", "--debug", "--broker", "kafka://127.0.0.1:1"],
    ],
    ids=" ".join,
)
def test_no_command_prints_a_password(command):
    result = run(*command)
    output = result.stdout + result.stderr
    assert output.strip(), "the command said nothing: nothing was checked"
    for secret in SECRETS:
        assert secret not in output, f"{secret} printed by `sentiment {' '.join(command)}`:\n{output}"


@pytest.mark.integration
def test_the_worker_log_masks_a_password_given_in_the_query_string(stream_settings: Settings, start_worker):
    url = stream_settings.database_url
    with_secrets = f"{url}{'&' if '?' in url else '?'}password=Query7pw"
    worker = start_worker(stream_settings.model_copy(update={"database_url": with_secrets}))
    try:
        assert wait_until(lambda: "database " in worker.tail(200) and "group " in worker.tail(200), 60), worker.tail()
        log = worker.log.read_text()
        assert "password=***" in log
        assert "Query7pw" not in log
    finally:
        worker.stop()


# Every character a URL reserves, and letters around them, in any order: a password as users write them.
passwords = st.text(alphabet="@:/%#?aZ9xQ", min_size=1, max_size=16)


def _parts(password: str) -> list[str]:
    """The runs of 3 or more characters of ``password`` that are not the reserved characters themselves."""
    return [run for run in re.split(r"[@:/%#?]+", password) if len(run) >= 3]


@settings(max_examples=300, deadline=None)
@given(password=passwords, form=st.sampled_from(["raw", "percent-encoded", "SENTIMENT_DB_PASSWORD"]))
def test_a_database_password_works_in_every_form_or_fails_naming_the_character(password, form):
    from sqlalchemy.engine import make_url

    from core.errors import UserError

    if form == "raw":
        overrides = {"database_url": f"postgresql+psycopg://scorer:{password}@db.example:5432/reviews"}
    elif form == "percent-encoded":
        overrides = {"database_url": f"postgresql+psycopg://scorer:{quote(password, safe='')}@db.example:5432/reviews"}
    else:
        overrides = {"database_url": "postgresql+psycopg://scorer@db.example:5432/reviews", "db_password": password}
    try:
        settings = Settings(**overrides)
    except UserError as exc:
        said = f"{exc.message} {exc.hint}"
        assert form == "raw" and "@" in password and "'@'" in exc.message, said
        for part in _parts(password):
            assert part not in said
        return
    url = make_url(settings.database_url)
    assert (url.host, url.username, url.database) == ("db.example", "scorer", "reviews")
    if form == "raw" and re.search(r"%[0-9a-fA-F]{2}", password):
        # the one form no program can tell from percent-encoding: read as percent-encoding, as in every URL
        assert url.password == unquote(password)
    else:
        assert url.password == password


def test_a_raw_at_in_the_url_password_fails_in_one_line_without_the_secret():
    env = {**os.environ, "SENTIMENT_DATABASE_URL": "postgresql://scorer:Kq7@Zx9/Wm4@127.0.0.1:1/reviews"}
    result = subprocess.run(
        [sys.executable, "-m", "sentiment", "settings"], capture_output=True, text=True, env=env, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "'@'" in output and "SENTIMENT_DB_PASSWORD" in output, output
    assert "Traceback" not in output
    for part in ("Kq7", "Zx9", "Wm4"):
        assert part not in output, output


def test_both_a_url_password_and_sentiment_db_password_is_an_error():
    from core.errors import UserError

    with pytest.raises(UserError) as caught:
        Settings(database_url="postgresql://scorer:one@h/db", db_password="two")
    assert "both" in caught.value.message and "one" not in caught.value.message


@pytest.mark.integration
def test_a_password_with_every_reserved_character_connects_in_both_forms(postgres_url):
    """A real PostgreSQL role whose password holds @ : / % #: it connects given percent-encoded in the URL and
    given as it is in SENTIMENT_DB_PASSWORD."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from stream.sql.db import make_engine

    password = "p@ss:w/rd%41#?x"
    role = f"scorer_{os.getpid()}"
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))  # (no quote in it)
    base = make_url(postgres_url).set(username=role, password=None).render_as_string(hide_password=False)
    head, tail = base.split("://", 1)
    try:
        for overrides in (
            {"database_url": f"{head}://{role}:{quote(password, safe='')}@{tail.split('@', 1)[1]}"},
            {"database_url": base, "db_password": password},
        ):
            engine = make_engine(Settings(**overrides).database_url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT current_user")).scalar_one() == role
            finally:
                engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
