"""Fail fast and say what to do: can the broker and the database be reached, and is the database migrated?

Each check gives up after the settings' ``connect_timeout`` and raises :class:`UserError` with one line that names
what was unreachable and one that says what to do.
"""

from __future__ import annotations

import socket

from sqlalchemy.engine import Engine

from sentiment.errors import UserError
from sentiment.settings import Settings

BROKER_HINT = "start one (`sentiment local up` runs a local broker and database), or set SENTIMENT_BROKER / --broker"
DATABASE_HINT = "start it, or point SENTIMENT_DATABASE_URL / --database-url at a running one"
MIGRATE_HINT = "run `sentiment db upgrade` (with the same SENTIMENT_DATABASE_URL) to create or update the tables"


def redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def broker_unreachable(settings: Settings, timeout: float) -> str | None:
    """None when a bootstrap server accepts a TCP connection within ``timeout``, else why none did."""
    reasons = []
    for server in settings.bootstrap_servers():
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host or server, int(port or 9092)), timeout=timeout):
                return None
        except ValueError:
            reasons.append(f"{server}: not host:port")
        except OSError as exc:
            reasons.append(f"{server}: {exc.strerror or exc}")
    return "; ".join(reasons)


def check_broker(settings: Settings) -> None:
    """At least one bootstrap server accepts a TCP connection within the timeout."""
    reasons = broker_unreachable(settings, settings.connect_timeout)
    if reasons is not None:
        raise UserError(f"cannot reach the Kafka broker ({reasons})", BROKER_HINT)


def check_port_free(host: str, port: int, hint: str) -> None:
    """Fail at start, in one line, when ``host:port`` cannot be listened on (a server would fail later)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint) from exc


def broker_timeout_error(settings: Settings, exc: Exception) -> UserError:
    """A kafka-python time-out or connection error as the user should read it."""
    return UserError(
        f"the Kafka broker at {','.join(settings.bootstrap_servers())} did not answer within "
        f"{settings.connect_timeout:g} s ({type(exc).__name__}: {exc})",
        BROKER_HINT,
    )


def first_line(exc: BaseException) -> str:
    """The first line of an error (a database driver's own, not SQLAlchemy's wrapper), for one-line messages."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def database_engine(settings: Settings, *, need_tables: bool = True) -> Engine:
    """An engine on the settings' database, checked: reachable and (with ``need_tables``) migrated to the newest
    revision. A SQLite file that does not exist is an error, never silently created."""
    from sqlalchemy.exc import SQLAlchemyError

    from stream.db import current_revision, head_revision, make_engine, sqlite_path

    url = settings.database_url
    shown = redact(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UserError(f"no database at {path} ({shown})", MIGRATE_HINT)
    engine = make_engine(url, settings.connect_timeout)
    try:
        with engine.connect():
            pass
        if need_tables:
            revision = current_revision(engine)
            if revision != head_revision():
                state = "has no tables yet" if revision is None else f"is at migration {revision}, not the newest"
                raise UserError(f"the database at {shown} {state}", MIGRATE_HINT)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise UserError(f"cannot reach the database at {shown}: {first_line(exc)}", DATABASE_HINT) from exc
    except UserError:
        engine.dispose()
        raise
    return engine
