"""Property-based: whatever bytes or JSON arrive, the decoder accepts or rejects with a reason; it never raises."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import REJECTION_REASONS, Rejection, Review, _decode_review_fully, decode_review, validator

LIMITS = {"max_text_chars": 2000, "max_message_bytes": 20_000}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
review_like = st.fixed_dictionaries(
    {},
    optional={
        "review_id": json_values | st.text(min_size=1),
        "movie_id": json_values | st.text(min_size=1),
        "text": json_values | st.text(),
        "rating": json_values | st.integers(0, 11),
        "created_at": json_values,
    },
)


def _check(result):
    assert isinstance(result, (Review, Rejection))
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS and result.detail
    else:
        assert result.text.strip() and result.review_id and result.movie_id


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    _check(decode_review(raw, **LIMITS))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_random_json(value):
    _check(decode_review(json.dumps(value).encode(), **LIMITS))


@settings(max_examples=400, deadline=None)
@given(review_like)
def test_review_shaped_json_is_accepted_exactly_when_the_schema_says_so(obj):
    result = decode_review(json.dumps(obj).encode(), **LIMITS)
    _check(result)
    schema_ok = not list(validator("review").iter_errors(obj)) and len(obj.get("text", "")) <= 2000
    assert isinstance(result, Review) == schema_ok


@settings(max_examples=400, deadline=None)
@given(review_like, st.sampled_from([" ", "", "\n"]))
def test_the_fast_decoder_and_the_full_validator_agree(obj, padding):
    raw = (json.dumps(obj, ensure_ascii=False) + padding).encode()
    assert decode_review(raw, **LIMITS) == _decode_review_fully(raw, max_text_chars=LIMITS["max_text_chars"])


CRAFTED = [
    b'{"review_id":"r","movie_id":"m","text":"ok","rating":5.0}',  # an integral float is a JSON Schema integer
    b'{"review_id":"r","movie_id":"m","text":"ok","rating":true}',
    b'{"review_id":"r","movie_id":"m","text":"ok","rating":0}',
    b'{"review_id":"r","movie_id":"m","text":"ok","rating":11}',
    b'{"review_id":"r","movie_id":"m","text":"ok","rating":null,"created_at":null}',
    b'{"review_id":"r","movie_id":"m","text":"ok","created_at":"2020-01-01T00:00:00Z"}',
    b'{"review_id":"r","movie_id":"m","text":"ok","created_at":"yesterday"}',
    b'{"review_id":"r","movie_id":"m","text":"   "}',
    b'{"review_id":"r","movie_id":"m","text":"\\u00a0\\u2003"}',
    b'{"review_id":"","movie_id":"m","text":"ok"}',
    b'{"review_id":"r","movie_id":"m","text":"a","text":"b"}',  # a duplicate key, rejected in both
    b'{"review_id":"r","movie_id":"m","text":"a","extra":{"k":1,"k":2}}',
    b'{"review_id":"r","review_id":"r","movie_id":"m","text":"a\\u003a"}',  # an escaped colon hides no duplicate
    b'{"review_id":"r:1","movie_id":"m:2","text":"a: b: c","rating":3}',
    b'{"review_id":"r","movie_id":"m","text":"a","schema_version":1}',
    b'{"review_id":"r","movie_id":"m","text":"a","schema_version":99}',
    b'{"review_id":"r","movie_id":"m","text":"a","schema_version":true}',
    b'{"review_id":"r","movie_id":"m","text":"a","extra":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"review_id":"r","movie_id":"m","text":"ok","extra":1e999}',
    b'{"review_id":"r","movie_id":"m","text":"ok","extra":NaN}',
    b'{"review_id":"r","movie_id":"m","text":"\\ud800"}',
    b'{"review_id":"\\udfff","movie_id":"m","text":"ok"}',
    b'\xef\xbb\xbf{"review_id":"r","movie_id":"m","text":"ok"}',
    b'{"review_id":"r","movie_id":"m","text":"\xff"}',
    b'{"review_id":"r","movie_id":"m"}',
    b'[{"review_id":"r","movie_id":"m","text":"ok"}]',
    b'{"review_id":"r","movie_id":"m","text":"ok"} trailing',
    b'{"review_id":"r","movie_id":"m","text":"' + b"x" * 2001 + b'"}',
    b'{"review_id":"' + b"r" * 201 + b'","movie_id":"m","text":"ok"}',
    b'{"review_id":"a\\u0000b","movie_id":"m","text":"ok"}',
    b'{"review_id":"r","movie_id":"\\u0000","text":"ok"}',
    b'{"review_id":"r\\t1","movie_id":"m\\n","text":"ok \\u0000 text may hold one"}',
]


def test_crafted_messages_get_the_full_validators_answer():
    for raw in CRAFTED:
        assert decode_review(raw, **LIMITS) == _decode_review_fully(raw, max_text_chars=2000), raw


def test_a_lone_surrogate_is_rejected_not_scored():
    result = decode_review(b'{"review_id":"r","movie_id":"m","text":"ab\\ud800"}', **LIMITS)
    assert result == Rejection("not_utf8", "text: holds a lone surrogate (\\ud800 at character 2)")


def test_an_id_with_a_nul_character_is_rejected_with_its_position():
    """PostgreSQL text cannot hold U+0000: such a review could never be stored, and its batch would be retried
    forever. It is dead-lettered instead; NUL in the text (never stored) is scored."""
    result = decode_review(b'{"review_id":"ab\\u0000","movie_id":"m","text":"ok"}', **LIMITS)
    assert result == Rejection(
        "invalid_value", "review_id: holds a NUL character (U+0000) at character 2: not storable"
    )
    result = decode_review(b'{"review_id":"r","movie_id":"\\u0000","text":"ok"}', **LIMITS)
    assert result.reason == "invalid_value" and result.detail.startswith("movie_id: holds a NUL")
    assert isinstance(decode_review(b'{"review_id":"r","movie_id":"m","text":"a\\u0000b"}', **LIMITS), Review)


@settings(max_examples=400, deadline=None)
@given(review_like, st.data())
def test_a_duplicate_key_anywhere_is_refused_on_both_paths(obj, data):
    """msgspec keeps the last of two equal keys; the fast path must see that there were two."""
    obj = {"review_id": "r", "movie_id": "m", "text": "a: b", **obj}
    key = data.draw(st.sampled_from(sorted(obj)))
    raw = json.dumps(obj, ensure_ascii=False)[:-1] + f", {json.dumps(key)}: {json.dumps(obj[key])}}}"
    result = decode_review(raw.encode(), **LIMITS)
    assert result == _decode_review_fully(raw.encode(), max_text_chars=LIMITS["max_text_chars"])
    assert result == Rejection("invalid_json", f"message has a duplicate key {key[:100]}")


@settings(max_examples=200, deadline=None)
@given(review_like, st.sampled_from(["NaN", "Infinity", "-Infinity"]), st.data())
def test_nan_or_infinity_anywhere_is_refused_with_a_reason(obj, constant, data):
    """Python's json reads NaN and Infinity, which JSON has not; in any field, extra or nested, they are refused."""
    obj = {"review_id": "r", "movie_id": "m", "text": "fine", **obj}
    key = data.draw(st.sampled_from([*sorted(obj), "extra"]))
    nested = data.draw(st.booleans())
    value = f'[1, {{"x": {constant}}}]' if nested else constant
    raw = json.dumps({k: v for k, v in obj.items() if k != key})[:-1] + f", {json.dumps(key)}: {value}}}"
    result = decode_review(raw.encode(), **LIMITS)
    assert result == Rejection("invalid_json", f"message holds {constant}, which is no JSON number (RFC 8259)")


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=12, places=20, allow_nan=False, allow_infinity=False))
def test_a_rating_is_read_as_the_decimal_it_says_never_rounded(rating):
    """9.9999999999999999 is no 10 (a float would round it): only a whole number 1-10 is a rating."""
    text = format(rating, "f")
    raw = f'{{"review_id":"r","movie_id":"m","text":"fine","rating":{text}}}'.encode()
    result = decode_review(raw, **LIMITS)
    if rating == rating.to_integral_value() and 1 <= rating <= 10:
        assert isinstance(result, Review) and result.rating == int(rating)
    else:
        assert isinstance(result, Rejection) and result.detail.startswith("rating:"), (text, result)
        assert (
            text.rstrip("0").rstrip(".")[:10] in result.detail
            or "maximum" in result.detail
            or "minimum" in result.detail
        )


def test_created_at_must_be_rfc_3339():
    from jsonschema import FormatChecker

    assert "date-time" in FormatChecker().checkers  # rfc3339-validator, without which the format is not checked
    for bad in ("2020-13-45T00:00:00Z", "2020-12-01 00:00:00", "yesterday", "2020-12-01T25:00:00Z", "2020-12-01"):
        raw = json.dumps({"review_id": "r", "movie_id": "m", "text": "fine", "created_at": bad}).encode()
        result = decode_review(raw, **LIMITS)
        assert result == Rejection("invalid_value", f"created_at: {bad!r} is not a 'date-time'"), result
    for good in ("2020-12-01T00:00:00Z", "2020-12-01T00:00:00.123+01:00", "1999-02-28t23:59:59-05:30"):
        raw = json.dumps({"review_id": "r", "movie_id": "m", "text": "fine", "created_at": good}).encode()
        assert decode_review(raw, **LIMITS).created_at == good
