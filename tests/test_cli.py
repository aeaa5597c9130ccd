"""The `sentiment` command as a user runs it."""

import argparse
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --- the shape of the command line: grouped help, the closest command, a quick --help ---------------------------


def _main_exit(capsys, *argv):
    from sentiment.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        (["promte"], "model promote"),
        (["promote", "4c1d"], "model promote"),
        (["wroker"], "worker"),
        (["Produce", "x.csv"], "produce"),
        (["model", "promte", "4c1d"], "model promote"),
        (["model", "rolback"], "model rollback"),
        (["db", "upgarde"], "db upgrade"),
        (["local", "upp"], "local up"),
        (["data", "prepair"], "data prepare"),
    ],
)
def test_a_mistyped_command_names_the_closest_one_in_one_line(capsys, typed, suggested):
    code, out, err = _main_exit(capsys, *typed)
    command = " ".join(typed[:2] if typed[0] in ("model", "db", "local", "data") else typed[:1])
    assert code == 2 and out == ""
    assert err == f"sentiment: no command {command!r}; did you mean {suggested!r}?\n"


def test_a_command_like_no_other_says_where_the_list_is(capsys):
    code, _, err = _main_exit(capsys, "frobnicate")
    assert (code, err) == (2, "sentiment: no command 'frobnicate'; 'sentiment --help' lists them\n")
    code, _, err = _main_exit(capsys, "model", "zzz")
    assert (code, err) == (2, "sentiment: no command 'model zzz'; 'sentiment model --help' lists them\n")


COMMAND_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", min_size=1)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=COMMAND_WORD.filter(lambda w: not w.startswith("-")))
def test_any_word_that_is_no_command_gets_one_line_and_a_real_suggestion(capsys, word):
    if word in COMMANDS:
        return
    code, out, err = _main_exit(capsys, word)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith(f"sentiment: no command {word!r}; ")
    if "did you mean" in err:
        suggested = err.split("did you mean '")[1].split("'")[0].split()
        with pytest.raises(SystemExit) as exit_:  # the suggestion is a command the CLI takes
            build_parser().parse_args([*suggested, "--help"])
        assert exit_.value.code == 0
        capsys.readouterr()  # that help, not the next example's


def _choices(parser):
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


COMMANDS = set(_choices(build_parser()))


def test_help_groups_every_command_under_its_family(capsys):
    from sentiment.cli import FAMILIES

    code, out, _ = _main_exit(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    titles = [import_module(f"sentiment.commands.{f}").TITLE for f in FAMILIES]
    at = [lines.index(title) for title in titles]
    assert at == sorted(at), "the families in the order of FAMILIES"
    ends = [*at[1:], lines.index("options")]
    parser = build_parser()
    for family, start, end in zip(FAMILIES, at, ends, strict=True):
        section = lines[start + 1 : end]
        names = [line[3:].split("  ")[0] for line in section if line.startswith("   ") and line[3] != " "]
        sub = argparse.ArgumentParser(add_help=False).add_subparsers()
        import_module(f"sentiment.commands.{family}").register(sub)
        expected = []
        for name, child in sub.choices.items():
            actions = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
            expected += [f"{name} {action}" for action in actions[0].choices] if actions else [name]
        assert names == expected, f"{family}: {section}"
    assert set(_choices(parser)) == {n.split()[0] for n in _all_help_names(lines)}
    assert len(lines) < 60, "a short table, not argparse's long list"


def _all_help_names(lines):
    return [
        line[3:].split("  ")[0] for line in lines[: lines.index("options")] if line.startswith("   ") and line[3] != " "
    ]


HEAVY = ("tensorflow", "keras", "faust", "sqlalchemy", "aiokafka", "numpy", "pydantic")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["worker", "--help"], ["model", "promote", "--help"], ["train", "--help"], ["evaluate", "--help"],
     ["promte"]],
    ids=" ".join,
)  # fmt: skip
def test_help_and_a_mistyped_command_import_no_heavy_library(argv):
    code = (
        "import sys\nfrom sentiment.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = [line for line in done.stderr.splitlines() if line.startswith("LOADED")]
    assert loaded == ["LOADED"], f"sentiment {' '.join(argv)} imported {loaded}"


def test_train_seed_trains_each_config_under_that_seed_named_apart(monkeypatch, tmp_path):
    """`sentiment train --seed N` (docs/training.md's three-seed figures): each config trained with seed N, under a
    name of its own; a config already at that seed keeps its name. The training itself is replaced: this is the
    command's part."""
    import training.pipeline
    from sentiment.cli import main
    from training.config import load_config

    trained = []
    monkeypatch.setattr(training.pipeline, "run", lambda cfg, data=None, out_dir=None: trained.append(cfg) or tmp_path)
    root = Path(__file__).resolve().parent.parent / "training"
    main(["train", "--config", str(root / "nbcontext.toml"), "--seed", "7", "--out", str(tmp_path)])
    main(["train", "--config", str(root / "nbcontext.toml"), "--seed", "42", "--out", str(tmp_path)])
    base = load_config(root / "nbcontext.toml")
    assert [(c.seed, c.name) for c in trained] == [(7, "nbcontext-seed7"), (42, "nbcontext")]
    assert trained[0].with_overrides(seed=42, name="nbcontext") == base  # nothing else changed
