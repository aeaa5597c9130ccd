"""Drift: how far the recent traffic has moved from what the model was made for.

Score drift (``DriftMonitor``) compares the recent scores with the model's reference scores; input drift
(``InputDriftMonitor``) compares what the recent reviews look like to the model with ``reference_inputs.json``;
``drift_verdict`` combines both into one number whose alert threshold is 1.

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


class InputDriftMonitor:
    """Input drift over a sliding window of reviews, against the reference saved with the model:

    - ``oov_shift``: how much larger the share of n-grams the model does not know is than in the reference
      (0.07 means 7 more n-grams in 100 are unknown); reviews about other things use other words;
    - ``length_shift``: the mean log length in n-grams, minus the reference's (-0.7 means about half as long);
    - ``embedding_shift``: the distance of the window's mean pooled vector from the reference mean, in reference
      standard deviations per dimension (root mean square over dimensions). Exported, but not in the verdict:
      the pooled vector moves with the sentiment mix as much as with the domain (README, Drift).
    """

    def __init__(self, reference: dict, window: int = 1000, min_reviews: int | None = None) -> None:
        self.reference = reference
        self.known_share_reference = float(reference["known_share"])
        self.mean_log_ngrams_reference = float(reference["mean_log_ngrams"])
        self.pooled_mean = np.asarray(reference["pooled_mean"], dtype=np.float64)
        self.pooled_std = np.maximum(np.asarray(reference["pooled_std"], dtype=np.float64), 1e-9)
        # the window as rows of arrays, the oldest overwritten (a deque of one array per review was restacked for
        # every batch: 9% of the worker's time in one profile)
        self.ngrams = _Window(window, np.int64)
        self.known = _Window(window, np.int64)
        self.pooled = _Window(window, np.float64, width=len(self.pooled_mean))
        self.min_reviews = min(min_reviews if min_reviews is not None else window, window)

    def add(self, ngrams: Iterable[int], known: Iterable[int], pooled: Iterable[np.ndarray]) -> None:
        self.ngrams.extend(ngrams)
        self.known.extend(known)
        self.pooled.extend(pooled)

    @property
    def ready(self) -> bool:
        return len(self.ngrams) >= self.min_reviews

    def oov_shift(self) -> float:
        if not self.ready:
            return float("nan")
        known_share = int(self.known.rows().sum()) / max(int(self.ngrams.rows().sum()), 1)
        return float(self.known_share_reference - known_share)

    def length_shift(self) -> float:
        if not self.ready:
            return float("nan")
        return float(np.mean(np.log1p(self.ngrams.rows().astype(np.float64))) - self.mean_log_ngrams_reference)

    def mean_ngrams(self) -> float:
        return float(np.mean(self.ngrams.rows())) if len(self.ngrams) else float("nan")

    def embedding_shift(self) -> float:
        if not self.ready:
            return float("nan")
        centre = np.mean(self.pooled.rows(), axis=0)
        return float(np.sqrt(np.mean(((centre - self.pooled_mean) / self.pooled_std) ** 2)))


class _Window:
    """The last ``size`` values (or rows of ``width`` values) added, in a fixed array: the oldest are overwritten.
    Their order is not kept, only which they are: what the monitor computes of them are sums and means."""

    def __init__(self, size: int, dtype, width: int | None = None) -> None:
        self.data = np.zeros((size,) if width is None else (size, width), dtype=dtype)
        self.added = 0

    def __len__(self) -> int:
        return min(self.added, len(self.data))

    def extend(self, values: Iterable) -> None:
        values = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=self.data.dtype)
        size, n = len(self.data), len(values)
        kept = values[max(0, n - size) :]  # of a batch larger than the window, its last values
        # the k-th value ever added lives at k % size: the place of the oldest, which it replaces
        self.data[(self.added + n - len(kept) + np.arange(len(kept))) % size] = kept
        self.added += n

    def rows(self) -> np.ndarray:
        return self.data[: len(self)]


def drift_verdict(oov_shift: float, length_shift: float, *, oov_scale: float, length_scale: float) -> tuple[float, str]:
    """One number for "the reviews no longer look like what the model was made for": the larger of the input signals,
    each divided by its scale, so that 1 is the alert threshold; NaN until they are measured. Also returns the signal
    that decides it. Score PSI is not part of it: it has its own alert (README, Drift, says why)."""
    parts = {
        "unknown_ngrams": oov_shift / oov_scale,  # only more unknown n-grams than usual is drift
        "length": abs(length_shift) / length_scale,
    }
    if any(v != v for v in parts.values()):
        return float("nan"), ""
    name = max(parts, key=parts.get)
    return float(parts[name]), name
