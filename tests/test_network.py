"""The broker probe asks a real question: a port that only accepts connections is not a broker."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from core.errors import UserError
from core.network import broker_unreachable, check_broker
from core.settings import Settings


class SilentServer:
    """Accepts TCP connections and then says nothing (a frozen broker looks exactly like this), or says ``reply``."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.reply is not None:
                conn.recv(1024)
                conn.sendall(self.reply)
                conn.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    "reply, expected",
    [
        (None, "did not answer within 0.5 s"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not as a Kafka broker"),
        (b"", "without answering"),
    ],
)
def test_a_port_that_is_not_a_working_broker_is_reported_within_the_timeout(reply, expected):
    server = SilentServer(reply)
    try:
        started = time.monotonic()
        reason = broker_unreachable(Settings(broker=f"kafka://127.0.0.1:{server.port}"), 0.5)
        assert time.monotonic() - started < 2
        assert reason is not None and expected in reason, reason
    finally:
        server.close()


def test_check_broker_says_what_to_do():
    server = SilentServer()
    try:
        with pytest.raises(UserError) as caught:
            check_broker(Settings(broker=f"127.0.0.1:{server.port}", connect_timeout=0.3))
        assert "did not answer" in caught.value.message and "SENTIMENT_BROKER" in caught.value.hint
    finally:
        server.close()


@pytest.mark.integration
def test_a_frozen_broker_is_unreachable_and_a_resumed_one_is_back(broker):
    settings = Settings(broker=broker.url)
    assert broker_unreachable(settings, 2.0) is None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reason = broker_unreachable(settings, 1.0)
        assert reason is not None and "did not answer within 1 s" in reason
        assert time.monotonic() - started < 3
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert broker_unreachable(settings, 2.0) is None
