"""Live accuracy from rated reviews, without a broker: the window's figures equal the offline ones on the same
reviews, unrated and 5-6 reviews change nothing, and a shadow scorer is compared with the live one by McNemar's test
(here a fake shadow: the live scores, or the live scores with mistakes added)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from stream.observe.accuracy import (
    LiveAccuracy,
    PairedComparison,
    RatedWindow,
    accuracy_floor,
    format_p,
    mcnemar_p_value,
    rated,
)
from training.metrics import classification_metrics, expected_calibration_error


def reviews(n: int, seed: int = 0, accuracy: float = 0.9) -> tuple[list[int], np.ndarray]:
    """``n`` rated reviews (every rating 1-10) and scores that are right about ``accuracy`` of the time on the
    decisive ones."""
    rng = np.random.default_rng(seed)
    ratings = rng.integers(1, 11, n).tolist()
    positive = np.array([r >= 7 for r in ratings])
    confident = rng.uniform(0.5, 1.0, n)
    right = rng.uniform(size=n) < accuracy
    scores = np.where(positive == right, confident, 1 - confident)
    return ratings, scores


def test_a_rating_is_a_label_from_7_up_and_down_to_4_and_5_6_or_none_say_nothing():
    positions, labels, scores = rated([9, None, 5, 4, 6, 7, 1, 10], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert positions.tolist() == [0, 3, 5, 6, 7]
    assert labels.tolist() == [1, 0, 1, 0, 1]
    assert scores.tolist() == [0.9, 0.6, 0.4, 0.3, 0.2]


def test_the_window_gives_the_offline_accuracy_and_calibration_error_of_its_last_reviews():
    ratings, scores = reviews(7_000, seed=1)
    _, labels, decisive = rated(ratings, scores)
    window = RatedWindow("v1", 2000)
    start = 0
    for size in [1, 255, 256, 1999, 3, 700, 2500] + [97] * 40:  # wraps many times, once by more than the window
        window.add(labels[start : start + size], decisive[start : start + size])
        start += size
        last = slice(max(0, min(start, len(labels)) - 2000), min(start, len(labels)))
        offline = classification_metrics(labels[last], decisive[last])
        assert window.count == len(labels[last])
        assert window.accuracy() == pytest.approx(offline["accuracy"], abs=1e-12)
        assert window.calibration_error() == pytest.approx(offline["calibration_error"], abs=1e-9)


def test_scores_on_the_bin_edges_fall_in_the_same_bins_as_offline():
    edges = np.linspace(0, 1, 11)
    scores = np.concatenate([edges, edges, [0.3, 0.7, 0.1 * 3]])
    labels = (np.arange(len(scores)) % 2).astype(np.int8)
    window = RatedWindow("v1", 100)
    window.add(labels, scores)
    assert window.calibration_error() == pytest.approx(expected_calibration_error(labels, scores), abs=1e-12)


def test_nothing_is_reported_below_the_minimum_count_and_unrated_reviews_do_not_count():
    tracker = LiveAccuracy(window=500, min_reviews=100)
    tracker.add([None] * 300 + [5, 6] * 100, np.full(500, 0.9), "v1")
    (live,) = tracker.versions()
    assert (live.role, live.version, live.reviews) == ("live", "v1", 0)
    assert math.isnan(live.accuracy) and math.isnan(live.calibration_error)
    tracker.add([9] * 99, np.full(99, 0.9), "v1")
    assert math.isnan(tracker.versions()[0].accuracy)
    tracker.add([2], [0.9], "v1")  # the 100th, and wrong
    (live,) = tracker.versions()
    assert live.reviews == 100 and live.accuracy == pytest.approx(0.99)
    assert live.calibration_error == pytest.approx(abs(0.99 - 0.9))
    assert tracker.compared() is None


def test_a_new_live_version_starts_its_own_window():
    tracker = LiveAccuracy(window=500, min_reviews=100)
    tracker.add([9] * 200, np.full(200, 0.9), "v1")
    tracker.add([9] * 50, np.full(50, 0.1), "v2")
    (live,) = tracker.versions()
    assert (live.version, live.reviews) == ("v2", 50) and math.isnan(live.accuracy)


def test_mcnemar_exact_for_few_discordant_pairs_and_chi_square_for_many():
    assert mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(3, 3) == 1.0
    assert mcnemar_p_value(0, 10) == pytest.approx(2 / 1024)  # ten heads in ten tosses, two-sided
    assert mcnemar_p_value(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_p_value(10, 30) == pytest.approx(math.erfc(math.sqrt(19**2 / 40 / 2)))  # chi2 = 9.025
    assert mcnemar_p_value(10, 30) == pytest.approx(0.00266, abs=1e-5)
    assert mcnemar_p_value(30, 10) == mcnemar_p_value(10, 30)
    for b in range(0, 60, 7):  # where the two meet, the approximation is close to the exact value
        for c in range(max(0, 25 - b), 80, 11):
            n = b + c
            exact = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)
            assert mcnemar_p_value(b, c) == pytest.approx(exact, abs=0.03)


def fake_shadow(live_scores: np.ndarray, labels: list[int | None], flip_right: float, seed: int) -> np.ndarray:
    """The live scores, with a share of the live model's right answers turned wrong: a weaker shadow."""
    rng = random.Random(seed)
    shadow = live_scores.copy()
    for i, rating in enumerate(labels):
        if rating is not None and rng.random() < flip_right:
            shadow[i] = 1 - shadow[i]
    return shadow


def test_the_same_model_as_shadow_differs_by_nothing_and_the_test_does_not_fire():
    tracker = LiveAccuracy(window=2000, min_reviews=200)
    for seed in range(20):
        ratings, scores = reviews(256, seed=seed)
        tracker.add(ratings, scores, "live-v1", scores.copy(), "live-v1")
    comparison = tracker.compared()
    live, shadow = tracker.versions()
    assert (live.role, shadow.role) == ("live", "shadow")
    assert live.accuracy == shadow.accuracy and live.calibration_error == shadow.calibration_error
    assert comparison.difference() == (0.0, 0.0, 0.0)
    assert comparison.p_value() == 1.0
    assert comparison.text().endswith("difference +0.0 points (95% interval +0.0 to +0.0), p = 1.00")


def test_a_weaker_shadow_loses_with_p_below_001_after_a_few_thousand_rated_reviews():
    tracker = LiveAccuracy(window=2000, min_reviews=200)
    for seed in range(20):  # 5,120 reviews, about 4,100 of them decisive
        ratings, scores = reviews(256, seed=seed, accuracy=0.91)
        shadow = fake_shadow(scores, ratings, flip_right=0.03, seed=seed)
        tracker.add(ratings, scores, "v-live", shadow, "v-weak")
    comparison = tracker.compared()
    estimate, low, high = comparison.difference()
    assert comparison.reviews == tracker.comparison.reviews > 4000
    assert comparison.shadow_accuracy() < comparison.live_accuracy()
    assert estimate == pytest.approx(comparison.shadow_accuracy() - comparison.live_accuracy())
    assert low < estimate < high < 0
    assert comparison.p_value() < 0.01
    shadow = tracker.versions()[1]
    assert (shadow.role, shadow.version) == ("shadow", "v-weak")
    assert shadow.reviews == 2000  # the window; the comparison counts every pair since it started
    text = comparison.text()
    assert text.startswith(f"shadow {100 * comparison.shadow_accuracy():.1f}% vs live ")
    assert f"on {comparison.reviews:,} rated reviews, difference -" in text and text.endswith("p < 0.001")


def test_the_paired_interval_covers_the_true_difference_about_95_times_in_100():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        comparison = PairedComparison("a", "b")
        labels = np.ones(400, dtype=np.int8)
        live = np.where(rng.uniform(size=400) < 0.90, 0.9, 0.1)  # right 90%
        shadow = np.where(rng.uniform(size=400) < 0.88, 0.9, 0.1)  # right 88%, independently
        comparison.add(labels, live, shadow)
        _, low, high = comparison.difference()
        covered += low <= -0.02 <= high
    assert 0.91 <= covered / 400 <= 0.98


def test_a_new_shadow_version_starts_the_comparison_afresh_and_a_batch_without_shadow_scores_keeps_it():
    tracker = LiveAccuracy(window=500, min_reviews=10)
    ratings, scores = reviews(100)
    decisive = len(rated(ratings, scores)[0])
    tracker.add(ratings, scores, "v1", scores, "s1")
    assert tracker.compared().shadow_version == "s1"
    tracker.add(ratings, scores, "v1", scores, "s2")
    assert tracker.comparison.reviews == decisive
    tracker.add(ratings, scores, "v1")  # a batch the shadow did not score: the evidence stays
    assert tracker.comparison.reviews == decisive and tracker.versions()[0].reviews == 3 * decisive
    tracker.end_shadow()
    assert tracker.comparison is None and [v.role for v in tracker.versions()] == ["live"]
    assert tracker.as_json()["comparison"] is None


def test_the_floor_is_the_validation_accuracy_minus_the_margin():
    assert accuracy_floor({"validation": {"accuracy": 0.9018}}, 0.03) == pytest.approx(0.8718)
    assert accuracy_floor({}, 0.03) is None


def test_p_values_read_as_people_write_them():
    assert [format_p(p) for p in (0.0004, 0.0031, 0.04, 0.5, 1.0)] == [
        "p < 0.001",
        "p = 0.003",
        "p = 0.04",
        "p = 0.50",
        "p = 1.00",
    ]


# --- in the worker's parts: the batch carries each review's rating, the observer exports the gauges --------------


class FakeScorer:
    """Scores a text by its first word, "good" 0.9 and anything else 0.2."""

    version = "fake-v1"

    def inspect(self, texts):
        from model.scorer import Inspection

        scores = np.array([0.9 if t.startswith("good") else 0.2 for t in texts], dtype=np.float32)
        n = len(texts)
        return Inspection(scores, np.full(n, 10), np.full(n, 10), np.zeros((n, 1)))


def test_a_batch_carries_each_scored_reviews_rating_in_order():
    import json

    from stream.ingest.batch import BatchScorer, Incoming

    events = [
        {"review_id": "a", "movie_id": "tt1", "text": "good", "rating": 9},
        b"not json",
        {"review_id": "b", "movie_id": "tt1", "text": "bad"},
        {"review_id": "c", "movie_id": "tt1", "text": "good", "rating": 2},
    ]
    messages = [Incoming(e if isinstance(e, bytes) else json.dumps(e).encode(), offset=i) for i, e in enumerate(events)]
    result = BatchScorer(FakeScorer(), max_text_chars=100, max_message_bytes=1000).process(messages)
    assert [s.review_id for s in result.sentiments] == ["a", "b", "c"]
    assert result.ratings == [9, None, 2]
    assert result.shadow is None  # no shadow version set
    assert "rating" not in json.loads(result.sentiments[0].to_json())  # the event keeps its schema


def batch_of(ratings: list[int | None], scores: list[float], version: str = "v-live", shadow=None):
    """A delivered batch; ``shadow``: (version, scores) of a shadow that scored it too."""
    from schemas import Sentiment
    from stream.ingest.batch import BatchResult, Incoming, ShadowScores

    sentiments = [
        Sentiment(f"r{i}", "tt1", s, "positive" if s >= 0.5 else "negative", version, "t", "t")
        for i, s in enumerate(scores)
    ]
    messages = [Incoming(value=b"{}", topic="reviews", offset=i) for i in range(len(scores))]
    shadow = None if shadow is None else ShadowScores(shadow[0], np.asarray(shadow[1]))
    return BatchResult(sentiments=sentiments, ratings=ratings, shadow=shadow), messages


def metric(name: str, **labels) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def observer(min_reviews: int = 100, floor: float | None = 0.87):
    from core.settings import Settings
    from stream.observe.drift import DriftMonitor
    from stream.observe.health import Health
    from stream.observer import BatchObserver

    settings = Settings(accuracy_window=400, accuracy_min_reviews=min_reviews)
    return BatchObserver(
        model_version="v-live",
        scoring="compiled",
        drift=DriftMonitor(np.linspace(0, 1, 101), window=100),
        inputs_drift=None,
        settings=settings,
        health=Health(),
        consumer=lambda: None,
        accuracy=LiveAccuracy(400, min_reviews, floor),
    )


def test_the_observer_exports_nothing_below_the_minimum_then_accuracy_by_version_and_role():
    watcher = observer()
    assert metric("sentiment_accuracy_floor") == 0.87 and metric("sentiment_accuracy_min_reviews") == 100
    watcher.delivered(*batch_of([9] * 50 + [None] * 50, [0.9] * 100))
    assert metric("sentiment_accuracy", version="v-live", role="live") is None  # cold: no series at all
    assert metric("sentiment_calibration_error", version="v-live", role="live") is None
    assert metric("sentiment_accuracy_window_reviews", version="v-live", role="live") == 50
    watcher.delivered(*batch_of([9] * 40 + [1] * 10, [0.9] * 50))
    assert metric("sentiment_accuracy", version="v-live", role="live") == pytest.approx(0.9)
    assert metric("sentiment_calibration_error", version="v-live", role="live") == pytest.approx(0.0)
    state = watcher.live.as_json()["accuracy"]
    assert state["versions"][0] | {"calibration_error": 0} == {
        "role": "live",
        "version": "v-live",
        "reviews": 100,
        "accuracy": pytest.approx(0.9),
        "calibration_error": 0,
    }
    assert ", lag unknown, live accuracy 90.0% on 100 rated reviews, NOT ready: " in watcher.progress_line()
    watcher.sample_live()
    assert watcher.live.as_json()["accuracy_history"][-1]["accuracy"] == {"live v-live": pytest.approx(0.9)}

    # the live model swapped: the old version's series go, the new one starts cold
    watcher.delivered(*batch_of([9] * 10, [0.1] * 10, version="v-next"))
    assert metric("sentiment_accuracy", version="v-live", role="live") is None
    assert metric("sentiment_accuracy_window_reviews", version="v-live", role="live") is None
    assert metric("sentiment_accuracy", version="v-next", role="live") is None
    assert metric("sentiment_accuracy_window_reviews", version="v-next", role="live") == 10


def test_the_shadow_hook_a_batch_with_shadow_scores_is_compared_and_exported():
    watcher = observer(min_reviews=100)
    rng = np.random.default_rng(3)
    for _ in range(10):
        ratings = rng.choice([1, 2, 9, 10, 5, None], 300).tolist()
        truth = np.array([r is not None and r >= 7 for r in ratings])
        live = np.where(rng.uniform(size=300) < 0.92, np.where(truth, 0.9, 0.1), np.where(truth, 0.1, 0.9))
        shadow = np.where(rng.uniform(size=300) < 0.05, 1 - live, live)  # the live answers, 5% of them turned
        watcher.delivered(*batch_of(ratings, live.tolist(), shadow=("v-weak", shadow)))
    pair = {"live_version": "v-live", "shadow_version": "v-weak"}
    assert metric("sentiment_accuracy", version="v-weak", role="shadow") < metric(
        "sentiment_accuracy", version="v-live", role="live"
    )
    assert metric("sentiment_shadow_paired_reviews", **pair) > 1500
    assert metric("sentiment_shadow_mcnemar_p_value", **pair) < 0.01
    low, estimate, high = (
        metric("sentiment_shadow_accuracy_difference", **pair, bound=b) for b in ("low", "estimate", "high")
    )
    assert low < estimate < high < 0
    live_acc, shadow_acc = (metric("sentiment_shadow_paired_accuracy", **pair, role=r) for r in ("live", "shadow"))
    assert shadow_acc - live_acc == pytest.approx(estimate)
    comparison = watcher.live.as_json()["accuracy"]["comparison"]
    assert comparison["text"].startswith("shadow ") and comparison["p_value"] < 0.01

    watcher.delivered(*batch_of([9], [0.9]))  # a batch the shadow did not score changes nothing of it
    assert metric("sentiment_shadow_mcnemar_p_value", **pair) < 0.01
    watcher.shadow_ended()  # the shadow is gone: so are its series
    assert metric("sentiment_shadow_mcnemar_p_value", **pair) is None
    assert metric("sentiment_accuracy", version="v-weak", role="shadow") is None


def test_the_floor_is_read_from_the_started_models_metrics_at_run_time_unless_pinned():
    import json

    from core.settings import DEFAULT_MODEL, Settings
    from model.scorer import ModelArtifact
    from stream.observe.health import Health
    from stream.observer import BatchObserver

    validation = json.loads((DEFAULT_MODEL / "metrics.json").read_text())["validation"]["accuracy"]
    artifact, scorer = ModelArtifact.at(DEFAULT_MODEL), FakeScorer()
    scorer.scoring = "compiled"
    BatchObserver.for_model(artifact, scorer, Settings(accuracy_margin=0.02), Health(), lambda: None)
    assert metric("sentiment_accuracy_floor") == pytest.approx(validation - 0.02)
    BatchObserver.for_model(artifact, scorer, Settings(accuracy_floor=0.8), Health(), lambda: None)
    assert metric("sentiment_accuracy_floor") == 0.8
