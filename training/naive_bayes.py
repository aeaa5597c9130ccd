"""The naive-Bayes branch: NB-weighted logistic regression over a review's distinct n-grams (Wang & Manning 2012's
NB-SVM with a logistic loss, as "NBSVM++" in the fast.ai course), and the calibration that joins it to the pooled
branch.

Features are binarized: n-gram ``f`` is 1 in a review that holds it, however often. ``r_f`` is its naive-Bayes
log-count ratio over the training reviews, ``log((1 + P_f) / sum(1 + P)) - log((1 + N_f) / sum(1 + N))`` with
``P_f``/``N_f`` the positive/negative reviews that hold it. The logit is ``b + sum over the review's distinct known
n-grams of r_f * u_f``: a logistic regression on NB-scaled features, fitted by full-batch Adam from zero with an L2
penalty for a fixed number of steps (the steps are the regularization as much as the penalty: both were chosen by
5-fold by-film cross-validation on ``imdb_train``, training/TUNING.md). Exported as one weight per n-gram,
``v_f = r_f * u_f`` (times the calibration's slope), in :class:`model.layers.DistinctSum`.

A review's features are (row, column) pairs; the sparse products are segment sums (numba, every core), summed in
``np.add.reduceat``'s order to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

UNKNOWN_ID = 1  # TextVectorization: 0 padding, 1 [UNK]


@dataclass(frozen=True, eq=False)
class Features:
    """The distinct known n-gram ids of each review, as (row, column) pairs of a binary matrix."""

    rows: np.ndarray  # int32
    cols: np.ndarray  # int32
    reviews: int
    columns: int  # the vocabulary size

    @classmethod
    def of(cls, vectorize, texts: list[str], columns: int, batch: int = 1024) -> Features:
        """``vectorize`` maps a list of texts to a padded int array of vocabulary ids (the model's vectorizer)."""
        rows, cols = [], []
        for start in range(0, len(texts), batch):
            ids = np.sort(np.asarray(vectorize(texts[start : start + batch])), axis=1)
            first = np.ones(ids.shape, dtype=bool)
            first[:, 1:] = ids[:, 1:] != ids[:, :-1]
            row, position = np.nonzero(first & (ids > UNKNOWN_ID))
            rows.append((row + start).astype(np.int32))
            cols.append(ids[row, position].astype(np.int32))
        return cls(np.concatenate(rows), np.concatenate(cols), len(texts), columns)

    def times(self, weights: np.ndarray) -> np.ndarray:
        """Each review's sum of ``weights`` over its n-grams (the matrix times a vector)."""
        return _gathered_segment_sums(np.asarray(weights, np.float64), self.cols, self._row_bounds)

    def transposed_times(self, values: np.ndarray) -> np.ndarray:
        """Each n-gram's sum of ``values`` over the reviews that hold it."""
        rows_by_col, bounds = self._by_col
        return _gathered_segment_sums(np.asarray(values, np.float64), rows_by_col, bounds)

    @cached_property
    def _row_bounds(self) -> np.ndarray:
        return _bounds(self.rows, self.reviews)  # the pairs are in row order already (Features.of)

    @cached_property
    def _by_col(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.cols, kind="stable")
        return self.rows[order], _bounds(self.cols[order], self.columns)


def _bounds(keys: np.ndarray, count: int) -> np.ndarray:
    """Where each key's run starts in sorted ``keys``, and where the last one ends: ``count + 1`` offsets."""
    return np.searchsorted(keys, np.arange(count + 1))


@numba.njit(cache=True, parallel=True)
def _gathered_segment_sums(values, index, bounds):
    """``np.add.reduceat(np.append(values[index], 0.0), bounds[:-1])`` with empty runs 0, to the last bit, as these
    products were computed before (the appended 0 is summed into the last run: it changes where a long run is split).
    reduceat sums a run as its first value plus numpy's pairwise sum of the others (:func:`_pairwise_sum`). Here
    without the gathered copies (80 MB each at 10 million pairs), and on every core: the products are most of the
    naive-Bayes fit's time."""
    runs = len(bounds) - 1
    out = np.zeros(runs)
    longest = 0
    for k in range(runs):
        longest = max(longest, bounds[k + 1] - bounds[k])
    chunks = 64
    for chunk in numba.prange(chunks):
        run = np.zeros(longest + 1)  # one run's values, gathered (and the appended 0 after the last run)
        for k in range(chunk * runs // chunks, (chunk + 1) * runs // chunks):
            start, end = bounds[k], bounds[k + 1]
            if end == start:
                continue
            for i in range(start, end):
                run[i - start] = values[index[i]]
            n = end - start
            if k == runs - 1:
                run[n] = 0.0
                n += 1
            out[k] = run[0] + _pairwise_sum(run[1:n]) if n > 1 else run[0]
    return out


@numba.njit(cache=True)
def _pairwise_sum(a):
    """numpy's pairwise summation (``pairwise_sum`` in numpy's loops: up to 8 values one by one, up to 128 in 8 running
    sums, more split in two at a multiple of 8)."""
    n = len(a)
    if n < 8:
        total = -0.0
        for i in range(n):
            total += a[i]
        return total
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
        i = 8
        while i < n - n % 8:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            total += a[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(a[:half]) + _pairwise_sum(a[half:])


def log_count_ratios(features: Features, labels: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    positive = labels[features.rows] > 0.5
    p = np.bincount(features.cols[positive], minlength=features.columns) + smoothing
    n = np.bincount(features.cols[~positive], minlength=features.columns) + smoothing
    r = np.log(p / p.sum()) - np.log(n / n.sum())
    r[: UNKNOWN_ID + 1] = 0.0  # padding and [UNK] are never features
    return r


@dataclass(frozen=True)
class NaiveBayesBranch:
    weights: np.ndarray  # v_f = r_f * u_f, one per vocabulary id (0 for padding and [UNK])
    bias: float
    history: dict  # the training loss (and validation accuracy, when given) every 25 steps

    def logits(self, features: Features) -> np.ndarray:
        return features.times(self.weights) + self.bias


def fit(
    features: Features,
    labels: np.ndarray,
    *,
    l2: float,
    learning_rate: float,
    steps: int,
    smoothing: float = 1.0,
    validation: tuple[Features, np.ndarray] | None = None,
) -> NaiveBayesBranch:
    """Full-batch Adam (beta 0.9/0.999, eps 1e-8) on the mean logistic loss + l2/2 |u|^2, from u = 0, b = 0."""
    y = labels.astype(np.float64)
    r = log_count_ratios(features, labels, smoothing)
    n = features.reviews
    u = np.zeros(features.columns)
    b = 0.0
    m = np.zeros(features.columns + 1)
    s = np.zeros(features.columns + 1)
    history: dict[str, list[float]] = {"step": [], "loss": [], "val_accuracy": []}
    for t in range(1, steps + 1):
        z = features.times(r * u) + b
        g = (1.0 / (1.0 + np.exp(-z)) - y) / n
        gradient = np.concatenate([r * features.transposed_times(g) + l2 * u, [g.sum()]])
        m = 0.9 * m + 0.1 * gradient
        s = 0.999 * s + 0.001 * gradient * gradient
        step = learning_rate * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
        u -= step[:-1]
        b -= step[-1]
        if t % 25 == 0 or t == steps:
            history["step"].append(t)
            history["loss"].append(float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * u @ u))
            if validation is not None:
                zv = validation[0].times(r * u) + b
                history["val_accuracy"].append(float(np.mean((zv > 0) == (validation[1] > 0.5))))
    if validation is None:
        del history["val_accuracy"]
    return NaiveBayesBranch(weights=r * u, bias=float(b), history=history)


def most_confident(logits: np.ndarray, share: float) -> np.ndarray:
    """The indices (ascending) of the ``share`` of the reviews whose logits are farthest from 0 (ties: the first)."""
    count = int(round(share * len(logits)))
    return np.sort(np.argsort(-np.abs(logits), kind="stable")[:count])


def join_features(features: Features, other: Features, kept: np.ndarray) -> Features:
    """``features`` with the reviews ``kept`` (ascending) of ``other`` appended after its own, in that order."""
    rank = np.full(other.reviews, -1, np.int64)
    rank[kept] = np.arange(len(kept))
    mask = rank[other.rows] >= 0
    rows = (rank[other.rows[mask]] + features.reviews).astype(np.int32)
    return Features(
        np.concatenate([features.rows, rows]), np.concatenate([features.cols, other.cols[mask]]),
        features.reviews + len(kept), features.columns,
    )  # fmt: skip


def self_train(
    features: Features,
    labels: np.ndarray,
    unlabelled: Features,
    unlabelled_logits: np.ndarray,
    share: float,
    **settings,
) -> tuple[NaiveBayesBranch, np.ndarray]:
    """Self-training (issue 29, training/TUNING.md round 5): the ``share`` of the unlabelled reviews a first fit is
    surest of (largest |logit|, ``unlabelled_logits``) join the training reviews with its hard labels, and the
    branch is fitted again from zero with the same ``settings`` (:func:`fit`'s keywords). Returns the new branch and
    the indices of the unlabelled reviews it was given."""
    kept = most_confident(unlabelled_logits, share)
    pseudo = (np.asarray(unlabelled_logits)[kept] > 0).astype(np.float32)
    joined = join_features(features, unlabelled, kept)
    return fit(joined, np.concatenate([np.asarray(labels, np.float32), pseudo]), **settings), kept


def fit_calibration(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Logistic regression of the labels on the branches' logits (one column each): the weight of each branch and a
    bias, ``[w_1, ..., w_k, c]``. With one branch it is Platt scaling; with two it also weighs them. Newton's method;
    the small L2 penalty keeps it defined on separable data."""
    a = np.column_stack([logits, np.ones(len(logits))]).astype(np.float64)
    y = labels.astype(np.float64)
    theta = np.zeros(a.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        gradient = a.T @ (p - y) + l2 * theta
        hessian = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(a.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta
