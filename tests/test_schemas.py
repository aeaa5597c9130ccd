"""The Python records agree with the JSON Schema files, and the decoder rejects with a reason."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas import (
    ID_MAX_CHARS,
    REJECTION_REASONS,
    SCHEMA_DIR,
    Rejection,
    Review,
    Sentiment,
    decode_review,
    encode_review,
    id_problem,
    load_schema,
    text_problem,
    utc_iso,
    validator,
)

LIMITS = {"max_text_chars": 1000, "max_message_bytes": 10_000}


@pytest.mark.parametrize(("record", "schema"), [(Review, "review"), (Sentiment, "sentiment")])
def test_record_fields_match_schema(record, schema):
    spec = load_schema(schema)
    fields = {f.name: f for f in dataclasses.fields(record)}
    # a review's schema_version is checked while decoding (only 1 is known) and not kept: a Review is version 1
    assert set(fields) == set(spec["properties"]) - ({"schema_version"} if schema == "review" else set())
    no_default = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    assert no_default <= set(spec["required"])
    if schema == "review":
        assert no_default == set(spec["required"])


@pytest.mark.parametrize(("schema", "version"), [("review", 1), ("sentiment", 1), ("sentiment", 2), ("sentiment", 3)])
def test_id_limit_of_the_json_schemas_is_the_constant(schema, version):
    """The JSON files are the published contract; ``ID_MAX_CHARS`` is what the code checks and the tables hold."""
    properties = load_schema(schema, version)["properties"]
    assert properties["review_id"]["maxLength"] == properties["movie_id"]["maxLength"] == ID_MAX_CHARS


def test_id_limit_of_the_film_lookup_is_the_constant():
    spec = json.loads((SCHEMA_DIR / "openapi.json").read_text(encoding="utf-8"))
    [parameter] = spec["paths"]["/api/movies/{movie_id}"]["get"]["parameters"]
    assert parameter["schema"]["maxLength"] == ID_MAX_CHARS


def test_the_api_error_reasons_are_the_rejection_reasons():
    spec = json.loads((SCHEMA_DIR / "openapi.json").read_text(encoding="utf-8"))
    assert tuple(spec["components"]["schemas"]["Error"]["properties"]["reason"]["enum"]) == REJECTION_REASONS


def test_sentiment_record_serializes_to_a_valid_event():
    event = Sentiment("r1", "tt1", 0.75, "positive", "abc123", utc_iso(), utc_iso(0))
    validator("sentiment").validate(json.loads(event.to_json()))


@pytest.mark.parametrize(("old", "new", "added"), [(1, 2, {"uncertain"}), (2, 3, {"known_share", "readable"})])
def test_each_version_only_adds_fields(old, new, added):
    before, after = load_schema("sentiment", old), load_schema("sentiment", new)
    assert set(after["properties"]) - set(before["properties"]) == added
    assert set(after["required"]) - set(before["required"]) == added
    for name, spec in before["properties"].items():
        if name != "schema_version":
            assert after["properties"][name] == spec, name  # every old field keeps its meaning


def test_an_unreadable_result_is_a_valid_version_3_event():
    unreadable = Sentiment(
        "r1", "tt1", 0.496, "negative", "abc", utc_iso(), utc_iso(), uncertain=True, known_share=0.0, readable=False
    )
    event = json.loads(unreadable.to_json())
    assert event["schema_version"] == 3 and event["known_share"] == 0.0 and event["readable"] is False
    validator("sentiment").validate(event)
    assert list(validator("sentiment", 2).iter_errors(event))  # a consumer pinned to version 2 sees it is newer
    for bad in ({"known_share": 1.5}, {"readable": "no"}, {"schema_version": 2}):
        assert list(validator("sentiment").iter_errors(event | bad)), bad


def test_round_trip_of_a_review():
    review = Review("r1", "tt1", "Loved it", rating=9, created_at="2024-05-01T12:00:00Z")
    assert decode_review(encode_review(review), **LIMITS) == review


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", "not_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b'{"movie_id": "tt1", "text": "x"}', "missing_field"),
        (b'{"review_id": null, "movie_id": "tt1", "text": "x"}', "wrong_type"),
        (b'{"review_id": 5, "movie_id": "tt1", "text": "x"}', "wrong_type"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": " \\n\\t "}', "empty_field"),
        (b'{"review_id": "", "movie_id": "tt1", "text": "x"}', "empty_field"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "rating": 11}', "invalid_value"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "created_at": "yesterday"}', "invalid_value"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "' + b"a" * 1001 + b'"}', "text_too_long"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "review_id": "s"}', "invalid_json"),
        (
            b'{"review_id": "r", "movie_id": "tt1", "text": "x", "extra": ' + b"[" * 2000 + b"]" * 2000 + b"}",
            "invalid_json",
        ),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "schema_version": 99}', "unknown_schema_version"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "schema_version": 2.0}', "unknown_schema_version"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "schema_version": "1"}', "wrong_type"),
        (b'{"review_id": "r", "movie_id": "tt1", "text": "x", "schema_version": null}', "wrong_type"),
        (b'{"review_id": "r", "movie_id": "\\udc00", "text": "x"}', "not_utf8"),
        (b"x" * 10_001, "too_large"),
        (None, "invalid_json"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw, reason):
    result = decode_review(raw, **LIMITS)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_unknown_fields_are_accepted_and_ignored():
    result = decode_review(b'{"review_id": "r", "movie_id": "tt1", "text": "ok", "lang": "en"}', **LIMITS)
    assert result == Review("r", "tt1", "ok")


def test_decoder_agrees_with_the_schema_on_accepted_messages():
    raw = {"review_id": "r", "movie_id": "tt1", "text": "<script>alert(1)</script>'; DROP TABLE x;--"}
    assert not list(validator("review").iter_errors(raw))
    assert isinstance(decode_review(json.dumps(raw).encode(), **LIMITS), Review)


def test_a_duplicate_key_is_rejected_not_last_one_wins():
    """Which of two values a parser keeps is its whim; the review would be stored as the second id with the second
    text. Anywhere in the message, on the fast path as on the full one."""
    raw = b'{"review_id": "r1", "movie_id": "tt1", "text": "first", "review_id": "r2", "text": "second"}'
    assert decode_review(raw, **LIMITS) == Rejection("invalid_json", "message has a duplicate key review_id")
    nested = b'{"review_id": "r", "movie_id": "tt1", "text": "ok", "source": {"app": 1, "app": 2}}'
    assert decode_review(nested, **LIMITS) == Rejection("invalid_json", "message has a duplicate key app")


def test_schema_version_1_is_read_and_any_other_is_set_aside():
    ok = b'{"review_id": "r", "movie_id": "tt1", "text": "ok", "schema_version": 1}'
    assert decode_review(ok, **LIMITS) == Review("r", "tt1", "ok")
    later = decode_review(b'{"review_id": "r", "movie_id": "tt1", "text": "ok", "schema_version": 99}', **LIMITS)
    assert later == Rejection("unknown_schema_version", "schema_version: 99 is not 1, the only version known")


@pytest.mark.parametrize("depth", [100, 990, 1000, 100_000])
def test_deep_nesting_is_bad_json_not_a_crash(depth):
    raw = b'{"review_id": "r", "movie_id": "tt1", "text": ' + b"[" * depth + b"]" * depth + b"}"
    result = decode_review(raw, max_text_chars=1000, max_message_bytes=1_000_000)
    assert isinstance(result, Rejection) and result.reason in ("wrong_type", "invalid_json")


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("", "empty_field", "holds no character other than white space"),
        (" \n\t\u3000", "empty_field", "holds no character other than white space"),
        ("a" * 1001, "text_too_long", "is 1001 characters, the limit is 1000"),
        ("ab\ud800", "not_utf8", "holds a lone surrogate (\\ud800 at character 2)"),
        ("fine \x00 text", None, None),
    ],
)
def test_the_text_rule_is_the_decoders(text, reason, detail):
    """What the API asks of each text is what the stream asks of a review's text, in the same words."""
    problem = text_problem(text, 1000)
    assert (problem.reason, problem.detail) == (reason, detail) if reason else problem is None
    decoded = decode_review(json.dumps({"review_id": "r", "movie_id": "m", "text": text}).encode(), **LIMITS)
    assert decoded == (problem.at("text") if reason else Review("r", "m", text))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty_field"),
        ("m" * 201, "invalid_value"),
        ("tt\x001", "invalid_value"),
        ("\udfff", "not_utf8"),
        ("tt1", None),
    ],
)
def test_the_id_rule_is_the_decoders(value, reason):
    problem = id_problem(value)
    assert (problem.reason if problem else None) == reason
    decoded = decode_review(json.dumps({"review_id": "r", "movie_id": value, "text": "ok"}).encode(), **LIMITS)
    assert decoded == (problem.at("movie_id") if reason else Review("r", value, "ok"))


@hypothesis_settings(max_examples=2000, deadline=None)
@given(
    ts=st.one_of(
        st.floats(min_value=-62_135_596_800, max_value=253_402_300_799, allow_nan=False),  # years 1 to 9999
        st.integers(0, 4_102_444_800_000).map(lambda ms: ms / 1000),  # Kafka's milliseconds, as Faust gives them
        st.integers(0, 4_102_444_800).map(lambda s: s + 0.9995),  # rounding that carries into the next second
    )
)
def test_event_times_are_formatted_as_datetime_formats_them(ts):
    from datetime import UTC, datetime

    try:
        expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError) as exc:
        with pytest.raises(type(exc)):
            utc_iso(ts)
    else:
        assert utc_iso(ts) == expected


@pytest.mark.parametrize("ts", [1e20, -1e20, 253_402_300_800.0, float("inf")])
def test_a_timestamp_that_is_no_date_raises_as_datetime_does(ts):
    with pytest.raises((ValueError, OverflowError, OSError)):
        utc_iso(ts)
