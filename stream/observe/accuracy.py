"""Live accuracy: how often the model is right on reviews that carry their reviewer's own rating.

IMDB's convention makes a rating a label: 7 to 10 positive, 1 to 4 negative; 5 and 6 (and no rating) say nothing and
change nothing here. For each scorer in use (the live one and, when one is set, a shadow scoring the very same
reviews) a :class:`RatedWindow` keeps the most recent rated reviews it scored and gives their accuracy and
calibration error. For the reviews both scored, :class:`PairedComparison` counts who was right since the pair
started, and decides with McNemar's test whether they differ (the one figure a promotion needs).

No Prometheus and no Kafka in here: :class:`LiveAccuracy` is fed one batch at a time and asked what it knows;
the observer exports it (stream/observer.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSITIVE_FROM = 7  # a rating of 7 to 10 is a positive review (IMDB's convention, and the dataset's labels)
NEGATIVE_UP_TO = 4  # 1 to 4 negative; 5 and 6 are neither
CALIBRATION_BINS = 10  # equal-width bins of P(positive), as training/metrics.py's expected_calibration_error
_INNER_EDGES = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[1:-1]  # the same edges, so the same bins
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
EXACT_BELOW = 25  # discordant pairs below which McNemar's p-value is the exact binomial one


def rated(ratings: Sequence[int | None], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reviews whose rating is a label: (their positions, labels 1/0, scores)."""
    where = [i for i, r in enumerate(ratings) if r is not None and (r >= POSITIVE_FROM or r <= NEGATIVE_UP_TO)]
    positions = np.asarray(where, dtype=np.intp)
    labels = np.asarray([ratings[i] >= POSITIVE_FROM for i in where], dtype=np.int8)
    return positions, labels, np.asarray(scores, dtype=np.float64)[positions]


class RatedWindow:
    """The ``size`` most recent rated reviews one model version scored, in a ring; their count, the right answers
    and the calibration bins' sums are kept as reviews come and go, so that each figure costs O(1) to read and
    each review O(1) to add."""

    def __init__(self, version: str, size: int) -> None:
        self.version = version
        self.size = size
        self.labels = np.zeros(size, dtype=np.int8)
        self.scores = np.zeros(size, dtype=np.float64)
        self.bins = np.zeros(size, dtype=np.intp)
        self.count = 0
        self.next = 0  # the slot the next review goes to
        self.right = 0
        self.bin_count = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.bin_positive = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.bin_score = np.zeros(CALIBRATION_BINS, dtype=np.float64)

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        if len(labels) > self.size:  # only the last ``size`` can stay
            labels, scores = labels[-self.size :], scores[-self.size :]
        k = len(labels)
        if not k:
            return
        slots = (self.next + np.arange(k)) % self.size
        leaving = slots[slots < self.count]  # slots below count hold a review (filled from 0 before wrapping)
        if len(leaving):
            self._count(self.labels[leaving], self.scores[leaving], self.bins[leaving], -1)
        bins = np.digitize(scores, _INNER_EDGES)
        self.labels[slots], self.scores[slots], self.bins[slots] = labels, scores, bins
        self._count(labels, scores, bins, +1)
        self.count = min(self.count + k, self.size)
        self.next = int((self.next + k) % self.size)
        if self.next < k:  # wrapped: sum the scores afresh, so that rounding never piles up
            filled = slice(0, self.count)
            self.bin_score = np.bincount(self.bins[filled], self.scores[filled], minlength=CALIBRATION_BINS)

    def _count(self, labels: np.ndarray, scores: np.ndarray, bins: np.ndarray, sign: int) -> None:
        self.right += sign * int(np.count_nonzero((scores >= 0.5) == labels.astype(bool)))
        self.bin_count += sign * np.bincount(bins, minlength=CALIBRATION_BINS)
        self.bin_positive += sign * np.bincount(bins, labels, minlength=CALIBRATION_BINS).astype(np.int64)
        self.bin_score += sign * np.bincount(bins, scores, minlength=CALIBRATION_BINS)

    def accuracy(self) -> float:
        return self.right / self.count if self.count else float("nan")

    def calibration_error(self) -> float:
        """Expected calibration error: over the bins, |positives - sum of scores| / reviews, which is the mean
        |accuracy - confidence| weighted by bin size (training/metrics.py's definition)."""
        if not self.count:
            return float("nan")
        return float(np.sum(np.abs(self.bin_positive - self.bin_score)) / self.count)


@dataclass(frozen=True)
class VersionAccuracy:
    """What a window says of one version in one role (``live`` or ``shadow``)."""

    role: str
    version: str
    reviews: int
    accuracy: float  # NaN below the minimum count
    calibration_error: float

    def as_json(self) -> dict:
        return {
            "role": self.role,
            "version": self.version,
            "reviews": self.reviews,
            "accuracy": _or_none(self.accuracy),
            "calibration_error": _or_none(self.calibration_error),
        }


class PairedComparison:
    """Shadow against live on the rated reviews both scored, since the pair started: who was right on each."""

    def __init__(self, live_version: str, shadow_version: str) -> None:
        self.live_version = live_version
        self.shadow_version = shadow_version
        self.both_right = 0
        self.live_only = 0  # live right, shadow wrong
        self.shadow_only = 0  # shadow right, live wrong
        self.both_wrong = 0

    def add(self, labels: np.ndarray, live_scores: np.ndarray, shadow_scores: np.ndarray) -> None:
        truth = labels.astype(bool)
        live = (live_scores >= 0.5) == truth
        shadow = (shadow_scores >= 0.5) == truth
        self.both_right += int(np.count_nonzero(live & shadow))
        self.live_only += int(np.count_nonzero(live & ~shadow))
        self.shadow_only += int(np.count_nonzero(~live & shadow))
        self.both_wrong += int(np.count_nonzero(~live & ~shadow))

    @property
    def reviews(self) -> int:
        return self.both_right + self.live_only + self.shadow_only + self.both_wrong

    def live_accuracy(self) -> float:
        return (self.both_right + self.live_only) / self.reviews if self.reviews else float("nan")

    def shadow_accuracy(self) -> float:
        return (self.both_right + self.shadow_only) / self.reviews if self.reviews else float("nan")

    def difference(self) -> tuple[float, float, float]:
        """Shadow's accuracy minus live's, with its 95% interval (the Wald interval of a difference of paired
        proportions: only the discordant reviews carry information)."""
        n = self.reviews
        if not n:
            return (float("nan"),) * 3
        b, c = self.live_only, self.shadow_only
        estimate = (c - b) / n
        spread = Z_95 * math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
        return estimate, estimate - spread, estimate + spread

    def p_value(self) -> float:
        return mcnemar_p_value(self.live_only, self.shadow_only)

    def text(self) -> str:
        """One line for people: "shadow 91.9% vs live 91.1% on 4,812 rated reviews, difference +0.8 points
        (95% interval +0.3 to +1.3), p = 0.003"."""
        estimate, low, high = (100 * x for x in self.difference())
        return (
            f"shadow {100 * self.shadow_accuracy():.1f}% vs live {100 * self.live_accuracy():.1f}% on "
            f"{self.reviews:,} rated reviews, difference {estimate:+.1f} points "
            f"(95% interval {low:+.1f} to {high:+.1f}), {format_p(self.p_value())}"
        )

    def as_json(self) -> dict:
        estimate, low, high = self.difference()
        return {
            "live_version": self.live_version,
            "shadow_version": self.shadow_version,
            "reviews": self.reviews,
            "live_accuracy": _or_none(self.live_accuracy()),
            "shadow_accuracy": _or_none(self.shadow_accuracy()),
            "live_only_right": self.live_only,
            "shadow_only_right": self.shadow_only,
            "difference": _or_none(estimate),
            "difference_low": _or_none(low),
            "difference_high": _or_none(high),
            "p_value": _or_none(self.p_value()),
            "text": self.text() if self.reviews else None,
        }


def mcnemar_p_value(live_only: int, shadow_only: int) -> float:
    """Two-sided p-value of McNemar's test on the discordant pairs: under "equally good", each discordant review
    is a fair coin. Exact (binomial) below ``EXACT_BELOW`` discordant pairs, else the chi-square statistic with
    continuity correction, (|b - c| - 1)^2 / (b + c), whose one-degree tail is erfc(sqrt(x / 2))."""
    n = live_only + shadow_only
    if n == 0:
        return 1.0
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, k) for k in range(min(live_only, shadow_only) + 1)) / 2**n
        return min(1.0, 2 * tail)
    statistic = max(abs(live_only - shadow_only) - 1, 0) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2))


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


class LiveAccuracy:
    """Accuracy and calibration of the live scorer, and of a shadow scorer on the same reviews, from the reviews
    whose rating is a label. Fed once per scored batch with :meth:`add`. A version's figures are NaN until its
    window holds ``min_reviews``; a new live or shadow version starts a new window (and a new comparison)."""

    def __init__(self, window: int = 2000, min_reviews: int = 200, floor: float | None = None) -> None:
        self.window = window
        self.min_reviews = min(min_reviews, window)
        self.floor = floor  # the live accuracy below which operators are alerted (validation accuracy - margin)
        self.live: RatedWindow | None = None
        self.shadow: RatedWindow | None = None
        self.comparison: PairedComparison | None = None

    def add(
        self,
        ratings: Sequence[int | None],
        live_scores: Sequence[float],
        live_version: str,
        shadow_scores: Sequence[float] | None = None,
        shadow_version: str | None = None,
    ) -> None:
        """One batch: each review's rating (None: not rated) and the live scorer's score; with a shadow, its
        scores of the very same reviews, in the same order. A batch without shadow scores leaves the shadow's
        figures as they are (a shadow that skipped a batch keeps its evidence): :meth:`end_shadow` ends them."""
        if self.live is None or self.live.version != live_version:
            self.live = RatedWindow(live_version, self.window)
        shadowed = shadow_scores is not None and shadow_version is not None
        if shadowed:
            if self.shadow is None or self.shadow.version != shadow_version:
                self.shadow = RatedWindow(shadow_version, self.window)
            comparison = self.comparison
            if comparison is None or (comparison.live_version, comparison.shadow_version) != (
                live_version,
                shadow_version,
            ):
                self.comparison = PairedComparison(live_version, shadow_version)
        positions, labels, scores = rated(ratings, live_scores)
        if not len(positions):
            return
        self.live.add(labels, scores)
        if shadowed:
            theirs = np.asarray(shadow_scores, dtype=np.float64)[positions]
            self.shadow.add(labels, theirs)
            self.comparison.add(labels, scores, theirs)

    def end_shadow(self) -> None:
        """The shadow is gone: forget its window and the comparison."""
        self.shadow = self.comparison = None

    def versions(self) -> list[VersionAccuracy]:
        """The live version's figures and the shadow's, if any (NaN below the minimum count)."""
        found = []
        for role, window in (("live", self.live), ("shadow", self.shadow)):
            if window is None:
                continue
            ready = window.count >= self.min_reviews
            found.append(
                VersionAccuracy(
                    role,
                    window.version,
                    window.count,
                    window.accuracy() if ready else float("nan"),
                    window.calibration_error() if ready else float("nan"),
                )
            )
        return found

    def compared(self) -> PairedComparison | None:
        """The comparison, once it holds ``min_reviews`` rated reviews."""
        comparison = self.comparison
        return comparison if comparison is not None and comparison.reviews >= self.min_reviews else None

    def as_json(self) -> dict:
        compared = self.compared()
        return {
            "window": self.window,
            "min_reviews": self.min_reviews,
            "floor": self.floor,
            "versions": [v.as_json() for v in self.versions()],
            "comparison": compared.as_json() if compared is not None else None,
            "comparison_reviews": self.comparison.reviews if self.comparison is not None else 0,
        }


def accuracy_floor(model_metrics: dict, margin: float) -> float | None:
    """The live accuracy below which to alert: the model's own validation accuracy (its ``metrics.json``) minus
    ``margin``; None when the artifact does not say."""
    try:
        return float(model_metrics["validation"]["accuracy"]) - margin
    except (KeyError, TypeError, ValueError):
        return None


def _or_none(x: float) -> float | None:
    return None if x != x else x
