"""One micro-batch, start to finish, with no Kafka in it: decode and validate -> score -> results.

The worker hands raw messages in and gets back the ``sentiments`` events to send and the rejected
messages to dead-letter, each with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from model.scorer import Inspection, Scorer
from schemas import Rejection, Review, Sentiment, decode_review, is_readable, is_uncertain, label_for, utc_iso

log = logging.getLogger("sentiment.worker")


class Incoming(NamedTuple):
    """A message as read from the ``reviews`` topic. A named tuple, not a dataclass: the lean path makes one per
    message straight from the fetched record, and a frozen dataclass costs three times as much to make."""

    value: bytes | None
    key: bytes | None = None
    timestamp: float | None = None  # seconds since the epoch
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class ShadowScores:
    """A shadow version's scores of a batch's scored reviews, in the same order. They go nowhere but to metrics."""

    version: str
    scores: np.ndarray


@dataclass(slots=True)
class BatchResult:
    sentiments: list[Sentiment] = field(default_factory=list)
    rejected: list[tuple[Incoming, Rejection]] = field(default_factory=list)
    inputs: Inspection | None = None  # what the scored reviews looked like to the model, for input drift
    ratings: list[int | None] = field(default_factory=list)  # each result's review's rating (1-10), None: unrated
    # the shadow version's scores of the same reviews, one per result in the same order, when one is set; the
    # observer compares them with the live ones (agreement; accuracy on the rated ones: stream/observe/accuracy.py)
    shadow: ShadowScores | None = None
    sentiments_sent: bool = False  # set once the broker has the sentiments: a retry sends only what is left


def dead_letter(
    message: Incoming, rejection: Rejection, max_payload: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The dead-letter record of a rejected message: key, value (at most ``max_payload`` bytes of each: a message
    too large for the results topic must not block its partition) and headers that say why, where from, and how
    large the original was."""
    value = message.value or b""
    truncated = len(value) > max_payload or len(message.key or b"") > max_payload
    key = message.key[:max_payload] if message.key is not None else None
    return (
        key,
        value[:max_payload],
        dead_letter_headers(message, rejection, original_size=len(value), truncated=truncated),
    )


def dead_letter_headers(
    message: Incoming, rejection: Rejection, *, original_size: int | None = None, truncated: bool = False
) -> list[tuple[str, bytes]]:
    """Kafka headers that say why and where from a message was rejected."""
    size = len(message.value or b"") if original_size is None else original_size
    return [
        ("dlq.reason", rejection.reason.encode()),
        ("dlq.detail", rejection.detail.encode("utf-8", "replace")),
        ("dlq.topic", message.topic.encode()),
        ("dlq.partition", str(message.partition).encode()),
        ("dlq.offset", str(message.offset).encode()),
        ("dlq.size", str(size).encode()),
        ("dlq.truncated", b"true" if truncated else b"false"),
    ]


def _bad_timestamp(timestamp: float) -> Rejection:
    return Rejection(
        "invalid_value", f"message timestamp {timestamp * 1000:.0f} ms is not a date between the years 1 and 9999"
    )


class BatchScorer:
    def __init__(
        self,
        scorer: Scorer,
        *,
        max_text_chars: int,
        max_message_bytes: int,
        uncertain_band: float = 0.1,
        min_known_share: float = 0.3,
    ) -> None:
        self.scorer = scorer
        self.shadow: Scorer | None = None  # a second version that scores every batch too (results kept out)
        self.uncertain_band = uncertain_band
        self.min_known_share = min_known_share
        self.max_text_chars = max_text_chars
        self.max_message_bytes = max_message_bytes

    def process(self, messages: Sequence[Incoming]) -> BatchResult:
        """Decode every message, score the valid reviews in one model call, build one result each; with a shadow
        set, score them with it too. The scorers are read once: a swap while this runs changes the next batch."""
        scorer, shadow = self.scorer, self.shadow
        result = BatchResult()
        valid: list[tuple[Review, str | None]] = []  # with the event time, None when the message has none
        event_times: dict[float, str] = {}  # the reviews of a burst share their timestamps: each is formatted once
        for message in messages:
            decoded = decode_review(
                message.value, max_text_chars=self.max_text_chars, max_message_bytes=self.max_message_bytes
            )
            if isinstance(decoded, Rejection):
                result.rejected.append((message, decoded))
                continue
            event_time = None
            if message.timestamp is not None:
                # any 64-bit integer is a valid Kafka timestamp; not every one is a date
                try:
                    event_time = event_times.get(message.timestamp)
                    if event_time is None:
                        event_time = event_times[message.timestamp] = utc_iso(message.timestamp)
                except (ValueError, OverflowError, OSError):
                    result.rejected.append((message, _bad_timestamp(message.timestamp)))
                    continue
            valid.append((decoded, event_time))
        if not valid:
            return result
        texts = [review.text for review, _ in valid]
        result.inputs = scorer.inspect(texts)  # the scores and more, one call
        result.ratings = [review.rating for review, _ in valid]
        if shadow is not None:
            try:
                result.shadow = ShadowScores(shadow.version, shadow.score(texts))
            except Exception as exc:  # noqa: BLE001 - the shadow must never cost the live results
                log.warning("shadow model %s failed on a batch of %d: %s", shadow.version, len(texts), exc)
        scored_at = utc_iso()
        shares = result.inputs.known_shares().tolist()
        for (review, event_time), score, share in zip(valid, result.inputs.scores, shares):
            score = float(score)
            result.sentiments.append(
                Sentiment(  # positional (a third cheaper than by keyword), in the order of its fields
                    review.review_id,
                    review.movie_id,
                    score,
                    label_for(score),
                    scorer.version,
                    scored_at,
                    event_time or scored_at,
                    is_uncertain(score, self.uncertain_band),
                    share,
                    is_readable(share, self.min_known_share),
                )
            )
        return result
