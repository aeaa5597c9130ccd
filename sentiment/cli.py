"""``sentiment``: one command line for every part of the scorer. ``sentiment COMMAND --help`` tells more."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from core.errors import UserError
from core.messages import first_line, redact, redact_log_records
from core.settings import Settings, load_settings, settings_in_effect

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
    "web_port": ("--web-port", int, "port of the scoring page and API (0: off)"),
    "web_host": ("--web-host", str, "address the page and API listen on"),
}


def _add_settings(parser: argparse.ArgumentParser, *names: str) -> None:
    group = parser.add_argument_group("settings (override the SENTIMENT_* environment variables)")
    for name in names:
        flag, kind, help_text = SETTING_OPTIONS[name]
        env = f"SENTIMENT_{name.upper()}"
        group.add_argument(flag, dest=name, type=kind, default=None, help=f"{help_text} [{env}]")


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k in SETTING_OPTIONS and v is not None}


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(_overrides(args), {name: flag for name, (flag, _, _) in SETTING_OPTIONS.items()})


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.preflight import preflight
    from stream.supervisor import parse_processes

    settings = settings_from(args)
    processes = parse_processes(args.processes)
    if processes > 1:
        from stream.supervisor import run_supervisor

        return run_supervisor(settings, processes, _worker_options(args))
    ready = preflight(settings)
    from stream.app import run_worker  # imports TensorFlow: after the quick checks

    return run_worker(settings, ready, verbose=args.verbose)


def _worker_options(args: argparse.Namespace) -> list[str]:
    """The setting options given to ``sentiment worker``, for each of its processes."""
    options = []
    for name, value in _overrides(args).items():
        options += [SETTING_OPTIONS[name][0], str(value)]
    if args.debug:
        options.append("--debug")
    if args.verbose:
        options.append("--verbose")
    return options


MAX_SKIPS_SHOWN = 20


def _label_order_warning(rows: list, sent: list, source: str) -> str | None:
    """A warning when a labelled file is sorted by label: streamed in that order, it looks like drift."""
    labels = [r.label for r in rows if getattr(r, "label", None) is not None]
    if len(labels) < 20 or len(set(labels)) < 2:  # a handful of rows in any order is no sign of sorting
        return None
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    if changes > 1:
        return None
    sent_labels = {r.label for r in sent if getattr(r, "label", None) is not None}
    first = "positive" if labels[0] == 1 else "negative"
    if len(sent_labels) == 1:
        return (
            f"warning: {source} is sorted by label and every review sent is {first}: the worker will report drift; "
            "use --shuffle"
        )
    return f"warning: {source} is sorted by label ({first} first): streamed in this order it looks like drift; use --shuffle"


def cmd_produce(args: argparse.Namespace) -> int:
    import itertools

    from sentiment.producing import ProduceReport, produce_reviews
    from training.datasets import read_records

    settings = settings_from(args)
    source = "standard input" if str(args.file) == "-" else str(args.file)
    records = read_records(args.file, split=args.split)  # a missing file or an unknown format fails here
    shown = 0

    def report_skip(line, reason):
        nonlocal shown
        shown += 1
        if shown <= MAX_SKIPS_SHOWN:
            where = source if line is None else f"{source}:{line}"
            print(f"{where}: skipped: {reason}", file=sys.stderr)

    report = ProduceReport()
    try:
        total = None
        if str(args.file) == "-" and not args.shuffle:
            rows = itertools.islice(records, args.limit) if args.limit is not None else records
        else:
            everything = list(records)
            rows = list(everything)
            if args.shuffle:
                random.Random(args.seed).shuffle(rows)
            rows = rows[: args.limit] if args.limit is not None else rows
            total = len(rows)
            if not args.shuffle and (warning := _label_order_warning(everything, rows, source)):
                print(warning, file=sys.stderr)
        produce_reviews(
            settings,
            rows,
            total=total,
            progress=not args.quiet and sys.stderr.isatty(),
            send_invalid=args.send_invalid,
            on_skip=report_skip,
            report=report,
        )
    finally:  # also when the broker stops answering, or on Ctrl-C: what was sent is known
        if shown > MAX_SKIPS_SHOWN:
            print(f"... and {shown - MAX_SKIPS_SHOWN:,} more skipped rows", file=sys.stderr)
        print(f"{report.summary()} to {settings.topic_reviews} at {','.join(settings.bootstrap_servers())}", flush=True)
    if report.undelivered:
        raise UserError(
            f"{len(report.undelivered):,} reviews were not delivered: {report.undelivered[0]}",
            "check the broker and send the file again (the worker keeps the first score of a review id)",
        )
    if report.skipped and not args.allow_skipped:
        raise UserError(
            f"{len(report.skipped):,} {'row was' if len(report.skipped) == 1 else 'rows were'} skipped (lines above)",
            "fix them, or pass --send-invalid (the worker dead-letters them) or --allow-skipped (exit 0)",
        )
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from sentiment.producing import consume_topic, record_json

    settings = settings_from(args)
    topic = args.topic or settings.topic_sentiments
    with_headers = args.headers or topic == settings.topic_dlq
    count = 0
    try:
        for record in consume_topic(settings, topic, from_beginning=args.from_beginning, idle_timeout=args.timeout):
            sys.stdout.write(record_json(record, with_headers) + "\n")
            sys.stdout.flush()
            count += 1
            if args.max is not None and count >= args.max:
                break
    except KeyboardInterrupt:
        print(f"{count:,} events from {topic} (interrupted)", file=sys.stderr)
        return 130
    print(f"{count:,} events from {topic}", file=sys.stderr)
    return 0


def cmd_movies(args: argparse.Namespace) -> int:
    from stream.db import database_engine
    from stream.queries import top_and_bottom_movies

    settings = settings_from(args)
    engine = database_engine(settings)
    try:
        top, bottom = top_and_bottom_movies(engine, limit=args.limit, min_reviews=args.min_reviews)
    finally:
        engine.dispose()
    bottom = [film for film in bottom if film not in top]  # with few films the two lists would share some
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
        if not rows and title.startswith("Top"):
            fewer = " (--min-reviews 1 lists every film)" if args.min_reviews > 1 else ""
            print(
                f"  (no film has {args.min_reviews} readable review{'s' if args.min_reviews != 1 else ''} yet{fewer})"
            )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from stream.db import DATABASE_HINT, current_revision, head_revision, make_engine, upgrade

    settings = settings_from(args)
    try:
        engine = make_engine(settings.database_url, settings.connect_timeout)
        try:
            before = current_revision(engine)
            upgrade(settings.database_url, args.revision, settings.connect_timeout)
            after = current_revision(engine)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise UserError(
            f"cannot migrate the database at {redact(settings.database_url)}: {first_line(exc)}", DATABASE_HINT
        ) from exc
    where = redact(settings.database_url)
    latest = " (the latest)" if after == head_revision() else ""
    if before == after:
        print(f"database at {where} was already at revision {after}{latest}: nothing to do")
    else:
        print(f"database at {where} migrated from revision {before or 'none (empty)'} to {after}{latest}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_config, reference_text

    if args.list_keys:
        print(reference_text(), end="")
        return 0
    if not args.config:
        raise UserError("say which config to train: sentiment train --config FILE.toml (keys: --list-keys)")
    try:  # before minutes of training, and before TensorFlow is imported
        configs = [load_config(path) for path in args.config]
    except ConfigError as exc:
        raise UserError(str(exc), exit_code=2) from exc
    from training.pipeline import run

    if args.promote and len(configs) > 1:
        raise UserError("--promote takes one --config: which of the runs should be the live version?")
    if args.seed is not None:  # another draw: its runs are named apart from the config's own seed's
        configs = [
            cfg if cfg.seed == args.seed else cfg.with_overrides(seed=args.seed, name=f"{cfg.name}-seed{args.seed}")
            for cfg in configs
        ]
    if args.promote:  # the store must be there before minutes of training, not after
        from stream.db import database_engine

        database_engine(settings_from(args)).dispose()
    data = args.data
    if args.download:
        from training.pipeline import download

        data = download(Path(args.download_dir))
    folders = [run(cfg, data=data, out_dir=args.out) for cfg in configs]
    if len(folders) > 1:
        from training.compare import compare
        from training.pipeline import load

        test_texts = [row.text for row in load(data)[1][:5120]]
        table = compare(folders, test_texts)
        (Path(args.out) / "comparison.md").write_text(table)
        print(f"\n{table}\n(also in {Path(args.out) / 'comparison.md'})")
    if args.promote:
        from sentiment.models import add_and_promote

        add_and_promote(settings_from(args), folders[0])
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from sentiment import models

    settings = settings_from(args)
    action = args.model_command
    if action == "add":
        models.add(settings, args.folder, allow_tensorflow=args.allow_tensorflow, without_metrics=args.without_metrics)
        return 0
    if action == "list":
        models.list_store(settings, args.json)
        return 0
    if action == "promote":
        return models.promote(settings, args.version, offline=args.offline, wait=args.wait)
    if action == "rollback":
        return models.rollback(settings, offline=args.offline, wait=args.wait)
    return models.shadow(settings, None if args.off else args.version, wait=args.wait)


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
    metrics = evaluate_file(model, args.data, split=args.split, limit=args.limit, seed=args.seed)
    for warning in metrics["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(
            f"model {metrics['model_version']} on {metrics['data']} ({metrics['examples']:,} labelled reviews, "
            f"{metrics['sample']})"
        )
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

    return run_demo(file=args.file, count=args.count, keep=args.keep, shift=args.shift, seconds=args.seconds)


def cmd_settings(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    rows = [(env, redact(value), source, text) for env, value, source, text in settings_in_effect(settings)]
    if args.json:
        print(json.dumps([dict(zip(("variable", "value", "source", "description"), r)) for r in rows], indent=2))
        return 0
    width = max(len(r[1]) for r in rows)
    print(f"{'variable':<31} {'value in effect':<{width}}  {'from':<11}  meaning")
    for env, value, source, description in rows:
        print(f"{env:<31} {value:<{width}}  {source:<11}  {description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from stream.web.serve import serve

    return serve(settings_from(args), with_database=not args.no_database)


def cmd_local(args: argparse.Namespace) -> int:
    from sentiment.local import run_local_services

    return run_local_services(args.dir, broker_port=args.broker_port, postgres_port=args.postgres_port)


def cmd_data(args: argparse.Namespace) -> int:
    from core.settings import default_data_home
    from training.datasets import prepare_cache

    source = args.source
    if args.download:
        from training.pipeline import download

        source = download(default_data_home())
    if source is None:
        raise UserError("say where the data is: sentiment data prepare PATH/aclImdb_v1.tar.gz (or --download)")
    dest = default_data_home() / "data"
    counts = prepare_cache(Path(source), dest)
    print(f"wrote {', '.join(f'imdb_{k}.csv.gz ({v:,} reviews)' for k, v in counts.items())} to {dest}")
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentiment",
        description="Score a live stream of movie reviews. Settings come from SENTIMENT_* environment variables "
        "(see `sentiment settings`); options override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stream_commands(sub)
    _add_db_commands(sub)
    _add_model_commands(sub)
    _add_study_commands(sub)
    _add_local_commands(sub)
    return parser


def _add_stream_commands(sub) -> None:
    """The stream and its data: demo, worker, produce, consume, movies."""
    p = sub.add_parser("demo", help="run everything end to end on local services and print a summary")
    p.add_argument(
        "--file",
        type=Path,
        help="reviews to stream (CSV, JSON Lines or aclImdb); default: imdb_test or the project's own sample",
    )
    p.add_argument("--count", type=_positive_int, default=3000, help="how many reviews to stream (default 3000)")
    p.add_argument("--keep", action="store_true", help="leave the scratch folder (logs, database) behind")
    p.add_argument("--shift", action="store_true", help="then stream Amazon product reviews and show drift rising")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="keep the worker and its page up this long after the summary (default: until Ctrl-C; 0: stop at once)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "serve",
        help="the scoring page and HTTP API without Kafka: type a review, see its score and why",
        description="Serve the page (GET /) and the API (POST /api/score, GET /api/movies/ID, /healthz, /readyz, "
        "/openapi.json) with the model alone. Film lookups use the database when it is reachable and migrated.",
    )
    p.add_argument("--no-database", action="store_true", help="do not look for the database (film lookups off)")
    _add_settings(p, "model", "database_url", "web_port", "web_host")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the Faust worker: reviews in, scores out to Kafka and the database")
    p.add_argument(
        "--processes",
        default="1",
        metavar="N|auto",
        help="worker processes in one consumer group under one supervisor, one log, one metrics endpoint "
        "(auto: the usable cores; default 1)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="also Faust's and the Kafka client's own info lines (quiet by default)"
    )
    _add_settings(p, *SETTING_OPTIONS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "produce",
        help="send reviews from a file to the reviews topic, keyed by film",
        description="Send reviews to the reviews topic, keyed by film. A row the worker would reject (no review_id, "
        "movie_id or text, a text or message over its limits, ...), one that cannot be read, or one Kafka refuses, is "
        "reported with its line and skipped, and the rest is sent (exit 1 unless --allow-skipped); nothing is made "
        "up. Ends with 'sent N, skipped M (reasons)', also on Ctrl-C.",
    )
    p.add_argument(
        "file", type=Path, help="CSV (id,movie_id,review,...), JSON Lines, an aclImdb folder/tarball, or - (stdin)"
    )
    p.add_argument("--split", default="test", choices=["train", "test", "unsup"], help="split of an aclImdb tree")
    p.add_argument("--limit", type=_positive_int, help="send at most this many rows (after --shuffle)")
    p.add_argument("--shuffle", action="store_true", help="send in a random order (files are often sorted by label)")
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    p.add_argument(
        "--send-invalid",
        action="store_true",
        help="send invalid rows too, so the worker dead-letters them: a row that cannot be read as its bytes from the "
        "file",
    )
    p.add_argument("--allow-skipped", action="store_true", help="exit 0 even when rows were skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_settings(p, "broker", "topic_reviews")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("consume", help="print sentiments events (or another topic's) as JSON lines")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest event, not the newest")
    p.add_argument("--max", type=int, help="stop after this many events")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without an event")
    p.add_argument("--topic", help="another topic to print (for example the dead-letter topic)")
    p.add_argument(
        "--headers",
        action="store_true",
        help="print each event with its headers, partition and offset (always on for the dead-letter topic)",
    )
    _add_settings(p, "broker", "topic_sentiments", "topic_dlq")
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("movies", help="top and bottom films by mean sentiment (SQL on movie_sentiment)")
    p.add_argument("--limit", type=int, default=5, help="films in each list (default 5)")
    p.add_argument(
        "--min-reviews",
        type=_positive_int,
        default=5,
        help="only films with at least this many readable reviews (default 5: one review says little of a film)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_settings(p, "database_url")
    p.set_defaults(func=cmd_movies)


def _add_db_commands(sub) -> None:
    """The schema: db."""
    p = sub.add_parser("db", help="database schema migrations")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply the migrations (to the newest revision by default)")
    up.add_argument("revision", nargs="?", default="head")
    _add_settings(up, "database_url")
    up.set_defaults(func=cmd_db)


def _add_model_commands(sub) -> None:
    """Making and rolling out models: train, model."""
    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument(
        "--config", type=Path, action="append",
        help="TOML file with every hyperparameter; give several to train each and compare them in one table",
    )  # fmt: skip
    p.add_argument("--list-keys", action="store_true", help="print every config key (type, allowed, default) and exit")
    p.add_argument("--data", type=Path, help="folder of imdb_*.csv.gz, an aclImdb folder, or aclImdb_v1.tar.gz")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    p.add_argument("--download", action="store_true", help="fetch the original aclImdb_v1.tar.gz first")
    p.add_argument("--download-dir", default="data", help="where --download puts the tarball (default data/)")
    p.add_argument(
        "--promote",
        action="store_true",
        help="also add the run to the model store and make it the live version (workers switch without a restart)",
    )
    p.add_argument("--seed", type=int, help="train with this seed instead of the config's (another draw of the model)")
    _add_settings(p, "database_url")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "model",
        help="the model store: add a trained version, list, promote, shadow, roll back",
        description="Versions live in the database (SENTIMENT_DATABASE_URL), named by the hash of their model.keras. "
        "Running workers follow the live and shadow versions within seconds, switching between two batches after "
        "checking the new version; one that fails its check is refused and the old one kept.",
    )
    modelsub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    m = modelsub.add_parser("add", help="add a run folder (model.keras, metrics.json, ...) to the store")
    m.add_argument("folder", type=Path, help="the run folder, e.g. runs/trigram-31150f1a2929/")
    m.add_argument(
        "--allow-tensorflow",
        action="store_true",
        help="add a version the compiled scorer cannot score exactly: workers then score it with TensorFlow "
        "(several times slower, about 530 MB more per worker); without it such a version is refused, as workers "
        "would refuse it",
    )
    m.add_argument(
        "--without-metrics",
        action="store_true",
        help="add a run whose metrics.json does not name its model.keras (written before issue 26, or copied from "
        "another run): the file is left out and the store shows no accuracy for it",
    )
    _add_settings(m, "database_url", "model")
    m.set_defaults(func=cmd_model)
    m = modelsub.add_parser("list", help="versions, which is live and shadow, the history, the running workers")
    m.add_argument("--json", action="store_true", help="print JSON")
    _add_settings(m, "database_url")
    m.set_defaults(func=cmd_model)
    for name, text in (
        ("promote", "make a stored version live on every worker"),
        ("rollback", "make the live version before the current one live again"),
    ):
        m = modelsub.add_parser(name, help=text)
        if name == "promote":
            m.add_argument("version", help="a stored version (or its first characters, if unambiguous)")
        m.add_argument(
            "--offline", action="store_true", help="set it even when no worker is running (they load it at start)"
        )
        m.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="seconds to wait for every running worker to switch (0: do not); a worker builds a version's compiled "
            "tables the first time it loads it (about 15 s)",
        )
        _add_settings(m, "database_url", "model")
        m.set_defaults(func=cmd_model)
    m = modelsub.add_parser("shadow", help="score every batch with a second version too, results kept out")
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("version", nargs="?", help="a stored version (or its first characters)")
    which.add_argument("--off", action="store_true", help="turn the shadow off")
    m.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for every running worker to follow (0: do not)"
    )
    _add_settings(m, "database_url")
    m.set_defaults(func=cmd_model)


def _add_study_commands(sub) -> None:
    """Studying data, models and settings: tune, explore, evaluate, settings."""
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
    p.add_argument("--limit", type=_positive_int, help="evaluate a random sample of N reviews (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # the older spelling, --model MODEL, still works; --help names the model once
    p.add_argument("--model", dest="model", type=str, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("settings", help="every SENTIMENT_* setting: the value in effect and where it came from")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_settings)


def _add_local_commands(sub) -> None:
    """Services and data on this machine: local, data."""
    p = sub.add_parser("local", help="local services for your own experiments")
    localsub = p.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    up = localsub.add_parser(
        "up",
        help="start a Tansu broker and a PostgreSQL cluster on this machine until Ctrl-C",
        description="Start a Kafka-protocol broker (Tansu) and a PostgreSQL cluster on 127.0.0.1, migrate the "
        "database, print the SENTIMENT_* lines to export, and run until Ctrl-C. Broker data lives in memory; the "
        "database lives in --dir and survives a restart.",
    )
    up.add_argument(
        "--dir", type=Path, help="where the database and logs live (default ~/.local/share/sentiment/local)"
    )
    up.add_argument("--broker-port", type=int, default=9092, help="broker port (default 9092; 0: a free one)")
    up.add_argument("--postgres-port", type=int, default=5432, help="PostgreSQL port (default 5432; 0: a free one)")
    up.set_defaults(func=cmd_local)

    p = sub.add_parser("data", help="the IMDB data the tests, the demo and training read")
    datasub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = datasub.add_parser(
        "prepare",
        help="build imdb_*.csv.gz in ~/.local/share/sentiment/data from the original aclImdb folder or tarball",
    )
    prep.add_argument("source", nargs="?", type=Path, help="aclImdb folder or aclImdb_v1.tar.gz")
    prep.add_argument("--download", action="store_true", help="download aclImdb_v1.tar.gz first (needs the internet)")
    prep.set_defaults(func=cmd_data)


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    """``--debug`` on every command and subcommand (a subcommand's own default must not undo the outer one)."""
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, argparse.SUPPRESS)


def _log_level_is_debug() -> bool:
    """SENTIMENT_LOG_LEVEL=debug also shows tracebacks (not when the settings themselves are invalid: that error
    is the one to show)."""
    from pydantic import ValidationError

    try:
        return Settings().log_level.lower() == "debug"
    except (ValidationError, UserError):
        return False


def main(argv: list[str] | None = None) -> int:
    redact_log_records()  # whoever logs a URL or a setting, its password is masked
    parser = build_parser()
    _add_debug(parser, default=False)
    args = parser.parse_args(argv)
    debug = args.debug or _log_level_is_debug()
    action = getattr(args, "model_command", None)  # `sentiment model promote: ...`: the action is part of the name
    name = f"sentiment {args.command}" + (f" {action}" if action else "")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UserError as exc:
        if debug:
            return _traceback(exc.exit_code)
        lines = exc.lines()
        print(f"{name}: {redact(lines[0])}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {redact(line)}", file=sys.stderr)
        return exc.exit_code
    except (FileNotFoundError, ValueError, OSError) as exc:
        if debug:
            return _traceback(1)
        print(f"{name}: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if debug:
            return _traceback(1)
        print(f"{name}: unexpected {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        print("  run it again with --debug for the traceback, and report it", file=sys.stderr)
        return 1


def _traceback(exit_code: int) -> int:
    """The traceback of the error being handled, secrets masked (a driver's message may quote its URL)."""
    import traceback

    print(redact(traceback.format_exc()), file=sys.stderr, end="")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
