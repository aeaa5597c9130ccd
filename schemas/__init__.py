"""Versioned JSON Schemas of the events, and the Python records that follow them.

``review.v1.json`` is what producers send to ``reviews``; ``sentiment.v2.json`` is what
the worker sends to ``sentiments`` (version 1, without ``uncertain``, is kept for consumers that pin it). :func:`decode_review` turns raw message bytes into a
:class:`Review` or a :class:`Rejection` with a reason; it never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import msgspec
from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parent

LABEL_POSITIVE = "positive"
LABEL_NEGATIVE = "negative"

# The most characters a review id or a film id may have: review.v1.json's maxLength, the tables' column width and
# the page's film-id check all mean this one number (a test keeps the JSON Schema files equal to it).
ID_MAX_CHARS = 200


# The version of each event schema that is written now.
CURRENT_VERSION = {"review": 1, "sentiment": 2}


@cache
def load_schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema ``name`` ("review" or "sentiment"), the current version unless ``version`` says otherwise."""
    version = version or CURRENT_VERSION[name]
    return json.loads((SCHEMA_DIR / f"{name}.v{version}.json").read_text(encoding="utf-8"))


@cache
def validator(name: str, version: int | None = None) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name, version), format_checker=FormatChecker())


@dataclass(frozen=True, slots=True)
class Review:
    review_id: str
    movie_id: str
    text: str
    rating: int | None = None
    created_at: str | None = None


@dataclass(frozen=True, slots=True)
class Sentiment:
    review_id: str
    movie_id: str
    score: float
    label: str
    model_version: str
    scored_at: str
    event_time: str
    uncertain: bool = False
    schema_version: int = 2

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, fields in schema order (msgspec: 0.5 us instead of json's 12)."""
        return _ENCODER.encode(self)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message could not be scored. ``reason`` is a short code (a metric label)."""

    reason: str
    detail: str


# The reason codes a rejection can carry; metrics are labelled with these and nothing else.
REJECTION_REASONS = (
    "too_large",
    "not_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "empty_field",
    "text_too_long",
    "invalid_value",
)

_REASON_BY_KEYWORD = {
    "required": "missing_field",
    "type": "wrong_type",
    "minLength": "empty_field",
    "pattern": "empty_field",
    "maxLength": "invalid_value",
    "minimum": "invalid_value",
    "maximum": "invalid_value",
    "format": "invalid_value",
}


def label_for(score: float) -> str:
    return LABEL_POSITIVE if score >= 0.5 else LABEL_NEGATIVE


def is_uncertain(score: float, band: float) -> bool:
    """True when the score lies within ``band`` of 0.5: the model cannot tell (``SENTIMENT_UNCERTAIN_BAND``)."""
    return abs(score - 0.5) < band


class _ValidReview(msgspec.Struct):
    """review.v1.json's rules for the common case, checked while parsing. Anything it does not accept (a date in
    created_at, an integral float as rating, a wrong type, ...) goes to the full JSON Schema validator, which accepts
    it or names the reason: the fast path never decides a rejection, so the reasons stay the schema's."""

    review_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]
    movie_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]
    text: str
    rating: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    created_at: None = None  # a date goes the full way: its format rules are the validator's


_FAST_DECODER = msgspec.json.Decoder(_ValidReview)
_ENCODER = msgspec.json.Encoder()
_NON_SPACE = re.compile(r"\S")  # the schema's pattern for text, searched as jsonschema does


def decode_review(raw: bytes | None, *, max_text_chars: int, max_message_bytes: int) -> Review | Rejection:
    """Bytes from the ``reviews`` topic -> a valid :class:`Review`, or a :class:`Rejection`."""
    if raw is None:
        return Rejection("invalid_json", "message has no value")
    if len(raw) > max_message_bytes:
        return Rejection("too_large", f"message is {len(raw)} bytes, the limit is {max_message_bytes}")
    try:
        fast = _FAST_DECODER.decode(raw)
    except Exception:  # noqa: BLE001 - whatever msgspec refuses, the full path accepts or names the reason
        return _decode_review_fully(raw, max_text_chars=max_text_chars)
    if not _NON_SPACE.search(fast.text) or "\x00" in fast.review_id or "\x00" in fast.movie_id:
        return _decode_review_fully(raw, max_text_chars=max_text_chars)
    # (msgspec refuses a lone surrogate itself: what it accepts is text, so only the length is left to check)
    if len(fast.text) > max_text_chars:
        return _too_long(fast.text, max_text_chars)
    return Review(fast.review_id, fast.movie_id, fast.text, fast.rating, None)


def _decode_review_fully(raw: bytes, *, max_text_chars: int) -> Review | Rejection:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"message is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Rejection("invalid_json", f"message is not JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"message is JSON {type(obj).__name__}, not an object")
    errors = sorted(validator("review").iter_errors(obj), key=lambda e: (list(e.path), e.validator))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "message"
        reason = _REASON_BY_KEYWORD.get(str(first.validator), "invalid_value")
        if first.validator == "pattern" and where != "text":
            reason = "invalid_value"
            if where in ("review_id", "movie_id"):  # the schema's only pattern on them: no NUL
                at = first.instance.index("\x00")
                return Rejection(reason, f"{where}: holds a NUL character (U+0000) at character {at}: not storable")
        return Rejection(reason, f"{where}: {first.message[:200]}")
    review = Review(
        review_id=obj["review_id"],
        movie_id=obj["movie_id"],
        text=obj["text"],
        rating=obj.get("rating"),
        created_at=obj.get("created_at"),
    )
    return _checked(review, max_text_chars)


def _checked(review: Review, max_text_chars: int) -> Review | Rejection:
    if len(review.text) > max_text_chars:
        return _too_long(review.text, max_text_chars)
    for name in ("review_id", "movie_id", "text"):
        value = getattr(review, name)
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # JSON can escape half a surrogate pair; it is not text
                return Rejection(
                    "not_utf8",
                    f"{name}: holds a lone surrogate (\\u{ord(value[exc.start]):04x} at character {exc.start})",
                )
    return review


def _too_long(text: str, max_text_chars: int) -> Rejection:
    return Rejection("text_too_long", f"text is {len(text)} characters, the limit is {max_text_chars}")


def review_event(review: Review) -> dict[str, Any]:
    """The ``review`` event of a :class:`Review`: its fields in schema order, those that are None left out."""
    return {k: v for k, v in asdict(review).items() if v is not None}


def encode_review(review: Review) -> bytes:
    """The bytes a producer sends to ``reviews``: compact UTF-8 JSON of :func:`review_event`."""
    return json.dumps(review_event(review), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def utc_iso(ts: float | None = None) -> str:
    """A POSIX timestamp (now when None) as an RFC 3339 UTC string with milliseconds."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
