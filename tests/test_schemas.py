"""The Python records agree with the JSON Schema files, and the decoder rejects with a reason."""

import dataclasses
import json

import pytest

from schemas import (
    ID_MAX_CHARS,
    SCHEMA_DIR,
    Rejection,
    Review,
    Sentiment,
    decode_review,
    encode_review,
    load_schema,
    utc_iso,
    validator,
)

LIMITS = {"max_text_chars": 1000, "max_message_bytes": 10_000}


@pytest.mark.parametrize(("record", "schema"), [(Review, "review"), (Sentiment, "sentiment")])
def test_record_fields_match_schema(record, schema):
    spec = load_schema(schema)
    fields = {f.name: f for f in dataclasses.fields(record)}
    assert set(fields) == set(spec["properties"])
    no_default = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    assert no_default <= set(spec["required"])
    if schema == "review":
        assert no_default == set(spec["required"])


@pytest.mark.parametrize(("schema", "version"), [("review", 1), ("sentiment", 1), ("sentiment", 2)])
def test_id_limit_of_the_json_schemas_is_the_constant(schema, version):
    """The JSON files are the published contract; ``ID_MAX_CHARS`` is what the code checks and the tables hold."""
    properties = load_schema(schema, version)["properties"]
    assert properties["review_id"]["maxLength"] == properties["movie_id"]["maxLength"] == ID_MAX_CHARS


def test_id_limit_of_the_film_lookup_is_the_constant():
    spec = json.loads((SCHEMA_DIR / "openapi.json").read_text(encoding="utf-8"))
    [parameter] = spec["paths"]["/api/movies/{movie_id}"]["get"]["parameters"]
    assert parameter["schema"]["maxLength"] == ID_MAX_CHARS


def test_sentiment_record_serializes_to_a_valid_event():
    event = Sentiment("r1", "tt1", 0.75, "positive", "abc123", utc_iso(), utc_iso(0))
    validator("sentiment").validate(json.loads(event.to_json()))


def test_version_2_only_adds_uncertain_to_version_1():
    v1, v2 = load_schema("sentiment", 1), load_schema("sentiment", 2)
    assert set(v2["properties"]) - set(v1["properties"]) == {"uncertain"}
    for name, spec in v1["properties"].items():
        if name != "schema_version":
            assert v2["properties"][name] == spec, name  # every old field keeps its meaning
    event = json.loads(Sentiment("r1", "tt1", 0.52, "positive", "abc", utc_iso(), utc_iso(), uncertain=True).to_json())
    assert event["schema_version"] == 2 and event["uncertain"] is True
    validator("sentiment").validate(event)


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
