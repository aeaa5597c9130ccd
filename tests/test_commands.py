"""Every command fails fast and plainly, and never invents or drops a row: what a newcomer sees first.

These run the real `sentiment` command line; the services they fail to reach are closed local ports, a socket that
accepts and never answers, and database files that are missing or unmigrated.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sentiment.local import free_port
from sentiment.producing import row_problem
from tests.conftest import ROOT
from training.datasets import BadRow, ReviewRow, prepare_cache, read_records, shared_data_dir

SAMPLE = ROOT / "model" / "sample_reviews.jsonl"


def run(*args, env_extra=None, stdin=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(env_extra or {})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sentiment", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        cwd=ROOT,
    )
    done.seconds = time.monotonic() - started
    return done


def assert_plain_failure(done, *, within: float, mentions: str):
    """Exit 1, one or two lines that name the problem, no traceback, within the time a user would wait."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert 1 <= len(lines) <= 2, done.stderr
    assert mentions in lines[0], done.stderr
    assert done.seconds < within, f"took {done.seconds:.1f} s"


@pytest.fixture()
def silent_server():
    """A TCP port that accepts connections and never says a word (a wrong service, or a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


# --- wrong addresses: seconds, one or two lines, exit 1 -------------------------------------------------------


@pytest.mark.parametrize("command", [["produce", str(SAMPLE)], ["consume", "--max", "1"], ["worker"]])
def test_a_closed_broker_port_fails_in_seconds(command, tmp_path):
    done = run(*command, env_extra={"SENTIMENT_BROKER": f"127.0.0.1:{free_port()}"})
    assert_plain_failure(done, within=10, mentions="cannot reach the Kafka broker")
    assert "sentiment local up" in done.stderr  # says what to do


def test_a_broker_that_never_answers_fails_within_the_connect_timeout(silent_server):
    done = run(
        "produce",
        str(SAMPLE),
        env_extra={"SENTIMENT_BROKER": f"127.0.0.1:{silent_server}", "SENTIMENT_CONNECT_TIMEOUT": "2"},
    )
    assert_plain_failure(done, within=10, mentions="did not answer within 2 s")


def test_debug_shows_the_traceback():
    done = run("--debug", "consume", env_extra={"SENTIMENT_BROKER": f"127.0.0.1:{free_port()}"})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_an_unreachable_database_fails_in_seconds():
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    done = run("movies", env_extra={"SENTIMENT_DATABASE_URL": url})
    assert_plain_failure(done, within=10, mentions="cannot reach the database")


def test_a_missing_sqlite_database_is_not_created_by_a_read(tmp_path):
    db = tmp_path / "nowhere" / "sentiment.db"
    done = run("movies", env_extra={"SENTIMENT_DATABASE_URL": f"sqlite:///{db}"})
    assert_plain_failure(done, within=10, mentions=f"no database at {db}")
    assert "sentiment db upgrade" in done.stderr
    assert not db.exists() and not db.parent.exists()


def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path):
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    env = {"SENTIMENT_DATABASE_URL": f"sqlite:///{db}"}
    done = run("movies", env_extra=env)
    assert_plain_failure(done, within=10, mentions="has no tables yet")
    assert "sentiment db upgrade" in done.stderr
    upgraded = run("db", "upgrade", env_extra=env)
    assert upgraded.returncode == 0
    assert re.search(r"migrated from revision none \(empty\) to \d{4} \(the latest\)", upgraded.stdout), upgraded.stdout
    again = run("db", "upgrade", env_extra=env)
    assert "already at revision" in again.stdout and "nothing to do" in again.stdout, again.stdout
    ranked = run("movies", "--json", env_extra=env)
    assert ranked.returncode == 0 and json.loads(ranked.stdout) == {"top": [], "bottom": []}


def test_movies_lists_films_with_enough_reviews_and_never_one_in_both_lists(tmp_path):
    db = tmp_path / "films.db"
    env = {"SENTIMENT_DATABASE_URL": f"sqlite:///{db}"}
    assert run("db", "upgrade", env_extra=env).returncode == 0
    with sqlite3.connect(db) as conn:  # three films: one with a single review, two with five
        for movie, count, mean in (("tt-one", 1, 0.99), ("tt-good", 5, 0.9), ("tt-bad", 5, 0.1)):
            conn.execute(
                "INSERT INTO movie_sentiment (movie_id, review_count, positive_count, uncertain_count, score_sum, "
                "mean_score, rating, unreadable_count, updated_at) VALUES (?, ?, 0, 0, ?, ?, ?, 0, '2026-01-01')",
                (movie, count, mean * count, mean, 1 + 9 * mean),
            )
    listed = json.loads(run("movies", "--json", env_extra=env).stdout)
    assert [f["movie_id"] for f in listed["top"]] == ["tt-good", "tt-bad"]
    assert listed["bottom"] == []  # both films are in the top list already
    everything = run("movies", "--min-reviews", "1", env_extra=env).stdout
    assert "tt-one" in everything
    none = run("movies", "--min-reviews", "6", env_extra=env)
    assert "no film has 6 readable reviews yet (--min-reviews 1 lists every film)" in none.stdout


def test_the_default_database_is_the_same_file_from_every_folder(tmp_path):
    from core.settings import Settings

    url = Settings().database_url
    assert url.startswith("sqlite:////"), url  # an absolute path, not one relative to the current folder


# --- settings ---------------------------------------------------------------------------------------------------


def test_settings_prints_values_in_effect_and_where_they_came_from():
    done = run("settings", "--json", env_extra={"SENTIMENT_BATCH_SIZE": "64", "SENTIMENT_SASL_PASSWORD": "s3cret"})
    assert done.returncode == 0, done.stderr
    rows = {r["variable"]: r for r in json.loads(done.stdout)}
    assert rows["SENTIMENT_BATCH_SIZE"]["value"] == "64" and rows["SENTIMENT_BATCH_SIZE"]["source"] == "environment"
    assert rows["SENTIMENT_BATCH_WAIT"]["source"] == "default"
    assert rows["SENTIMENT_SASL_PASSWORD"]["value"] == "***" and "s3cret" not in done.stdout
    for listed_in_readme in ("SENTIMENT_DATA_DIR", "SENTIMENT_TEST_DATABASE_URL", "SENTIMENT_CONNECT_TIMEOUT"):
        assert listed_in_readme in rows
    reference = (ROOT / "docs" / "settings.md").read_text()
    missing = [name for name in rows if f"`{name}`" not in reference]
    assert not missing, f"settings docs/settings.md does not list: {missing}"


@pytest.mark.parametrize("command", [["settings"], ["movies"], ["worker"]])
def test_an_invalid_setting_is_an_error_naming_the_variable(command):
    done = run(*command, env_extra={"SENTIMENT_BATCH_SIZE": "abc"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "SENTIMENT_BATCH_SIZE='abc'" in done.stderr.splitlines()[0]


def test_an_invalid_option_names_the_option():
    done = run("worker", "--batch-size", "0")
    assert done.returncode == 2 and "--batch-size=0" in done.stderr


# --- produce never invents or drops a row ---------------------------------------------------------------------


def test_rows_are_read_as_they_are_and_broken_ones_name_their_line(tmp_path):
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(
        '{"review_id": "a", "movie_id": "m", "text": "fine", "label": "pos"}\n'
        '{"movie_id": "m", "text": "no id"}\n'
        "\n"
        "not json\n"
        '{"review_id": "b", "text": "no film", "label": "maybe"}\n'
    )
    rows = list(read_records(jsonl))
    assert rows[0] == ReviewRow("a", "m", "fine", 1, None, None, 1)
    assert rows[1].review_id is None and row_problem(rows[1]) == "no review_id"  # not "None"
    assert isinstance(rows[2], BadRow) and rows[2].line == 4 and rows[2].reason.startswith("not JSON")
    assert isinstance(rows[3], BadRow) and rows[3].line == 5 and "bad label" in rows[3].reason

    csv = tmp_path / "mine.csv"
    csv.write_text(
        'id,movie_id,review,label\nc1,m1,"good",1\nc2,,"no film",0\nc3,m2,"multi\nline",0\nc4,m2,"x"y,1\nc5,m3\n'
    )
    rows = list(read_records(csv))
    assert [getattr(r, "review_id", None) for r in rows[:3]] == ["c1", "c2", "c3"]
    assert row_problem(rows[1]) == "no movie_id"  # not a film called "unknown"
    assert rows[2].text == "multi\nline" and rows[2].line == 4
    assert isinstance(rows[3], BadRow) and rows[3].line == 6
    assert isinstance(rows[4], BadRow) and rows[4].line == 7 and "field" in rows[4].reason


def test_produce_reports_skips_by_line_before_it_needs_the_broker(tmp_path):
    """Rows are checked while they are sent, so the broker is needed; a closed port still fails plainly."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"movie_id": "m", "text": "no id"}\n')
    port = free_port()
    done = run("produce", str(bad), env_extra={"SENTIMENT_BROKER": f"127.0.0.1:{port}"})
    assert_plain_failure(done, within=10, mentions="cannot reach the Kafka broker")
    assert done.stdout.splitlines()[-1] == f"sent 0, skipped 0 to reviews at 127.0.0.1:{port}"  # the run's last line


# --- evaluate, demo -------------------------------------------------------------------------------------------


@pytest.mark.integration  # loads the model into TensorFlow
def test_evaluate_limit_samples_at_random_and_warns_on_one_class(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    ordered = sorted(rows, key=lambda r: -r["label"])  # sorted by label, as imdb_test is
    data = tmp_path / "sorted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ordered))
    done = run("evaluate", "--data", str(data), "--limit", "12", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert 0 < metrics["confusion_matrix"]["true_negative"] + metrics["confusion_matrix"]["false_positive"] < 12
    assert metrics["roc_auc"] == metrics["roc_auc"]  # not NaN: both classes are in the sample

    positives = tmp_path / "positive.jsonl"
    positives.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] == 1))
    done = run("evaluate", "--data", str(positives), timeout=120)
    assert done.returncode == 0 and "warning: every review evaluated is positive" in done.stderr


def test_demo_rejects_a_count_of_zero_and_a_missing_file_leaves_nothing_behind(tmp_path):
    done = run("demo", "--count", "0")
    assert done.returncode == 2 and "--count: must be at least 1" in done.stderr
    before = set(Path("/tmp").glob("sentiment-demo-*"))
    done = run("demo", "--file", str(tmp_path / "missing.csv"))
    assert done.returncode == 1 and "no such file" in done.stderr and "Traceback" not in done.stderr
    assert set(Path("/tmp").glob("sentiment-demo-*")) == before


# --- data -----------------------------------------------------------------------------------------------------


def test_data_prepare_builds_the_csvs_from_the_original_tarball(tmp_path, monkeypatch):
    import tarfile

    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for kind in ("pos", "neg"):
            (root / split / kind).mkdir(parents=True)
            (root / split / kind / f"0_{9 if kind == 'pos' else 2}.txt").write_text(f"{split} {kind}, with a comma")
            (root / split / f"urls_{kind}.txt").write_text("http://www.imdb.com/title/tt0000042/usercomments\n")
    tarball = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname="aclImdb")
    home = tmp_path / "home"
    done = run("data", "prepare", str(tarball), env_extra={"XDG_DATA_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    cache = home / "sentiment" / "data"
    test_rows = list(read_records(cache / "imdb_test.csv.gz"))
    assert [(r.review_id, r.movie_id, r.text, r.label) for r in test_rows] == [
        ("test_pos_0", "tt0000042", "test pos, with a comma", 1),
        ("test_neg_0", "tt0000042", "test neg, with a comma", 0),
    ]
    monkeypatch.delenv("SENTIMENT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    # the cache is one of the places the tests, the demo and training look (after ../shared/data)
    assert shared_data_dir() is not None
    prepared = prepare_cache(tarball, tmp_path / "again")
    assert prepared == {"test": 2, "unsup": 0, "train": 2}
