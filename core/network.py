"""Fail fast and say what to do: can a bootstrap server be reached, can a port be listened on?

Each check gives up after the settings' ``connect_timeout`` and raises :class:`UserError` with one line that names
what was unreachable and one that says what to do.
"""

from __future__ import annotations

import socket

from core.errors import UserError
from core.settings import Settings

BROKER_HINT = "start one (`sentiment local up` runs a local broker and database), or set SENTIMENT_BROKER / --broker"


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
