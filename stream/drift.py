"""Score drift: how far the recent scores have moved from the model's reference distribution.

The reference is the model's scores on in-domain reviews it did not train on (``reference_scores.json``;
``metrics.json`` names them under ``drift_reference``). Over a sliding window of the most recent scores we compute
- the Population Stability Index over the reference's deciles: sum((w - r) * ln(w / r)); the textbook reading is
  below 0.1 stable, above 0.2 significant, but the alert threshold is a setting measured per model (README, Drift);
- the two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

_EPSILON = 1e-4  # a floor for empty bins, so that one empty bin does not make the PSI infinite


class DriftMonitor:
    def __init__(self, reference: np.ndarray, window: int = 1000, bins: int = 10, min_scores: int | None = None):
        if len(reference) < bins:
            raise ValueError(f"the reference distribution needs at least {bins} scores, it has {len(reference)}")
        self.reference = np.sort(np.asarray(reference, dtype=np.float64))
        inner = np.quantile(self.reference, np.linspace(0, 1, bins + 1)[1:-1])
        self.edges = np.unique(inner)  # bins edges between the deciles (ties collapse)
        self.reference_share = self._shares(self.reference)
        self.window: deque[float] = deque(maxlen=window)
        # below this many scores PSI and KS are too noisy to alert on (bench/drift_warmup.py); never above the window
        self.min_scores = min(min_scores if min_scores is not None else window, window)

    def _shares(self, scores: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(self.edges, scores, side="right"), minlength=len(self.edges) + 1)
        return np.maximum(counts / max(len(scores), 1), _EPSILON)

    def add(self, scores: Iterable[float]) -> None:
        self.window.extend(float(s) for s in scores)

    @property
    def ready(self) -> bool:
        return len(self.window) >= self.min_scores

    def psi(self) -> float:
        if not self.ready:
            return float("nan")
        current = self._shares(np.fromiter(self.window, dtype=np.float64))
        return float(np.sum((current - self.reference_share) * np.log(current / self.reference_share)))

    def ks(self) -> float:
        if not self.ready:
            return float("nan")
        current = np.sort(np.fromiter(self.window, dtype=np.float64))
        points = np.concatenate([current, self.reference])
        cdf_current = np.searchsorted(current, points, side="right") / len(current)
        cdf_reference = np.searchsorted(self.reference, points, side="right") / len(self.reference)
        return float(np.max(np.abs(cdf_current - cdf_reference)))

    def positive_ratio(self) -> float:
        if not self.window:
            return float("nan")
        return float(np.mean(np.fromiter(self.window, dtype=np.float64) >= 0.5))
