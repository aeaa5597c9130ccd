"""``sentiment``: one command line for every part of the scorer. ``sentiment COMMAND --help`` tells more."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sentiment.settings import Settings, settings_table

# Options shared by commands that talk to the broker, the database or the model: each overrides one setting.
SETTING_OPTIONS = {
    "broker": ("--broker", str, "Faust broker URL, e.g. kafka://127.0.0.1:9092"),
    "database_url": ("--database-url", str, "SQLAlchemy database URL"),
    "model": ("--model", Path, "model artifact folder"),
    "batch_size": ("--batch-size", int, "most reviews per micro-batch"),
    "batch_wait": ("--batch-wait", float, "seconds to wait for a micro-batch to fill"),
    "topic_reviews": ("--topic-reviews", str, "input topic"),
    "topic_sentiments": ("--topic-sentiments", str, "output topic"),
    "topic_dlq": ("--topic-dlq", str, "dead-letter topic"),
}


def _add_settings(parser: argparse.ArgumentParser, *names: str) -> None:
    group = parser.add_argument_group("settings (override the SENTIMENT_* environment variables)")
    for name in names:
        flag, kind, help_text = SETTING_OPTIONS[name]
        env = f"SENTIMENT_{name.upper()}"
        group.add_argument(flag, dest=name, type=kind, default=None, help=f"{help_text} [{env}]")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in SETTING_OPTIONS and v is not None}
    return Settings(**overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from sentiment.local import create_topics
    from sentiment.settings import kafka_client_options
    from stream.app import run_worker

    create_topics(
        settings.bootstrap_servers(),
        [settings.topic_reviews, settings.topic_sentiments, settings.topic_dlq],
        settings.topic_partitions,
        **kafka_client_options(settings),
    )
    run_worker(settings)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from sentiment.datasets import read_reviews
    from sentiment.producing import produce_reviews

    settings = settings_from(args)
    rows = read_reviews(args.file, split=args.split)
    sent = produce_reviews(settings, rows, limit=args.limit, progress=not args.quiet)
    print(f"sent {sent:,} reviews to {settings.topic_reviews} at {','.join(settings.bootstrap_servers())}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from sentiment.producing import consume_topic

    settings = settings_from(args)
    topic = args.topic or settings.topic_sentiments
    count = 0
    for value in consume_topic(settings, topic, from_beginning=args.from_beginning, idle_timeout=args.timeout):
        sys.stdout.write(value.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        count += 1
        if args.max is not None and count >= args.max:
            break
    print(f"{count:,} events from {topic}", file=sys.stderr)
    return 0


def cmd_movies(args: argparse.Namespace) -> int:
    from sentiment.queries import top_and_bottom_movies

    settings = settings_from(args)
    top, bottom = top_and_bottom_movies(settings.database_url, limit=args.limit, min_reviews=args.min_reviews)
    if args.json:
        print(json.dumps({"top": top, "bottom": bottom}, default=str, indent=2))
        return 0
    for title, rows in (("Top films by mean sentiment", top), ("Bottom films by mean sentiment", bottom)):
        print(f"{title} (at least {args.min_reviews} review{'s' if args.min_reviews != 1 else ''}):")
        print(f"  {'movie_id':<12} {'reviews':>7} {'positive':>8} {'mean':>6} {'rating':>6}")
        for r in rows:
            print(
                f"  {r['movie_id']:<12} {r['review_count']:>7} {r['positive_count']:>8} "
                f"{r['mean_score']:>6.3f} {r['rating']:>6.1f}"
            )
        if not rows:
            print("  (none yet)")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from stream.db import upgrade

    settings = settings_from(args)
    upgrade(settings.database_url, args.revision)
    print(f"database at {_redact(settings.database_url)} is at revision {args.revision}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.pipeline import run

    cfg = load_config(args.config)
    data = args.data
    if args.download:
        from training.pipeline import download

        data = download(Path(args.download_dir))
    folder = run(cfg, data=data, out_dir=args.out)
    if args.promote:
        from training.pipeline import promote

        promote(folder, Path(__file__).resolve().parent.parent / "model" / "default")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from training.config import load_search
    from training.tune import tune

    base, search = load_search(args.config)
    tune(base, search, data=args.data, out=args.out)
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from training.explore import report

    report(args.data, args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sentiment.evaluation import evaluate_file

    model = args.model_path or settings_from(args).model
    metrics = evaluate_file(model, args.data, split=args.split, limit=args.limit)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"model {metrics['model_version']} on {metrics['data']} ({metrics['examples']:,} labelled reviews)")
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "calibration_error"):
            print(f"  {key:<18} {metrics[key]:.4f}")
        cm = metrics["confusion_matrix"]
        print(
            f"  confusion matrix   TN {cm['true_negative']:,}  FP {cm['false_positive']:,}  "
            f"FN {cm['false_negative']:,}  TP {cm['true_positive']:,}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sentiment.demo import run_demo

    return run_demo(file=args.file, count=args.count, keep=args.keep, shift=args.shift)


def cmd_settings(args: argparse.Namespace) -> int:
    for env, default, description in settings_table():
        print(f"{env:<30} {default:<40} {description}")
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentiment",
        description="Score a live stream of movie reviews. Settings come from SENTIMENT_* environment variables "
        "(see `sentiment settings`); options override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run everything end to end on local services and print a summary")
    p.add_argument(
        "--file",
        type=Path,
        help="reviews to stream (CSV, JSON Lines or aclImdb); default: imdb_test or the project's own sample",
    )
    p.add_argument("--count", type=int, default=3000, help="how many reviews to stream (default 3000)")
    p.add_argument("--keep", action="store_true", help="leave the scratch folder (logs, database) behind")
    p.add_argument("--shift", action="store_true", help="then stream Amazon product reviews and show drift rising")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="run the Faust worker: reviews in, scores out to Kafka and the database")
    _add_settings(p, *SETTING_OPTIONS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="send reviews from a file to the reviews topic, keyed by film")
    p.add_argument("file", type=Path, help="CSV (id,movie_id,review,...), JSON Lines, or an aclImdb folder/tarball")
    p.add_argument("--split", default="test", choices=["train", "test", "unsup"], help="split of an aclImdb tree")
    p.add_argument("--limit", type=int, help="send at most this many reviews")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_settings(p, "broker", "topic_reviews")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("consume", help="print sentiments events as JSON lines")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest event, not the newest")
    p.add_argument("--max", type=int, help="stop after this many events")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without an event")
    p.add_argument("--topic", help="another topic to print (for example the dead-letter topic)")
    _add_settings(p, "broker", "topic_sentiments")
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("movies", help="top and bottom films by mean sentiment (SQL on movie_sentiment)")
    p.add_argument("--limit", type=int, default=5, help="films in each list (default 5)")
    p.add_argument("--min-reviews", type=int, default=1, help="only films with at least this many reviews")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_settings(p, "database_url")
    p.set_defaults(func=cmd_movies)

    p = sub.add_parser("db", help="database schema migrations")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply the migrations (to the newest revision by default)")
    up.add_argument("revision", nargs="?", default="head")
    _add_settings(up, "database_url")
    up.set_defaults(func=cmd_db)

    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument("--config", type=Path, required=True, help="TOML file with every hyperparameter")
    p.add_argument("--data", type=Path, help="folder of imdb_*.csv.gz, an aclImdb folder, or aclImdb_v1.tar.gz")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    p.add_argument("--download", action="store_true", help="fetch the original aclImdb_v1.tar.gz first")
    p.add_argument("--download-dir", default="data", help="where --download puts the tarball (default data/)")
    p.add_argument("--promote", action="store_true", help="also make the new model the committed default")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="small hyperparameter search on the validation split; writes a table")
    p.add_argument("--config", type=Path, required=True, help="a training config with a [search] table")
    p.add_argument("--data", type=Path, help="as for train")
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="where the table goes (default runs/tune)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("explore", help="write a data report (Markdown and PNG plots) of the IMDB splits")
    p.add_argument("--data", type=Path, help="as for train")
    p.add_argument(
        "--out", type=Path, default=Path("runs/data-report"), help="report folder (default runs/data-report)"
    )
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled file")
    p.add_argument("model_path", nargs="?", type=Path, metavar="MODEL", help="model folder (default: SENTIMENT_MODEL)")
    p.add_argument("--data", type=Path, required=True, help="labelled CSV/JSON Lines, or an aclImdb folder/tarball")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of an aclImdb tree")
    p.add_argument("--limit", type=int, help="evaluate the first N reviews only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_settings(p, "model")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("settings", help="list every SENTIMENT_* setting with its default")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f"sentiment {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
