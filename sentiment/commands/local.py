"""Services and data on this machine: local up, data prepare."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import UserError

TITLE = "on this machine"


def register(sub) -> None:
    add_local(sub)
    add_data(sub)


def add_local(sub) -> None:
    """``sentiment local up``: a broker and a database on this machine."""
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


def cmd_local(args: argparse.Namespace) -> int:
    from sentiment.local import run_local_services

    return run_local_services(args.dir, broker_port=args.broker_port, postgres_port=args.postgres_port)


def add_data(sub) -> None:
    """``sentiment data prepare``: the IMDB files."""
    p = sub.add_parser("data", help="the IMDB data the tests, the demo and training read")
    datasub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = datasub.add_parser(
        "prepare",
        help="build imdb_*.csv.gz in ~/.local/share/sentiment/data from the original aclImdb folder or tarball",
    )
    prep.add_argument("source", nargs="?", type=Path, help="aclImdb folder or aclImdb_v1.tar.gz")
    prep.add_argument("--download", action="store_true", help="download aclImdb_v1.tar.gz first (needs the internet)")
    prep.set_defaults(func=cmd_data)


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
