"""Is the worker alive, and can it do its job? One state object, read by ``/healthz`` (alive: the event loop turns)
and ``/readyz`` (ready) on both HTTP servers (``stream/web/http.py``) and by the ``sentiment_ready`` gauge.

Ready means: the model is loaded, the worker has joined its consumer group, both the database and the broker
answer, and its offsets advance while reviews wait. It stays ready while idle (the database and the broker are probed
every few seconds, not only when a batch is written, and nothing waiting is never a stall), and it is not ready while
either of them is away or while reviews wait and no offset has advanced for ``SENTIMENT_STALL_SECONDS``.
"""

from __future__ import annotations

import threading
import time

from stream.observe import metrics

# /healthz fails when the event loop has not turned for this long (a blocked or dead loop).
LOOP_STALL_SECONDS = 30.0

# What /readyz says of the database, in our words: the driver's own message may name hosts, users or paths, and the
# metrics port listens on every interface. The driver's message goes to the worker's log.
DATABASE_DOWN = "does not answer (the worker's log says why)"
DATABASE_WRITES_FAILING = "writes are failing (the worker's log says why)"


class Health:
    def __init__(self) -> None:
        self.model_loaded = False
        self.joined = False
        self.database_error: str | None = "not checked yet"
        self.broker_error: str | None = "not checked yet"
        self.stalled: str | None = None  # what waits and for how long, while no offset advances
        self.model_error: str | None = None  # it does not run the model store's live version, and why
        self.last_loop_beat = time.monotonic()
        self.stopping = False
        self._lock = threading.Lock()

    def reasons(self) -> list[str]:
        """Why the worker is not ready (empty when it is)."""
        with self._lock:
            found = []
            if self.stopping:
                found.append("stopping")
            if not self.model_loaded:
                found.append("model not loaded")
            if not self.joined:
                found.append("not in its consumer group (joining or rebalancing)")
            if self.database_error:
                found.append(f"database: {self.database_error}")
            if self.broker_error:
                found.append(f"broker: {self.broker_error}")
            if self.stalled:
                found.append(f"not advancing: {self.stalled}")
            if self.model_error:
                found.append(f"model: {self.model_error}")
            return found

    @property
    def ready(self) -> bool:
        return not self.reasons()

    def update(self, **state) -> None:
        with self._lock:
            for key, value in state.items():
                setattr(self, key, value)
        metrics.READY.set(1 if self.ready else 0)

    def beat(self) -> None:
        self.last_loop_beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_loop_beat < LOOP_STALL_SECONDS


# One worker per process: its readiness, read by /readyz and the sentiment_ready gauge.
health = Health()
