"""Drift statistics: unit checks on synthetic scores, and the acceptance figures on real reviews."""

import random

import numpy as np
import pytest

from model.scorer import ModelArtifact
from sentiment.datasets import read_reviews
from sentiment.settings import DEFAULT_MODEL, Settings
from stream.drift import DriftMonitor


def test_same_distribution_gives_small_psi_and_ks():
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(rng.beta(0.5, 0.5, 5000), window=1000)
    monitor.add(rng.beta(0.5, 0.5, 1000))
    assert monitor.psi() < 0.05 and monitor.ks() < 0.06


def test_shifted_distribution_gives_large_psi_and_ks():
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(rng.beta(0.5, 0.5, 5000), window=1000)
    monitor.add(rng.beta(5, 5, 1000))  # everything near 0.5: an unsure model
    assert monitor.psi() > 0.5 and monitor.ks() > 0.2


def test_not_ready_before_enough_scores():
    monitor = DriftMonitor(np.linspace(0, 1, 100), window=1000, min_scores=200)
    monitor.add([0.5] * 199)
    assert np.isnan(monitor.psi()) and np.isnan(monitor.ks())
    monitor.add([0.5])
    assert monitor.ks() == pytest.approx(0.5, abs=0.02)


def replay_psi(scores: np.ndarray, monitor: DriftMonitor, batch: int = 256) -> list[float]:
    out = []
    for i in range(0, len(scores), batch):
        monitor.add(scores[i : i + batch])
        out.append(monitor.psi())
    return out


def test_imdb_stays_below_and_amazon_crosses_the_threshold(scorer, data_dir):
    """The acceptance figures, batch by batch as the worker sees them (window and threshold of the settings)."""
    settings = Settings()
    reference = ModelArtifact.at(DEFAULT_MODEL).reference_scores()
    imdb = [r.text for r in read_reviews(data_dir / "imdb_test.csv.gz")]
    random.Random(3).shuffle(imdb)
    shift = [
        r.text
        for r in read_reviews(data_dir / "shift_amazon_mds.csv.gz")
        if r.review_id.startswith(("mds_electronics", "mds_kitchen"))
    ]
    random.Random(3).shuffle(shift)
    score = lambda texts: np.concatenate([scorer.score(texts[i : i + 1024]) for i in range(0, len(texts), 1024)])  # noqa: E731

    monitor = DriftMonitor(reference, window=settings.drift_window)
    imdb_psi = replay_psi(score(imdb), monitor)
    shift_psi = replay_psi(score(shift), monitor)
    crossed = next((i for i, p in enumerate(shift_psi) if p > settings.psi_threshold), None)
    print(
        f"imdb_test: max PSI {np.nanmax(imdb_psi):.3f} over {len(imdb):,} reviews; "
        f"shift: PSI crosses {settings.psi_threshold} after {None if crossed is None else (crossed + 1) * 256} "
        f"of {len(shift):,} reviews, ends at {shift_psi[-1]:.3f}"
    )
    assert np.nanmax(imdb_psi) < settings.psi_threshold
    assert crossed is not None
    # once the window holds only shifted reviews, the PSI stays above the threshold (the alert would fire)
    full = settings.drift_window // 256 + 1
    assert min(shift_psi[full:]) > settings.psi_threshold
