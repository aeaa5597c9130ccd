"""Retry a write until it succeeds, with backoff: a failed write is waited out, never skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.messages import first_line

log = logging.getLogger("sentiment.worker")

T = TypeVar("T")


async def retry_with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    stopping: Callable[[], bool],
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    on_failure: Callable[[Exception], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run ``attempt`` until it succeeds, sleeping longer after each failure. Cancellation ends it, and so does a
    failure once ``stopping()`` is true (raised as ``CancelledError``: the caller's batch stays unacked)."""
    delay = first_delay
    failures = 0
    while True:
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a write is retried
            failures += 1
            if on_failure is not None:
                on_failure(exc)
            if stopping():
                log.warning("%s failed while stopping; the batch stays unacked: %s", what, first_line(exc))
                raise asyncio.CancelledError() from exc
            log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, failures, delay, first_line(exc))
            await sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            if failures:
                log.info("%s succeeded after %d failed attempts", what, failures)
            return result
