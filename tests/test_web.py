"""The scoring page and its API: attributions that add up, HTTP answers a client can rely on, a real browser, and
property-based requests from the OpenAPI description that never get a server error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sentiment.local import free_port
from tests.conftest import ROOT, wait_until

# The page and API are served by a real `sentiment serve` process, and explained with the real model.
pytestmark = pytest.mark.integration

ARTIFACTS = Path(os.environ.get("SENTIMENT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
REVIEWS = [
    "A wonderful, moving film. I loved the acting, but the ending was awful.",
    "Dull and far too long. The plot made no sense and the jokes fell flat.",
    "Not bad, not great.",
    "映画 🎬 \x00\x07 <br /> ' OR 1=1; --",
    "",
]


@pytest.fixture(scope="module")
def explainer(scorer):
    from model.explain import Explainer

    return Explainer(scorer)


@pytest.mark.parametrize("text", REVIEWS)
def test_attributions_add_up_to_the_score_minus_the_base(explainer, scorer, text):
    e = explainer.explain(text)
    assert e.score == pytest.approx(float(scorer.score([text])[0]), abs=1e-6)
    assert e.total == pytest.approx(e.score - e.base, abs=1e-5)  # completeness
    assert sum(a for _, a in e.ngrams) == pytest.approx(e.total, abs=1e-9)
    assert len(e.word_attributions) == len(e.words)


def test_a_words_sign_agrees_with_the_score_change_when_it_goes(explainer, scorer):
    text = REVIEWS[0]
    e = explainer.explain(text)
    ranked = sorted(zip(e.word_attributions, e.words))
    (most_negative, bad), (most_positive, good) = ranked[0], ranked[-1]
    assert (good, bad) == ("wonderful", "awful") and most_positive > 0 > most_negative
    words = text.lower().replace(",", "").replace(".", "").split()
    without = lambda word: " ".join(w for w in words if w != word)  # noqa: E731
    base = float(scorer.score([" ".join(words)])[0])
    assert float(scorer.score([without(good)])[0]) < base < float(scorer.score([without(bad)])[0])


def test_unknown_words_get_no_attribution(explainer):
    e = explainer.explain("qzxvbn wqpzkx")
    assert e.word_attributions == [0.0, 0.0] and e.score == pytest.approx(e.base)


# --- the HTTP API, over a real `sentiment serve` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``sentiment serve`` with a migrated SQLite database, so that film lookups answer (200 or 404, never 503)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env["SENTIMENT_DATABASE_URL"] = f"sqlite:///{folder / 'films.db'}"
    migrated = subprocess.run(
        [sys.executable, "-m", "sentiment", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    with open(log, "ab") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "serve", "--web-port", str(port)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: call(url, "GET", "/healthz")[0] == 200, 60):
        process.kill()
        pytest.fail(f"sentiment serve did not answer:\n{log.read_text()[-3000:]}")
    yield url
    process.terminate()
    process.wait(15)


def call(url: str, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
    request = urllib.request.Request(url + path, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("Content-Type", "")
    except OSError:
        return 0, None, ""


def score(url, payload, **kwargs):
    return call(url, "POST", "/api/score", json.dumps(payload).encode(), **kwargs)


def test_scores_labels_uncertainty_and_explanations(server, scorer):
    texts = [*REVIEWS[:-1], "qzxvbn wqpzkx"]  # an empty text is refused, as the stream refuses it
    status, body, _ = score(server, {"texts": texts, "explain": True})
    assert status == 200
    assert [r["score"] for r in body["results"]] == pytest.approx(scorer.score(texts).tolist(), abs=1e-6)
    first, *_, unknown = body["results"]
    assert first["label"] == "positive" and first["uncertain"] is False
    assert unknown["uncertain"] is True  # no known word: the base value, 0.496
    e = first["explanation"]
    assert (
        sum(w["attribution"] for w in e["words"])
        == pytest.approx(e["sum"])
        == pytest.approx(first["score"] - e["base"], abs=1e-5)
    )
    status, body, _ = score(server, {"texts": ["fine"]})
    assert status == 200 and "explanation" not in body["results"][0]


BAD_REQUESTS = [
    (b"{not json", "application/json", 400, "not JSON"),
    (b"\xff\xfe{}", "application/json", 400, "not UTF-8"),
    (b"[1, 2]", "application/json", 400, "not an object"),
    (b'{"texts": ["a"], "texts": ["b"]}', "application/json", 400, "duplicate key texts"),
    (b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", 400, "nested too deeply"),
    (b'{"texts": ["ok", "ab\\ud800"]}', "application/json", 400, "texts[1]: holds a lone surrogate"),
    (b'{"texts": [" \\n "]}', "application/json", 400, "texts[0]: holds no character other than white space"),
    (b'{"texts": []}', "application/json", 400, "non-empty list"),
    (b'{"texts": [1]}', "application/json", 400, "texts[0] is int"),
    (b'{"texts": ["a"], "explain": "yes"}', "application/json", 400, "explain"),
    (b'{"texts": ["a"], "extra": 1}', "application/json", 400, "unknown field"),
    (json.dumps({"texts": ["a"] * 65}).encode(), "application/json", 413, "at most 64"),
    (json.dumps({"texts": ["a" * 50_001]}).encode(), "application/json", 413, "the limit is 50000"),
    (b'{"texts": ["a"]}', "text/plain", 415, "application/json"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "says"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_with_a_json_error(server, body, content_type, status, says):
    got, answer, ctype = call(server, "POST", "/api/score", body, content_type)
    assert got == status and ctype.startswith("application/json")
    assert says in answer["error"] and "Traceback" not in answer["error"]


def test_other_paths_and_methods_are_json_errors_too(server):
    assert call(server, "GET", "/nowhere")[:2] == (404, {"error": "Not Found"})
    assert call(server, "GET", "/api/score")[0] == 405
    status, body, _ = call(server, "GET", "/api/movies/tt0000001")
    assert status == 404 and "no reviews of film" in body["error"]
    for film in ("%00", "a%00b", "m" * 201):  # ids no review can carry: the client's mistake, not an outage
        status, body, _ = call(server, "GET", f"/api/movies/{film}")
        assert status == 400 and body["reason"] == "invalid_value", body
    status, body, _ = call(server, "GET", "/api/movies/%7Bbraces%7D")
    assert status == 404, body
    status, spec, _ = call(server, "GET", "/openapi.json")
    assert status == 200 and spec == json.loads((ROOT / "schemas" / "openapi.json").read_text())


def test_schemathesis_finds_no_server_error(server):
    """Property-based requests generated from schemas/openapi.json, valid and invalid: none may get a 5xx."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.browser
def test_the_page_in_a_real_browser(server):
    """Headless Chromium types a review, submits, and sees the label, the highlights and, for a text the model
    cannot tell, the uncertain badge. Screenshots go to test-artifacts/."""
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None or shutil.which("chromium") is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 30)
        box = driver.find_element(By.ID, "text")
        box.send_keys(REVIEWS[0])
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
        assert driver.find_element(By.ID, "label").text == "positive"
        assert not driver.find_element(By.ID, "uncertain").is_displayed()
        spans = driver.find_elements(By.CSS_SELECTOR, "#words span")
        weights = {s.text.strip(): float(s.get_attribute("data-attribution")) for s in spans}
        assert weights["wonderful"] > 0 > weights["awful"]
        colours = {s.text.strip(): s.value_of_css_property("background-color") for s in spans}
        assert colours["wonderful"] != colours["awful"] and "rgba(0, 0, 0, 0)" not in colours["wonderful"]
        assert "Base value" in driver.find_element(By.ID, "sum").text
        driver.save_screenshot(str(ARTIFACTS / "page-positive.png"))

        box.clear()
        box.send_keys("qzxvbn wqpzkx")
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "uncertain").is_displayed())
        driver.save_screenshot(str(ARTIFACTS / "page-uncertain.png"))
    finally:
        driver.quit()
    assert (ARTIFACTS / "page-positive.png").stat().st_size > 10_000


def test_ngrams_map_to_the_words_they_are_made_of(explainer):
    """Attributions are put on the right words: each known n-gram is the words at its position."""
    e = explainer.explain("A wonderful film, though the ending was awful.")
    words = e.words
    unigrams = [g for g, _ in e.ngrams if " " not in g]
    assert unigrams == [w for w in words if w in set(unigrams)]
    spans = {" ".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1)}
    assert all(g in spans for g, _ in e.ngrams if " " in g)
