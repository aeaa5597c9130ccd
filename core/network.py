"""Fail fast and say what to do: can a bootstrap server be reached, can a port be listened on?

Each check gives up after the settings' ``connect_timeout`` and raises :class:`UserError` with one line that names
what was unreachable and one that says what to do.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from core.errors import UserError
from core.settings import Settings, ssl_context

BROKER_HINT = "start one (`sentiment local up` runs a local broker and database), or set SENTIMENT_BROKER / --broker"


def broker_unreachable(settings: Settings, timeout: float) -> str | None:
    """None when a bootstrap server answers a Kafka request within ``timeout``, else why none did.

    A TCP connection alone proves little: a frozen broker (stopped, swapping, its request loop stuck) still
    accepts connections in the kernel. So the probe sends ApiVersions, the one request every Kafka broker answers
    before authentication, and waits for the answer to carry its correlation id."""
    reasons = []
    tls = ssl_context(settings)
    for server in settings.bootstrap_servers():
        host, _, port = server.rpartition(":")
        try:
            _api_versions(host or server, int(port or 9092), timeout, tls)
            return None
        except ValueError:
            reasons.append(f"{server}: not host:port")
        except TimeoutError:
            reasons.append(f"{server}: accepted a connection but did not answer within {timeout:g} s")
        except (OSError, ProtocolError) as exc:
            reasons.append(f"{server}: {getattr(exc, 'strerror', None) or exc}")
    return "; ".join(reasons)


class ProtocolError(Exception):
    """The peer answered, but not as a Kafka broker would."""


_API_VERSIONS = 18
_CLIENT_ID = b"sentiment-probe"


def _api_versions(host: str, port: int, timeout: float, tls) -> None:
    """Send ApiVersions v0 and read the answer's header, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    correlation_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    request = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    with socket.create_connection((host, port), timeout=timeout) as raw:
        conn = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        conn.sendall(struct.pack(">i", len(request)) + request)
        header = b""
        while len(header) < 8:  # size, then correlation id
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = conn.recv(8 - len(header))
            if not chunk:
                raise ProtocolError("closed the connection without answering a Kafka request")
            header += chunk
    size, answered = struct.unpack(">ii", header)
    if answered != correlation_id or size < 4:
        raise ProtocolError("answered, but not as a Kafka broker (is this the right port?)")


def check_broker(settings: Settings) -> None:
    """At least one bootstrap server answers a Kafka request within the timeout."""
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it), for a service to bind next."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
