"""A password never reaches any output, in any form a user may write it, through any command, with or without
--debug, nor through the worker's log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
