"""The `sentiment` command as a user runs it."""

import json
import subprocess
import sys

import pytest

from sentiment.cli import build_parser
from tests.conftest import wait_until

SUBCOMMANDS = [
    "demo",
    "worker",
    "produce",
    "consume",
    "movies",
    "db",
    "train",
    "tune",
    "explore",
    "evaluate",
    "settings",
    "model",
]


def run(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0


def test_settings_lists_every_environment_variable(capsys):
    from sentiment.cli import main

    main(["settings"])
    out = capsys.readouterr().out
    for name in (
        "SENTIMENT_BROKER",
        "SENTIMENT_DATABASE_URL",
        "SENTIMENT_MODEL",
        "SENTIMENT_BATCH_SIZE",
        "SENTIMENT_BATCH_WAIT",
        "SENTIMENT_TOPIC_REVIEWS",
        "SENTIMENT_TOPIC_SENTIMENTS",
    ):
        assert name in out


def test_command_line_options_override_environment(monkeypatch):
    from sentiment.cli import settings_from

    monkeypatch.setenv("SENTIMENT_BATCH_SIZE", "64")
    monkeypatch.setenv("SENTIMENT_BROKER", "kafka://env:9092")
    args = build_parser().parse_args(["worker", "--broker", "kafka://cli:9092"])
    settings = settings_from(args)
    assert settings.broker == "kafka://cli:9092" and settings.batch_size == 64


@pytest.mark.integration
def test_produce_worker_consume_movies(stream_settings, start_worker, tmp_path):
    """The four commands together: a file in, events printed, films ranked from SQL."""
    import os

    reviews = tmp_path / "mine.jsonl"
    lines = [
        {"review_id": "u1", "movie_id": "good-film", "text": "A wonderful, moving, brilliant film. Loved it."},
        {"review_id": "u2", "movie_id": "good-film", "text": "Superb acting and a beautiful story."},
        {"review_id": "u3", "movie_id": "bad-film", "text": "Awful, boring and badly acted. A waste of time."},
    ]
    reviews.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {
        **os.environ,
        "SENTIMENT_BROKER": stream_settings.broker,
        "SENTIMENT_DATABASE_URL": stream_settings.database_url,
        "SENTIMENT_TOPIC_REVIEWS": stream_settings.topic_reviews,
        "SENTIMENT_TOPIC_SENTIMENTS": stream_settings.topic_sentiments,
    }
    worker = start_worker()
    produced = run("produce", str(reviews), "--quiet", env=env)
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.startswith("sent 3, skipped 0 ")

    consumed = run("consume", "--from-beginning", "--max", "3", "--timeout", "60", env=env)
    assert consumed.returncode == 0, consumed.stderr + worker.tail()
    events = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(e["review_id"] for e in events) == ["u1", "u2", "u3"]

    def ranked():
        out = run("movies", "--json", "--min-reviews", "1", "--limit", "1", env=env)
        return json.loads(out.stdout) if out.returncode == 0 else None

    assert wait_until(lambda: (r := ranked()) and r["top"] and r["bottom"], 30), worker.tail()
    films = ranked()
    assert films["top"][0]["movie_id"] == "good-film" and films["top"][0]["review_count"] == 2
    assert films["bottom"][0]["movie_id"] == "bad-film"
    assert films["top"][0]["rating"] > 5 > films["bottom"][0]["rating"]


def test_evaluate_names_its_model_argument_once_and_keeps_the_old_spelling(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert help_text.count("model folder") == 1 and "--model" not in help_text, help_text
    args = build_parser().parse_args(["evaluate", "--model", "somewhere", "--data", "x.csv"])
    assert args.model == "somewhere"  # --model MODEL, the older spelling, still works
