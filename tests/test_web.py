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

import numpy as np
import pytest

from core.settings import Settings
from sentiment.local import free_port
from stream.observe.accuracy import LiveAccuracy
from tests.conftest import ROOT, wait_until

# The page and API are served by a real `sentiment serve` process, and explained with the real model.
pytestmark = pytest.mark.integration

ARTIFACTS = Path(os.environ.get("SENTIMENT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
REVIEWS = [
    "A wonderful, moving film. I loved the acting and the music; only the ending was awful.",
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


def start_serve(folder: Path, env: dict, *args: str):
    """A ``sentiment serve`` process on a free port, answering /healthz; yields its URL and stops it after."""
    port = free_port()
    log = folder / "serve.log"
    with open(log, "ab") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "serve", "--web-port", str(port), *args],
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


def serve_environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``sentiment serve`` with a migrated SQLite database, so that film lookups answer (200 or 404, never 503)."""
    folder = tmp_path_factory.mktemp("serve")
    env = serve_environment()
    env["SENTIMENT_DATABASE_URL"] = f"sqlite:///{folder / 'films.db'}"
    migrated = subprocess.run(
        [sys.executable, "-m", "sentiment", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    yield from start_serve(folder, env)


@pytest.fixture(scope="module")
def server_without_database(tmp_path_factory):
    """``sentiment serve --no-database``: film lookups are off, and the page says why."""
    yield from start_serve(tmp_path_factory.mktemp("serve-bare"), serve_environment(), "--no-database")


UNCERTAIN = "Was short, an average film."  # P(positive) 0.423, eight ninths of its n-grams known


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
    assert first["readable"] is True and first["known_share"] > Settings().min_known_share
    # no known word: the base value, which is no judgement of the text
    assert unknown["uncertain"] is True and unknown["readable"] is False and unknown["known_share"] == 0.0
    assert body["min_known_share"] == Settings().min_known_share
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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, Debian's chromium and chromium-driver."""
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None or shutil.which("chromium") is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1300"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shown(driver, css: str) -> list[str]:
    """The text of each element the selector finds, as the reader sees it (read in one go: the page redraws its
    charts every 3 s, and an element found before a redraw is gone after it)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent.trim())", css
    )


def attributes(driver, css: str, name: str) -> list[str]:
    """The attribute ``name`` of each element the selector finds, read in one go (see ``shown``)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))", css, name
    )


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


CAPTIONS = ("rate-note", "drift-note", "hist-note")
MINUTES_AGO = ["10 min ago", "8 min ago", "6 min ago", "4 min ago", "2 min ago", "now"]


def open_page(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: all(text_of(d, c) for c in CAPTIONS))


def save(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / name))
    assert (ARTIFACTS / name).stat().st_size > 10_000


@pytest.mark.browser
def test_the_page_in_a_real_browser(server, browser):
    """Headless Chromium types a review, submits, and sees the button at work, then the label, the highlights and,
    for a text the model cannot tell, the uncertain badge; for a text it knows no word of (Chinese), the message
    that it does not know these words instead of a label; a text the API refuses gets a message in words."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    open_page(driver, server)
    wait = WebDriverWait(driver, 30)
    box, button = driver.find_element(By.ID, "text"), driver.find_element(By.ID, "submit")
    box.send_keys(REVIEWS[0])
    slow = {"offline": False, "latency": 1500, "downloadThroughput": -1, "uploadThroughput": -1}
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", slow)
    try:  # a slow network: while the answer is on its way the button is off and says so
        button.click()
        assert not button.is_enabled() and button.text == "Scoring…"
        save(driver, "page-scoring.png")
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", slow | {"latency": 0})
    assert button.is_enabled() and button.text == "Score"
    assert text_of(driver, "label") == "positive"
    assert not driver.find_element(By.ID, "uncertain").is_displayed()
    spans = driver.find_elements(By.CSS_SELECTOR, "#words span")
    weights = {s.text.strip(): float(s.get_attribute("data-attribution")) for s in spans}
    assert weights["wonderful"] > 0 > weights["awful"]
    colours = {s.text.strip(): s.value_of_css_property("background-color") for s in spans}
    assert colours["wonderful"] != colours["awful"] and "rgba(0, 0, 0, 0)" not in colours["wonderful"]
    assert "Base value" in text_of(driver, "sum")
    save(driver, "page-positive.png")

    box.clear()
    box.send_keys(UNCERTAIN)
    button.click()
    wait.until(lambda d: d.find_element(By.ID, "uncertain").is_displayed())
    assert not driver.find_element(By.ID, "unreadable").is_displayed()
    save(driver, "page-uncertain.png")

    # a text the model knows no word of: said in words, no label, no badge
    box.clear()
    box.send_keys("这部电影非常好看，演员的表演很出色，我强烈推荐给大家。")
    button.click()
    wait.until(lambda d: d.find_element(By.ID, "unreadable").is_displayed())
    assert text_of(driver, "unreadable") == "the model does not know these words"
    assert not driver.find_element(By.ID, "label").is_displayed()
    assert not driver.find_element(By.ID, "uncertain").is_displayed()
    assert "knows 0% of this text's words" in text_of(driver, "known")
    assert "kept out of its film's mean" in text_of(driver, "known")
    save(driver, "page-unreadable.png")

    box.clear()
    box.send_keys(REVIEWS[0])  # and a readable one after it has its label back
    button.click()
    wait.until(lambda d: d.find_element(By.ID, "label").is_displayed())
    assert text_of(driver, "label") == "positive" and not driver.find_element(By.ID, "unreadable").is_displayed()

    # texts the API refuses (400 with the stream's reason): a message in words, the button back, no stale score
    # (a lone surrogate cannot cross WebDriver's JSON: the page builds it, as a broken paste would)
    lone_surrogate = '"ab" + String.fromCharCode(0xd800) + "cd"'
    for text, says in [('" \\n\\t "', "There is nothing to score"), (lone_surrogate, "cannot read this text")]:
        driver.execute_script(f"arguments[0].value = {text}", box)
        button.click()
        wait.until(lambda d, says=says: says in text_of(d, "error"))
        assert button.is_enabled() and button.text == "Score"
        assert not driver.find_element(By.ID, "result").is_displayed()
    assert "not valid Unicode" in text_of(driver, "error")
    save(driver, "page-refused.png")

    # a film no review was scored for: said plainly, not as an error
    driver.find_element(By.ID, "film").send_keys("tt0000001")
    driver.find_element(By.ID, "film-submit").click()
    wait.until(lambda d: text_of(d, "film-result"))
    assert text_of(driver, "film-result") == "No reviews of film 'tt0000001' scored yet."


@pytest.mark.browser
def test_a_cold_serve_says_what_it_has(server, browser):
    """On a fresh `sentiment serve` (no stream) the captions say so, never "last 0 min" or "the 0 most recent
    scores"; the histogram shows the reference on read axes; the page loads nothing from elsewhere."""
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, server)
    captions = {c: text_of(driver, c) for c in CAPTIONS}
    assert all("No stream here" in text for text in captions.values()), captions
    assert not any(" 0 min" in text or "the 0 " in text for text in captions.values()), captions
    assert text_of(driver, "state") == "no stream here (sentiment serve)"
    assert not driver.find_element(By.ID, "not-ready").is_displayed()
    assert shown(driver, "#rate .x-tick") == MINUTES_AGO and shown(driver, "#rate .empty") == ["no stream here"]
    assert shown(driver, "#histogram .x-tick") == ["0", *(f"0.{i}" for i in range(1, 10)), "1"]
    assert all(t.endswith("%") for t in shown(driver, "#histogram .y-tick"))
    assert shown(driver, "#window-legend") == ["recent scores: none yet"]
    assert shown(driver, "#accuracy .empty") == ["no stream here"]
    assert text_of(driver, "accuracy-note") == "No stream here: accuracy needs reviews that carry their rating."
    resources = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert resources and all(r.startswith(server + "/") for r in resources), resources  # works offline
    save(driver, "page-cold.png")


def worker_state(server: str, samples: list, scores: list[float], reasons: list[str], accuracy=None) -> dict:
    """What a worker's /api/live would answer: the real LiveState, with samples (seconds ago, reviews scored so
    far, PSI, verdict) and the drift window's scores, on top of this server's answer (model, band, film lookups);
    ``accuracy`` is a stream.observe.accuracy.LiveAccuracy, sampled with the rest."""
    import time

    import numpy as np

    from stream.web import LiveState

    rng = np.random.default_rng(7)
    live = LiveState(
        streaming=True,
        window_scores=lambda: scores,
        reference_scores=rng.beta(0.6, 0.6, 5000),
        psi_threshold=0.07,
    )
    now = time.time()
    live.samples.extend((now - ago, scored, psi, verdict) for ago, scored, psi, verdict in samples)
    if accuracy is not None:
        live.accuracy = accuracy.as_json
        measured = {f"{v.role} {v.version}": v.accuracy for v in accuracy.versions() if v.accuracy == v.accuracy}
        live.accuracy_samples.extend((now - ago, measured) for ago, *_ in samples)
    state = call(server, "GET", "/api/live")[1] | live.as_json()
    return state | {"ready": not reasons, "reasons": reasons, "window_min_scores": 1000}


def show_state(driver, state: dict) -> None:
    """The page draws ``state`` as if /api/live had answered it (its other calls go to the server)."""
    driver.execute_script(
        """
        window.liveState = arguments[0];
        if (!window.serverFetch) {
          window.serverFetch = window.fetch;
          window.fetch = (path, options) => String(path).startsWith("/api/live")
            ? Promise.resolve(new Response(JSON.stringify(window.liveState), {headers: {"Content-Type": "application/json"}}))
            : window.serverFetch(path, options);
        }
        return refresh();
        """,
        state,
    )


def numbers(labels: list[str]) -> list[float]:
    return [float(t.replace(",", "").rstrip("%")) for t in labels]


@pytest.mark.browser
def test_the_live_charts_read_right(server, browser):
    """A worker's live state as a reader sees it: a starting worker that is not ready says why and what it is
    collecting; a drifting one has y ticks with real values, the alert level labelled at its tick, time in minutes
    ago and a legend that tells PSI from the verdict."""
    from selenium.webdriver.common.by import By

    nan = float("nan")
    driver = browser
    open_page(driver, server)

    idle = [(10, 0, nan, nan), (5, 0, nan, nan), (0, 0, nan, nan)]  # ready, and no review yet
    show_state(driver, worker_state(server, idle, [], []))
    assert [text_of(driver, c) for c in CAPTIONS] == [
        "No reviews scored yet.",
        "No reviews scored yet: PSI and the verdict are measured from 1,000 scores on.",
        "No reviews scored yet: the model's reference alone.",
    ]
    assert shown(driver, "#drift .empty") == ["no reviews scored yet"]

    joining = ["not in its consumer group (joining or rebalancing)", "broker: cannot connect to 127.0.0.1:9092"]
    starting = [(20 - 5 * i, 30 * i, nan, nan) for i in range(5)]  # 6 reviews/s: 4 rates over 20 s, 120 scored
    cold = LiveAccuracy(window=2000, min_reviews=200, floor=0.872)
    cold.add([9] * 120, [0.8] * 120, "v-live")
    show_state(driver, worker_state(server, starting, [0.8] * 120, joining, cold))
    assert text_of(driver, "state") == "worker NOT ready"
    assert shown(driver, "#reasons li") == [
        "Not in its consumer group (joining or rebalancing)",
        "Broker: cannot connect to 127.0.0.1:9092",
    ]
    assert text_of(driver, "rate-note") == "Over the last 20 s; 120 reviews scored since the worker started."
    # each rate held over its own interval (a step), from the first sample on: 4 intervals, 8 corners, one level
    (path,) = attributes(driver, '#rate path.series[data-name="reviews/s"]', "d")
    corners = [tuple(map(float, c[1:].split(","))) for c in path.split()]
    assert len(corners) == 8 and len({y for _, y in corners}) == 1, path
    assert text_of(driver, "drift-note").startswith("Collecting: 120 of 1,000 scores needed")
    assert shown(driver, "#drift .empty") == ["collecting: 120 of 1,000 scores needed"]
    assert "The 120 most recent scores" in text_of(driver, "hist-note")
    rate_ticks = numbers(shown(driver, "#rate .y-tick"))
    assert rate_ticks == sorted(rate_ticks) and rate_ticks[0] == 0 and rate_ticks[-1] >= 6
    assert shown(driver, "#rate .y-unit") == ["reviews/s"]
    assert shown(driver, "#accuracy .empty") == ["collecting: 120 of 200 rated reviews needed"]
    assert (
        text_of(driver, "accuracy-note") == "Collecting: 120 of 200 rated reviews needed before accuracy is measured."
    )
    assert not driver.find_element(By.ID, "comparison").is_displayed()
    save(driver, "page-worker-not-ready.png")

    # ten minutes of a drifting stream: PSI from 0.02 to 0.1 (alert above 0.07), the verdict 0.3 then up to 1.4
    drifting = [(600 - 5 * i, 200 * i, 0.02 + 0.08 * i / 120, 0.3 + max(0, i - 80) * 1.1 / 40) for i in range(121)]
    rated = LiveAccuracy(window=2000, min_reviews=200, floor=0.872)
    rng = np.random.default_rng(11)
    for _ in range(12):  # a weaker shadow on the same reviews: the live answers, 4% of them turned wrong
        ratings = rng.choice([1, 3, 8, 10], 256).tolist()
        truth = np.array([r >= 7 for r in ratings])
        right = rng.uniform(size=256) < 0.91
        live_scores = np.where(truth == right, 0.8, 0.2)
        shadow_scores = np.where(rng.uniform(size=256) < 0.04, np.where(truth, 0.2, 0.8), live_scores)
        rated.add(ratings, live_scores, "v-live", shadow_scores, "v-weak")
    show_state(driver, worker_state(server, drifting, [0.1] * 600 + [0.9] * 400, [], rated))
    assert text_of(driver, "state") == "worker ready"
    assert not driver.find_element(By.ID, "not-ready").is_displayed()
    assert shown(driver, "#rate .x-tick") == shown(driver, "#drift .x-tick") == MINUTES_AGO
    assert 40 in numbers(shown(driver, "#rate .y-tick"))  # 200 reviews every 5 s
    psi_ticks, verdict_ticks = (
        shown(driver, "#drift .y-tick[fill='#c07000']"),
        shown(driver, "#drift .y-tick[fill='#7a3db8']"),
    )
    assert "0.07" in psi_ticks and max(numbers(psi_ticks)) >= 0.1
    assert "1" in verdict_ticks and max(numbers(verdict_ticks)) >= 1.4
    assert shown(driver, "#drift .y-unit") == ["PSI", "verdict"]
    assert shown(driver, "#drift .alert-label") == ["alert: PSI 0.07 · verdict 1"]
    tick_height = dict(zip(shown(driver, "#drift .y-tick"), map(float, attributes(driver, "#drift .y-tick", "y"))))
    alert_line = float(driver.find_element(By.CSS_SELECTOR, "#drift line.alert").get_attribute("y1"))
    assert tick_height["0.07"] == tick_height["1"] == pytest.approx(alert_line + 4)  # the line is at its label
    assert shown(driver, "#drift-legend li") == [
        "PSI of the scores (left axis)",
        "input drift verdict (right axis)",
        "alert: PSI above 0.07, verdict at 1 or above",
    ]
    assert text_of(driver, "rate-note").startswith("Over the last 10 min; 24,000 reviews scored")
    assert text_of(driver, "hist-note") == "The 1,000 most recent scores against the model's reference."
    assert shown(driver, "#window-legend") == ["the 1,000 most recent scores"]
    # live accuracy beside the drift chart: one line per version on a 50-100% axis, the floor at its height
    assert shown(driver, "#accuracy .y-tick") == ["50%", "60%", "70%", "80%", "90%", "100%"]
    assert shown(driver, "#accuracy .x-tick") == MINUTES_AGO
    assert sorted(attributes(driver, "#accuracy .series", "data-name")) == [
        "live v-live",
        "shadow v-weak",
    ]
    assert shown(driver, "#accuracy .alert-label") == ["alert floor 87.2%"]
    live_v, shadow_v = rated.versions()
    assert shown(driver, "#accuracy-legend li") == [
        f"live v-live: {100 * live_v.accuracy:.1f}%, calibration error {live_v.calibration_error:.3f}",
        f"shadow v-weak: {100 * shadow_v.accuracy:.1f}%, calibration error {shadow_v.calibration_error:.3f}",
        "alert floor 87.2%: validation accuracy minus the margin",
    ]
    assert text_of(driver, "accuracy-note").startswith("On the 2,000 most recent rated reviews")
    comparison = text_of(driver, "comparison")
    assert comparison.startswith("Shadow ") and " vs live " in comparison and "on 3,072 rated reviews" in comparison
    assert comparison.endswith("p < 0.001.")
    save(driver, "page-worker-drifting.png")


@pytest.mark.browser
def test_film_lookups_off_say_why(server_without_database, browser, tmp_path):
    """`sentiment serve --no-database`: the page says film lookups are off and why, and so does the API; a database
    that cannot be used at start says the same, with what was wrong."""
    from selenium.webdriver.common.by import By

    from core.settings import Settings
    from stream.web.serve import film_database

    driver = browser
    open_page(driver, server_without_database)
    off = "Film lookups are off: started without a database (sentiment serve --no-database)."
    assert text_of(driver, "film-note") == off
    assert not driver.find_element(By.ID, "film-submit").is_enabled()
    save(driver, "page-no-database.png")
    status, body, _ = call(server_without_database, "GET", "/api/movies/tt0000001")
    assert status == 503 and body["error"] == off[0].lower() + off[1:-1]

    engine, why = film_database(Settings(database_url=f"sqlite:///{tmp_path / 'missing.db'}"), with_database=True)
    assert engine is None and why.startswith("started without a database") and "no database at" in why


def test_ngrams_map_to_the_words_they_are_made_of(explainer):
    """Attributions are put on the right words: each known n-gram is the words at its position."""
    e = explainer.explain("A wonderful film, though the ending was awful.")
    words = e.words
    unigrams = [g for g, _ in e.ngrams if " " not in g]
    assert unigrams == [w for w in words if w in set(unigrams)]
    spans = {" ".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1)}
    assert all(g in spans for g, _ in e.ngrams if " " in g)
