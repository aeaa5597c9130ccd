"""Live accuracy on real parts (Tansu, PostgreSQL, a worker process): rated `imdb_test` reviews streamed shuffled
give the accuracy and calibration error the same model has offline on the same reviews; unrated reviews and ratings
of 5-6 change nothing; every stored row carries its reviewer's rating."""

from __future__ import annotations

import collections
import dataclasses
import random

import numpy as np
import pytest
from sqlalchemy import text

from sentiment.local import free_port
from sentiment.producing import produce_reviews
from stream.sql.db import make_engine
from tests.conftest import ROOT, probe, stored_count, wait_until
from training.metrics import classification_metrics

pytestmark = pytest.mark.integration


def exported(port: int, name: str) -> dict[tuple[str, str], float]:
    """A worker's gauge by (version, role)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (s.labels["version"], s.labels["role"]): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name
    }


def test_live_accuracy_matches_the_offline_accuracy_of_the_same_reviews(
    stream_settings, start_worker, imdb_test_rows, fast_scorer
):
    rng = random.Random(21)
    chosen = rng.sample(imdb_test_rows, 3000)  # shuffled: the file is sorted by label
    unrated = [dataclasses.replace(r, rating=None) for r in chosen[:300]]
    undecided = [dataclasses.replace(r, rating=rng.choice([5, 6])) for r in chosen[300:400]]
    rated = chosen[400:]
    reviews = unrated + undecided + rated
    rng.shuffle(reviews)
    settings = stream_settings.model_copy(update={"metrics_port": free_port(), "web_port": free_port()})
    # a window as large as the stream, so that the live figures are those of every rated review sent
    worker = start_worker(settings, {"SENTIMENT_ACCURACY_WINDOW": "5000", "SENTIMENT_ACCURACY_MIN_REVIEWS": "200"})
    assert wait_until(lambda: probe(settings.metrics_port, "/readyz")[0] == 200, 60, on_poll=worker.assert_alive), (
        worker.tail()
    )
    produce_reviews(settings, reviews, progress=False)
    assert wait_until(lambda: stored_count(settings.database_url) == len(reviews), 120, on_poll=worker.assert_alive), (
        worker.tail()
    )

    def window() -> float:
        return sum(exported(settings.metrics_port, "sentiment_accuracy_window_reviews").values())

    assert wait_until(lambda: window() == len(rated), 30), (window(), worker.tail())
    [(version, role)] = exported(settings.metrics_port, "sentiment_accuracy")
    assert (version, role) == (fast_scorer.version, "live")
    accuracy = exported(settings.metrics_port, "sentiment_accuracy")[(version, "live")]
    calibration = exported(settings.metrics_port, "sentiment_calibration_error")[(version, "live")]

    labels = np.array([int(r.rating >= 7) for r in rated])
    assert labels.tolist() == [r.label for r in rated]  # IMDB's labels are its ratings, 7-10 and 1-4
    offline = classification_metrics(labels, fast_scorer.score([r.text for r in rated]))
    print(
        f"\nlive accuracy {accuracy:.4f} (offline {offline['accuracy']:.4f}), calibration error {calibration:.4f}"
        f" (offline {offline['calibration_error']:.4f}) on {len(rated):,} rated reviews"
    )
    assert abs(accuracy - offline["accuracy"]) <= 0.005
    assert abs(calibration - offline["calibration_error"]) <= 0.005
    floor = exported_floor(settings.metrics_port)
    assert 0.5 < floor < accuracy  # the committed model is above its own floor on imdb_test

    status, live = probe(settings.web_port, "/api/live")
    assert status == 200 and live["accuracy"]["versions"][0]["reviews"] == len(rated)
    assert live["accuracy"]["versions"][0]["accuracy"] == pytest.approx(accuracy)

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT review_id, reviewer_rating FROM review_scores")).all())
            by_version = conn.execute(text(readme_sql("-- accuracy by model version"))).all()
            by_day = conn.execute(text(readme_sql("-- accuracy by day"))).all()
            by_film = conn.execute(text(readme_sql("-- the films the model gets most wrong"))).all()
    finally:
        engine.dispose()
    assert stored == {r.review_id: r.rating for r in reviews}
    # the README's SQL gives the same figure from the table
    assert [(r.model_version, r.rated_reviews, float(r.accuracy)) for r in by_version] == [
        (version, len(rated), pytest.approx(accuracy, abs=1e-4))
    ]
    assert sum(r.rated_reviews for r in by_day) == len(rated)
    per_film = collections.Counter(r.movie_id for r in rated)
    assert len(by_film) == min(10, sum(n >= 10 for n in per_film.values()))
    assert all(r.rated_reviews == per_film[r.movie_id] for r in by_film)


def readme_sql(comment: str) -> str:
    """The statement of the docs (docs/model-lifecycle.md) that follows ``comment``, up to its semicolon."""
    readme = (ROOT / "docs" / "model-lifecycle.md").read_text()
    start = readme.index(comment)
    return readme[start : readme.index(";", start)]


def exported_floor(port: int) -> float:
    from sentiment.local import read_metric

    return read_metric(port, "sentiment_accuracy_floor")
