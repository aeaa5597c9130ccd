"""The same rules on both paths: a text, a film id or a JSON body that the stream's decoder refuses in a review, the
HTTP API refuses with a 4xx and the same reason code, never a 500; what the decoder takes, the API scores.
Property-based, over the API application served in-process (the real one runs in tests/test_web.py)."""

from __future__ import annotations

import asyncio
import json
import math
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import ID_MAX_CHARS, Rejection, Review, decode_review
from stream.web import build_web_app
from stream.web.http import Limits

MAX_TEXT_CHARS = 2000
LIMITS = {"max_text_chars": MAX_TEXT_CHARS, "max_message_bytes": 10_000_000}
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# texts and ids that reach for the rules: lone surrogates, NUL, white space only, too long
hostile_text = st.one_of(
    st.text(),
    st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000")),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Ll"]), max_size=20),
    st.text(st.characters(categories=["Ll"]), min_size=MAX_TEXT_CHARS - 2, max_size=MAX_TEXT_CHARS + 2),
)
hostile_id = st.one_of(
    st.text(min_size=1, max_size=10),
    st.text(st.characters(categories=["Cc", "Ll", "Lo", "So"]), min_size=1, max_size=10),
    st.text(st.characters(categories=["Ll"]), min_size=ID_MAX_CHARS - 1, max_size=ID_MAX_CHARS + 2),
)


class Api:
    """The API application on a test server, called synchronously."""

    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        async def go():
            headers = {"Content-Type": "application/json"}
            async with self.client.request(method, path, data=body, headers=headers) as response:
                return response.status, await response.json()

        return self.loop.run_until_complete(go())

    def score(self, body: bytes) -> tuple[int, dict]:
        return self.call("POST", "/api/score", body)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def api(scorer):
    app = build_web_app(
        scorer=scorer,
        explainer_factory=lambda scorer: None,
        uncertain_band=0.1,
        max_texts=64,
        max_text_chars=MAX_TEXT_CHARS,
        engine=None,  # a film lookup that passes the id rules answers 503: no database here
        # hundreds of requests a second from one address: these tests are about what a request says, not how many
        limits=Limits(client_rate=None, client_body_rate=None),
    )
    served = Api(app)
    yield served
    served.close()


def review(**fields) -> bytes:
    """A review message; json.dumps escapes a lone surrogate, as a producer's JSON library would."""
    return json.dumps({"review_id": "r", "movie_id": "tt1", "text": "fine", **fields}).encode()


def _with_duplicate(raw: bytes, key: str, first: str, second: str) -> bytes:
    """``raw`` (a JSON object) with ``key`` added twice."""
    return raw[:-1] + f", {json.dumps(key)}: {json.dumps(first)}, {json.dumps(key)}: {json.dumps(second)}}}".encode()


def assert_agree(decoded: Review | Rejection, status: int, answer: dict, where: str) -> None:
    if isinstance(decoded, Rejection):
        assert 400 <= status < 500, (decoded, status, answer)
        assert answer["reason"] == decoded.reason, (decoded, answer)
        assert answer["error"].endswith(decoded.detail.split(": ", 1)[1]) and answer["error"].startswith(where)
    else:
        assert status == 200 or (status == 503 and "without a database" in answer["error"]), (status, answer)


@EXAMPLES
@given(text=hostile_text)
def test_a_text_the_stream_refuses_the_api_refuses_with_its_reason(api, text):
    decoded = decode_review(review(text=text), **LIMITS)
    status, answer = api.score(json.dumps({"texts": ["fine", text]}).encode())
    assert_agree(decoded, status, answer, "texts[1]: ")
    if isinstance(decoded, Review):
        assert len(answer["results"]) == 2


@EXAMPLES
@given(movie_id=hostile_id)
def test_a_film_id_the_stream_refuses_the_api_refuses_with_its_reason(api, movie_id):
    decoded = decode_review(review(movie_id=movie_id), **LIMITS)
    status, answer = api.call("GET", "/api/movies/" + quote(movie_id, safe=""))
    assert_agree(decoded, status, answer, "movie_id: ")


@EXAMPLES
@given(depth=st.integers(1, 3000), inside=st.sampled_from(["[", '{"a":']))
@example(depth=62, inside="[")  # the limit's edge: 63 levels in a text is the most both paths read
@example(depth=63, inside='{"a":')
@example(depth=64, inside="[")
def test_deep_nesting_is_the_same_4xx_on_both_paths(api, depth, inside):
    closing = {"[": "]", '{"a":': "}"}[inside]
    nested = (inside * depth + "1" + closing * depth).encode()
    decoded = decode_review(b'{"review_id":"r","movie_id":"tt1","text":' + nested + b"}", **LIMITS)
    status, answer = api.score(b'{"texts": [' + nested + b"]}")
    assert isinstance(decoded, Rejection) and decoded.reason in ("invalid_json", "wrong_type")
    assert 400 <= status < 500 and answer["reason"] == decoded.reason, (decoded, answer)


@EXAMPLES
@given(
    key=st.sampled_from(["review_id", "movie_id", "text", "rating", "lang"]),
    first=st.text(min_size=1, max_size=5),
    second=st.text(min_size=1, max_size=5),
)
def test_a_duplicate_key_is_bad_json_on_both_paths(api, key, first, second):
    decoded = decode_review(_with_duplicate(review(), key, first, second), **LIMITS)
    assert decoded == Rejection("invalid_json", f"message has a duplicate key {key}")
    status, answer = api.score(_with_duplicate(b'{"texts": ["fine"]}', key, first, second))
    assert (status, answer) == (400, {"error": f"the body has a duplicate key {key}", "reason": "invalid_json"})


@settings(max_examples=300, deadline=None)
@given(version=st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=3)))
def test_only_schema_version_1_is_read(version):
    decoded = decode_review(review(schema_version=version), **LIMITS)
    if isinstance(version, float) and math.isinf(version):  # Infinity is no JSON number: refused as such
        assert decoded.reason == "invalid_json"
    elif version == 1 and not isinstance(version, bool):
        assert decoded == Review("r", "tt1", "fine")
    elif isinstance(version, int | float) and not isinstance(version, bool) and float(version).is_integer():
        assert decoded.reason == "unknown_schema_version"
    else:
        assert decoded.reason == "wrong_type"


def test_the_api_answers_in_the_streams_words(api):
    status, answer = api.score(json.dumps({"texts": ["ok", "ab\ud800"]}).encode())
    assert (status, answer) == (
        400,
        {"error": "texts[1]: holds a lone surrogate (\\ud800 at character 2)", "reason": "not_utf8"},
    )
    status, answer = api.score(b'{"texts": [" \\n "]}')
    assert (status, answer["reason"]) == (400, "empty_field")
    status, answer = api.score(b'{"texts": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert (status, answer) == (
        400,
        {"error": "the body is nested too deeply to read (more than 64 levels)", "reason": "invalid_json"},
    )
    status, answer = api.call("GET", "/api/movies/%00")
    assert (status, answer["reason"]) == (400, "invalid_value") and "NUL character" in answer["error"]
    status, answer = api.call("GET", "/api/movies/" + "m" * (ID_MAX_CHARS + 1))
    assert (status, answer["reason"]) == (400, "invalid_value")
    # a URL cannot carry a lone surrogate: bytes that are not UTF-8 stay percent-encoded, an id the stream takes too
    status, answer = api.call("GET", "/api/movies/%ED%A0%80")
    assert status == 503 and "without a database" in answer["error"]


def test_brackets_inside_a_text_are_not_nesting():
    """The depth rule counts arrays and objects, not the brackets a review's text may hold."""
    text = "[" * 100 + '\\"{' * 100
    decoded = decode_review(f'{{"review_id":"r","movie_id":"tt1","text":"{text}"}}'.encode(), **LIMITS)
    assert isinstance(decoded, Review), decoded
    too_deep = decode_review(
        b'{"review_id":"r","movie_id":"tt1","text":"t","x":' + b"[" * 65 + b"]" * 65 + b"}", **LIMITS
    )
    assert isinstance(too_deep, Rejection) and "more than 64 levels" in too_deep.detail
