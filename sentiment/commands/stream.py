"""The stream and its data: demo, serve, worker, produce, consume, movies."""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
from pathlib import Path

from core.errors import UserError
from sentiment.commands.options import SETTING_OPTIONS, add_settings, overrides, positive_int, settings_from

TITLE = "run the stream"


def register(sub) -> None:
    for add in (add_demo, add_serve, add_worker, add_produce, add_consume, add_movies):
        add(sub)


def add_demo(sub) -> None:
    """``sentiment demo``: everything end to end on local services."""
    p = sub.add_parser("demo", help="run everything end to end on local services and print a summary")
    p.add_argument(
        "--file",
        type=Path,
        help="reviews to stream (CSV, JSON Lines or aclImdb); default: imdb_test or the project's own sample",
    )
    p.add_argument("--count", type=positive_int, default=3000, help="how many reviews to stream (default 3000)")
    p.add_argument("--keep", action="store_true", help="leave the scratch folder (logs, database) behind")
    p.add_argument("--shift", action="store_true", help="then stream Amazon product reviews and show drift rising")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="keep the worker and its page up this long after the summary (default: until Ctrl-C; 0: stop at once)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from sentiment.demo import run_demo

    return run_demo(file=args.file, count=args.count, keep=args.keep, shift=args.shift, seconds=args.seconds)


def add_serve(sub) -> None:
    """``sentiment serve``: the page and the API without Kafka."""
    p = sub.add_parser(
        "serve",
        help="the scoring page and HTTP API without Kafka: type a review, see its score and why",
        description="Serve the page (GET /) and the API (POST /api/score, GET /api/movies/ID, /healthz, /readyz, "
        "/openapi.json) with the model alone. Film lookups use the database when it is reachable and migrated.",
    )
    p.add_argument("--no-database", action="store_true", help="do not look for the database (film lookups off)")
    add_settings(p, "model", "database_url", "web_port", "web_host")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from stream.web.serve import serve

    return serve(settings_from(args), with_database=not args.no_database)


def add_worker(sub) -> None:
    """``sentiment worker``: reviews in, scores out."""
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
    add_settings(p, *SETTING_OPTIONS)
    p.set_defaults(func=cmd_worker)


ANNOUNCE_AFTER = 3.0  # seconds


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.supervisor import parse_processes

    settings = settings_from(args)
    processes = parse_processes(args.processes)
    if processes > 1:
        from stream.supervisor import run_supervisor

        return run_supervisor(settings, processes, _worker_options(args))
    # A silent worker looks hung: its first line comes once the broker and the database answer (about 1.5 s), before
    # the model loads (15 s or more on a model's first start), or after ANNOUNCE_AFTER seconds if the checks take
    # longer; a check that fails at once fails in its own two lines, with no line before them.
    loading = (
        f"loading the model (the store's live version, else {settings.model}; a model's first start builds its "
        "compiled tables: about 15 s) ..."
    )

    def still_checking() -> None:
        print(f"sentiment worker: checking {settings.broker} and the database ...", file=sys.stderr, flush=True)

    def answered() -> None:
        timer.cancel()
        print(f"sentiment worker: {settings.broker} and the database answer; {loading}", file=sys.stderr, flush=True)

    timer = threading.Timer(ANNOUNCE_AFTER, still_checking)
    timer.daemon = True
    timer.start()
    try:
        from stream.preflight import preflight

        ready = preflight(settings, answered=answered)
    finally:
        timer.cancel()
    from stream.app import run_worker  # imports TensorFlow: after the quick checks

    return run_worker(settings, ready, verbose=args.verbose)


def _worker_options(args: argparse.Namespace) -> list[str]:
    """The setting options given to ``sentiment worker``, for each of its processes."""
    options = []
    for name, value in overrides(args).items():
        options += [SETTING_OPTIONS[name][0], str(value)]
    if args.debug:
        options.append("--debug")
    if args.verbose:
        options.append("--verbose")
    return options


def add_produce(sub) -> None:
    """``sentiment produce FILE``: reviews to the reviews topic."""
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
    p.add_argument("--limit", type=positive_int, help="send at most this many rows (after --shuffle)")
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
    add_settings(p, "broker", "topic_reviews")
    p.set_defaults(func=cmd_produce)


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


def add_consume(sub) -> None:
    """``sentiment consume``: a topic's events as JSON lines."""
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
    add_settings(p, "broker", "topic_sentiments", "topic_dlq")
    p.set_defaults(func=cmd_consume)


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


def add_movies(sub) -> None:
    """``sentiment movies``: top and bottom films from SQL."""
    p = sub.add_parser("movies", help="top and bottom films by mean sentiment (SQL on movie_sentiment)")
    p.add_argument("--limit", type=int, default=5, help="films in each list (default 5)")
    p.add_argument(
        "--min-reviews",
        type=positive_int,
        default=5,
        help="only films with at least this many readable reviews (default 5: one review says little of a film)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_settings(p, "database_url")
    p.set_defaults(func=cmd_movies)


def cmd_movies(args: argparse.Namespace) -> int:
    from stream.sql.db import database_engine
    from stream.sql.queries import top_and_bottom_movies

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
