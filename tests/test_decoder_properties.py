"""Property-based: whatever bytes or JSON arrive, the decoder accepts or rejects with a reason; it never raises."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import REJECTION_REASONS, Rejection, Review, decode_review, validator

LIMITS = {"max_text_chars": 2000, "max_message_bytes": 20_000}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
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
