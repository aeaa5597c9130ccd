"""The database schema: db upgrade."""

from __future__ import annotations

import argparse

from core.errors import UserError
from core.messages import first_line, redact
from sentiment.commands.options import add_settings, settings_from

TITLE = "the database"


def register(sub) -> None:
    """``sentiment db upgrade [REVISION]``: the database schema brought up to date."""
    p = sub.add_parser("db", help="database schema migrations")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply the migrations (to the newest revision by default)")
    up.add_argument("revision", nargs="?", default="head")
    add_settings(up, "database_url")
    up.set_defaults(func=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from stream.sql.db import DATABASE_HINT, current_revision, head_revision, make_engine, upgrade

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
