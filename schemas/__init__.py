"""Versioned JSON Schemas of the events, and the Python records that follow them.

``review.v1.json`` is what producers send to ``reviews``; ``sentiment.v3.json`` is what
the worker sends to ``sentiments`` (versions 1, without ``uncertain``, and 2, without ``known_share`` and
``readable``, are kept for consumers that pin them).
:func:`decode_review` turns raw message bytes into a :class:`Review` or a :class:`Rejection` with a reason; it never
raises. The HTTP API applies the same rules to what it is sent (:func:`json_object`, :func:`text_problem`,
:func:`id_problem`), so that a text or an id the stream refuses is refused there too, with the same reason.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parent

LABEL_POSITIVE = "positive"
LABEL_NEGATIVE = "negative"

# The most characters a review id or a film id may have: review.v1.json's maxLength, the tables' column width and
# the page's film-id check all mean this one number (a test keeps the JSON Schema files equal to it).
ID_MAX_CHARS = 200


# The version of each event schema that is written now.
CURRENT_VERSION = {"review": 1, "sentiment": 3}


@cache
def load_schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema ``name`` ("review" or "sentiment"), the current version unless ``version`` says otherwise."""
    version = version or CURRENT_VERSION[name]
    return json.loads((SCHEMA_DIR / f"{name}.v{version}.json").read_text(encoding="utf-8"))


@cache
def validator(name: str, version: int | None = None) -> Draft202012Validator:
    """The schema's validator, formats checked: ``created_at`` must be RFC 3339 (jsonschema checks "date-time" only
    with its optional package rfc3339-validator, a dependency of ours for this: without it the format is silently
    not checked, so its absence is an error here)."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:
        raise RuntimeError("jsonschema cannot check date-time formats: install rfc3339-validator (pip install -e .)")
    return Draft202012Validator(load_schema(name, version), format_checker=checker)


# Review and Sentiment are made once per message: plain slotted dataclasses, not frozen ones, which cost 3-7 times as
# much to make (a frozen Sentiment 3.4 us against 0.45 us, positional). Nothing changes one once it is made.
@dataclass(slots=True)
class Review:
    review_id: str
    movie_id: str
    text: str
    rating: int | None = None
    created_at: str | None = None


@dataclass(slots=True)
class Sentiment:
    review_id: str
    movie_id: str
    score: float
    label: str
    model_version: str
    scored_at: str
    event_time: str
    uncertain: bool = False
    known_share: float = 1.0  # of the review's n-grams, the share the model knows
    readable: bool = True  # known_share is at least SENTIMENT_MIN_KNOWN_SHARE: the score is a judgement
    schema_version: int = 3

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, fields in schema order (msgspec: 0.5 us instead of json's 12)."""
        return _ENCODER.encode(self)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message could not be scored. ``reason`` is a short code (a metric label)."""

    reason: str
    detail: str

    def at(self, where: str) -> Rejection:
        """The same rejection, its detail said of ``where`` (a field, or ``texts[3]`` in an API request)."""
        return Rejection(self.reason, f"{where}: {self.detail}")


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
    "unknown_schema_version",
)

_REASON_BY_KEYWORD = {
    "required": "missing_field",
    "type": "wrong_type",
    "minLength": "empty_field",
    "pattern": "invalid_value",  # (text's pattern, a non-space character, is text_problem's empty_field)
    "maxLength": "invalid_value",
    "minimum": "invalid_value",
    "maximum": "invalid_value",
    "format": "invalid_value",
    "const": "unknown_schema_version",  # the schema's only const: schema_version
}


def label_for(score: float) -> str:
    return LABEL_POSITIVE if score >= 0.5 else LABEL_NEGATIVE


def is_uncertain(score: float, band: float) -> bool:
    """True when the score lies within ``band`` of 0.5: the model cannot tell (``SENTIMENT_UNCERTAIN_BAND``)."""
    return abs(score - 0.5) < band


def is_readable(known_share: float, floor: float) -> bool:
    """False when the model knows less than ``floor`` of a text's n-grams (``SENTIMENT_MIN_KNOWN_SHARE``): its score
    is then mostly the model's base value, no judgement of the text, and it stays out of its film's mean."""
    return known_share >= floor


class _ValidReview(msgspec.Struct):
    """review.v1.json's rules for the common case, checked while parsing. Anything it does not accept (a date in
    created_at, an integral float as rating, a wrong type, ...) goes to the full JSON Schema validator, which accepts
    it or names the reason: the fast path never decides a rejection, so the reasons stay the schema's."""

    review_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]
    movie_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]
    text: str
    # UNSET when absent, so that the fields present can be counted (see _nothing_else)
    rating: Annotated[int, msgspec.Meta(ge=1, le=10)] | None | msgspec.UnsetType = msgspec.UNSET
    created_at: None | msgspec.UnsetType = msgspec.UNSET  # a date goes the full way: its format is the validator's
    schema_version: Literal[1] | msgspec.UnsetType = msgspec.UNSET


_FAST_DECODER = msgspec.json.Decoder(_ValidReview)
_UNSET = msgspec.UNSET
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
    if (
        not _NON_SPACE.search(fast.text)
        or "\x00" in fast.review_id
        or "\x00" in fast.movie_id
        or not _nothing_else(raw, fast)
    ):
        return _decode_review_fully(raw, max_text_chars=max_text_chars)
    # (msgspec refuses a lone surrogate itself: what it accepts is text, so only the length is left to check)
    if len(fast.text) > max_text_chars:
        return _too_long(fast.text, max_text_chars).at("text")
    rating = None if fast.rating is _UNSET else fast.rating
    return Review(fast.review_id, fast.movie_id, fast.text, rating, None)


def _nothing_else(raw: bytes, fast: _ValidReview) -> bool:
    """True when ``raw`` holds no member but the fields msgspec filled: no duplicate key (msgspec keeps the last one)
    and no extra field. Each colon in the bytes is a member's or one inside a string, so as many colons as fields
    proves it; so does one more per colon inside those fields' strings, unless a colon there was escaped (\\u003a),
    which the bytes do not show. Anything else (a duplicate, an extra field, an escaped colon) goes the full way,
    which reads every key. Costs a scan of the bytes, and of the text when it holds a colon."""
    fields = 3 + (fast.rating is not _UNSET) + (fast.created_at is not _UNSET) + (fast.schema_version is not _UNSET)
    colons = raw.count(b":")
    if colons == fields:
        return True
    in_strings = fast.text.count(":") + fast.review_id.count(":") + fast.movie_id.count(":")
    return colons == fields + in_strings and b"\\u003" not in raw


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


class _NotFinite(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _not_finite(name: str) -> Any:
    raise _NotFinite(name)


INTEGRAL_DIGITS = 400


class WrittenNumber(Decimal):
    """A decimal that remembers how it was written (an error message quotes it so)."""

    written: str

    def __str__(self) -> str:
        return self.written[:40] + ("..." if len(self.written) > 40 else "")


def _number(text: str) -> int | Decimal:
    """A JSON number with a fraction or an exponent, read as the decimal it says, never rounded to a float
    (``9.9999999999999999`` is not 10, ``1e400`` is not infinity): an integral one of a sensible size is an int (so
    ``10.0`` is the integer 10 it says), any other stays a :class:`~decimal.Decimal`."""
    value = WrittenNumber(text)
    # JSON Schema's integers include 1e22 and 1.5e300 (no fraction); the bound keeps 1e999999999 from becoming an int
    # of a billion digits (a 400-digit int is nothing to build), and every double's range is under it
    if value.adjusted() < INTEGRAL_DIGITS and value == value.to_integral_value():
        return int(value)
    value.written = text
    return value


def duplicate_key(raw: bytes) -> str | None:
    """The first key that some object of the JSON ``raw`` holds twice, or None (``raw`` is known to be JSON)."""
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return exc.key
    except ValueError:
        return None
    return None


def json_object(raw: bytes, name: str = "message", framing: int = 0) -> dict[str, Any] | Rejection:
    """``raw`` read as a JSON object, or why not: the one reading of JSON for the stream's messages and the API's
    request bodies. UTF-8; no NaN, Infinity or -Infinity anywhere (Python's json takes them; JSON has none, and
    they would reach the results); numbers with a fraction as decimals, not floats; no key twice in an object
    (which value would count is a parser's whim); nested at most
    ``MAX_JSON_DEPTH`` deep (a fixed rule: where Python's recursion limit bites depends on the caller's stack, so
    the stream and the API would disagree near it). ``framing`` is how many levels deeper than a review's fields
    the document holds its texts (the API's ``texts`` list: 1), so that the same text is as deep on both paths."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"{name} is not UTF-8: {exc.reason} at byte {exc.start}")
    most = MAX_JSON_DEPTH + framing
    if raw.count(b"[") + raw.count(b"{") > most and _nesting(text) > most:
        return Rejection("invalid_json", f"{name} is nested too deeply to read (more than {MAX_JSON_DEPTH} levels)")
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_finite, parse_float=_number)
    except _DuplicateKey as exc:
        return Rejection("invalid_json", f"{name} has a duplicate key {exc.key[:100]}")
    except _NotFinite as exc:
        return Rejection("invalid_json", f"{name} holds {exc.name}, which is no JSON number (RFC 8259)")
    except ValueError as exc:
        return Rejection("invalid_json", f"{name} is not JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"{name} is JSON {type(obj).__name__}, not an object")
    return obj


MAX_JSON_DEPTH = 64  # a review is two levels deep; an API body three


def _nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text, outside its strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def text_problem(text: str, max_text_chars: int) -> Rejection | None:
    """Why the stream refuses ``text`` as a review's text (detail to be said ``.at`` where), or None."""
    if not _NON_SPACE.search(text):
        return Rejection("empty_field", "holds no character other than white space")
    if len(text) > max_text_chars:
        return _too_long(text, max_text_chars)
    return lone_surrogate(text)


def id_problem(value: str) -> Rejection | None:
    """Why the stream refuses ``value`` as a review id or a film id (detail to be said ``.at`` where), or None."""
    if not value:
        return Rejection("empty_field", "is empty")
    if len(value) > ID_MAX_CHARS:
        return Rejection("invalid_value", f"is {len(value)} characters, the limit is {ID_MAX_CHARS}")
    if "\x00" in value:  # PostgreSQL text cannot hold it: the review could never be stored
        return Rejection(
            "invalid_value", f"holds a NUL character (U+0000) at character {value.index(chr(0))}: not storable"
        )
    return lone_surrogate(value)


def lone_surrogate(value: str) -> Rejection | None:
    """A ``not_utf8`` rejection when ``value`` holds half a surrogate pair, which JSON can escape but is no text."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Rejection(
            "not_utf8", f"holds a lone surrogate (\\u{ord(value[exc.start]):04x} at character {exc.start})"
        )
    return None


def _decode_review_fully(raw: bytes, *, max_text_chars: int) -> Review | Rejection:
    obj = json_object(raw)
    if isinstance(obj, Rejection):
        return obj
    try:  # a type error first: "1" as schema_version is mistyped before it is unknown
        errors = sorted(
            validator("review").iter_errors(obj), key=lambda e: (list(e.path), e.validator != "type", e.validator)
        )
    except RecursionError:  # a value nested nearly as deep as the parser allows, shown in an error message
        return Rejection("invalid_json", "message is nested too deeply to read")
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "message"
        if where in ("review_id", "movie_id") and first.validator in ("minLength", "maxLength", "pattern"):
            return id_problem(first.instance).at(where)  # our words, the same as the API's
        if where == "text" and first.validator == "pattern":
            return text_problem(first.instance, max_text_chars).at(where)
        if where == "schema_version" and first.validator == "const":
            return Rejection(
                "unknown_schema_version", f"schema_version: {str(first.instance)[:20]} is not 1, the only version known"
            )
        message = first.message
        if isinstance(first.instance, Decimal):  # said as it was written, not as Decimal('...')
            message = message.replace(repr(first.instance), str(first.instance))
        return Rejection(_REASON_BY_KEYWORD.get(str(first.validator), "invalid_value"), f"{where}: {message[:200]}")
    for name in ("review_id", "movie_id"):
        if problem := lone_surrogate(obj[name]):
            return problem.at(name)
    if problem := text_problem(obj["text"], max_text_chars):
        return problem.at("text")
    return Review(obj["review_id"], obj["movie_id"], obj["text"], obj.get("rating"), obj.get("created_at"))


def _too_long(text: str, max_text_chars: int) -> Rejection:
    return Rejection("text_too_long", f"is {len(text)} characters, the limit is {max_text_chars}")


def review_event(review: Review) -> dict[str, Any]:
    """The ``review`` event of a :class:`Review`: its fields in schema order, those that are None left out."""
    return {k: v for k, v in asdict(review).items() if v is not None}


def encode_review(review: Review) -> bytes:
    """The bytes a producer sends to ``reviews``: compact UTF-8 JSON of :func:`review_event`."""
    return json.dumps(review_event(review), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def utc_iso(ts: float | None = None) -> str:
    """A POSIX timestamp (now when None) as an RFC 3339 UTC string with milliseconds: what
    ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` says, with "Z" for "+00:00", and the same
    errors for a timestamp that is no date. The text of the whole second is made once per second (every review of
    a batch has a timestamp, and formatting each from scratch was 2-6% of the worker's time)."""
    if ts is None:
        ts = time.time()
    # as datetime.fromtimestamp rounds: to the microsecond, half to even, carried into the second
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return f"{_whole_second(int(whole))}.{micros // 1000:03d}Z"


@lru_cache(maxsize=64)
def _whole_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:19]  # (years always 4 digits)
