"""The context branch: what the unlabelled reviews say about each n-gram, folded into one weight per n-gram.

Recipe (issue 29; every choice by 5-fold by-film cross-validation on ``imdb_train``, training/TUNING.md):

1. Every review of the context corpus (the labelled training reviews and the unlabelled ones, never a review being
   scored) becomes a vector: the ``dims``-dimension truncated SVD of its binary unigram vector, idf-weighted and
   L2-normalised (randomized SVD, numpy only).
2. Every n-gram of the model's vocabulary that occurs in at least ``min_reviews`` of those reviews gets the mean
   vector of the reviews that hold it, ``u_g``; the others get none (zero).
3. A review's context feature is the mean of ``u_g`` over its known n-gram positions (the positions the pooled
   branch averages over, repeats included); a logistic regression on the standardised feature (L2 penalty ``l2``)
   gives the context logit ``w . (f - mu) / sigma + b``.
4. That is linear in the ``u_g``, so it folds into one scalar per n-gram, ``c_g = (w / sigma) . u_g``, averaged over
   the review's known n-grams, plus a bias: the branch serves (and is attributed) exactly like a per-n-gram table
   (:class:`model.layers.KnownAverage`).

A review's n-grams are given as vocabulary ids per position (TextVectorization's output without padding: 1 is
[UNK]), flat in one int array with the offsets where each review starts (:class:`Positions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

UNKNOWN_ID = 1  # TextVectorization: 0 padding, 1 [UNK]


@dataclass(frozen=True, eq=False)
class Positions:
    """The vocabulary ids of each review's n-gram positions, flat, and where each review starts (``offsets``)."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, reviews + 1

    @classmethod
    def of(cls, vectorize, texts: list[str], batch: int = 1024) -> Positions:
        """``vectorize`` maps a list of texts to a padded int array of vocabulary ids (the model's vectorizer)."""
        flat, lengths = [], []
        for start in range(0, len(texts), batch):
            ids = np.asarray(vectorize(texts[start : start + batch]))
            counts = (ids != 0).sum(axis=1)
            flat.append(ids[ids != 0].astype(np.int32))  # row-major: each review's positions in order
            lengths.append(counts)
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.concatenate(flat) if flat else np.zeros(0, np.int32), offsets)

    @property
    def reviews(self) -> int:
        return len(self.offsets) - 1

    def take(self, index: np.ndarray) -> Positions:
        """The reviews ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.offsets[index + 1] - self.offsets[index]
        offsets = np.zeros(len(index) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = np.repeat(self.offsets[index] - offsets[:-1], lengths)
        return Positions(self.ids[np.arange(offsets[-1]) + starts], offsets)

    def concat(self, other: Positions) -> Positions:
        return Positions(
            np.concatenate([self.ids, other.ids]), np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        )

    def row_of_position(self) -> np.ndarray:
        return np.repeat(np.arange(self.reviews, dtype=np.int64), np.diff(self.offsets))

    def distinct(self, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(row, id) pairs of each review's distinct known ids (only ids where ``keep`` is true, when given), sorted
        by row, then id. Computed once per ``Positions`` (each review's ids sorted on their own, in parallel: a sort
        of all the pairs at once took half of the context fit) and filtered by ``keep``, which keeps that order."""
        rows, ids = self._distinct
        if keep is None:
            return rows, ids
        mask = keep[ids]
        return rows[mask], ids[mask]

    @cached_property
    def _distinct(self) -> tuple[np.ndarray, np.ndarray]:
        return _distinct_known(self.ids, self.offsets)


@numba.njit(cache=True, parallel=True)
def _distinct_known(ids, offsets):
    """Each review's distinct ids above [UNK], ascending: (rows, ids), both int64."""
    n = len(offsets) - 1
    kept = np.empty(len(ids), np.int64)
    counts = np.zeros(n, np.int64)
    for r in numba.prange(n):
        start = offsets[r]
        seg = np.sort(ids[start : offsets[r + 1]])
        c = 0
        previous = -1
        for i in range(len(seg)):
            x = seg[i]
            if x > UNKNOWN_ID and x != previous:
                kept[start + c] = x
                c += 1
            previous = x
        counts[r] = c
    starts = np.zeros(n + 1, np.int64)
    starts[1:] = np.cumsum(counts)
    rows = np.empty(starts[-1], np.int64)
    out = np.empty(starts[-1], np.int64)
    for r in numba.prange(n):
        for j in range(counts[r]):
            rows[starts[r] + j] = r
            out[starts[r] + j] = kept[offsets[r] + j]
    return rows, out


@numba.njit(cache=True)
def _stable_order(keys, n_keys):
    """``np.argsort(keys, kind="stable")`` for keys in [0, n_keys), by counting (linear time)."""
    next_slot = np.zeros(n_keys + 1, np.int64)
    for k in keys:
        next_slot[k + 1] += 1
    for k in range(n_keys):
        next_slot[k + 1] += next_slot[k]
    order = np.empty(len(keys), np.int64)
    for i in range(len(keys)):
        order[next_slot[keys[i]]] = i
        next_slot[keys[i]] += 1
    return order


def _rows_times(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, dense: np.ndarray, n_rows: int) -> np.ndarray:
    """``S @ dense`` for the sparse ``S`` given by (row, col, value) triples sorted by row."""
    starts = np.searchsorted(rows, np.arange(n_rows + 1))
    return _csr_times(starts, cols.astype(np.int64), values.astype(np.float32), np.ascontiguousarray(dense, np.float32))


@numba.njit(cache=True, parallel=True)
def _csr_times(starts, cols, values, dense):
    out = np.zeros((len(starts) - 1, dense.shape[1]), dtype=np.float64)
    for r in numba.prange(len(starts) - 1):
        for i in range(starts[r], starts[r + 1]):
            c, v = cols[i], values[i]
            for d in range(dense.shape[1]):
                out[r, d] += v * dense[c, d]
    return out


class Sparse:
    """A sparse matrix of (row, col, value) triples, sorted by row, with products on both sides (numpy only)."""

    def __init__(self, rows, cols, values, shape) -> None:
        if len(rows) > 1 and np.any(rows[1:] < rows[:-1]):
            raise ValueError("the triples must be sorted by row")
        self.rows, self.cols, self.values = rows, cols, values.astype(np.float32)
        self.shape = shape

    def times(self, dense: np.ndarray) -> np.ndarray:
        return _rows_times(self.rows, self.cols, self.values, dense.astype(np.float32), self.shape[0])

    def transposed_times(self, dense: np.ndarray) -> np.ndarray:
        by_col = _stable_order(self.cols, self.shape[1])
        return _rows_times(
            self.cols[by_col], self.rows[by_col], self.values[by_col], dense.astype(np.float32), self.shape[1]
        )


def _by_col(rows, cols, values):
    order = _stable_order(cols, int(cols.max()) + 1 if len(cols) else 0)
    return cols[order], rows[order], values[order]


def review_vectors(corpus: Positions, terms: np.ndarray, dims: int, seed: int, power: int = 2) -> np.ndarray:
    """Each review's ``dims``-dimension vector: the truncated SVD (``U S``) of the binary matrix of its ``terms``
    (a mask of vocabulary ids: the unigrams, or the bigrams), each column weighted by its idf and each
    row L2-normalised. Randomized SVD (Halko et al.) with ``power`` power iterations."""
    rows, cols = corpus.distinct(terms)
    used, cols = np.unique(cols, return_inverse=True)
    n = corpus.reviews
    df = np.bincount(cols, minlength=len(used))
    idf = np.log(n / df) + 1.0
    values = idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n))
    values = values / np.maximum(norms, 1e-12)[rows]
    matrix = Sparse(rows, cols, values, (n, len(used)))
    transposed = Sparse(*_by_col(rows, cols, values), (len(used), n))
    matrix.transposed_times = transposed.times  # one sort by column for the 2 + power products
    rng = np.random.default_rng(seed)
    basis = matrix.times(rng.standard_normal((len(used), dims + 20)))
    for _ in range(power):
        basis, _ = np.linalg.qr(basis)
        basis, _ = np.linalg.qr(matrix.transposed_times(basis))
        basis = matrix.times(basis)
    basis, _ = np.linalg.qr(basis)
    small = matrix.transposed_times(basis).T  # (k, terms) = Q^T X
    u, s, _ = np.linalg.svd(small, full_matrices=False)
    return ((basis @ u[:, :dims]) * s[:dims]).astype(np.float32)


def ngram_vectors(corpus: Positions, vectors: np.ndarray, vocabulary_size: int, min_reviews: int) -> np.ndarray:
    """Each vocabulary id's mean review vector over the corpus reviews that hold it; zero for an id held by fewer
    than ``min_reviews`` of them (and for padding and [UNK])."""
    rows, cols = corpus.distinct()
    df = np.bincount(cols, minlength=vocabulary_size)
    keep = df[cols] >= min_reviews
    rows, cols = rows[keep], cols[keep]
    matrix = Sparse(rows, cols, np.ones(len(rows), np.float32), (corpus.reviews, vocabulary_size))
    sums = matrix.transposed_times(vectors)
    return (sums / np.maximum(df, 1)[:, None] * (df >= min_reviews)[:, None]).astype(np.float32)


def known_means(texts: Positions, table: np.ndarray) -> np.ndarray:
    """Each review's mean of ``table``'s rows over its known n-gram positions (repeats included); zero for a review
    with none. ``table`` is (vocabulary, k) or (vocabulary,)."""
    rows = texts.row_of_position()
    known = texts.ids > UNKNOWN_ID
    counts = np.bincount(rows[known], minlength=texts.reviews)
    if table.ndim == 1:
        sums = np.bincount(rows[known], weights=table[texts.ids[known]].astype(np.float64), minlength=texts.reviews)
        return sums / np.maximum(counts, 1)
    key = rows[known] * np.int64(1 << 31) + texts.ids[known]
    key, repeats = np.unique(key, return_counts=True)
    matrix = Sparse(key >> 31, key & ((1 << 31) - 1), repeats.astype(np.float32), (texts.reviews, len(table)))
    return matrix.times(table) / np.maximum(counts, 1)[:, None]


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Mean logistic loss + l2/2 |w|^2 (the bias not penalised), by Newton's method: (w, b)."""
    a = np.column_stack([x, np.ones(len(x))]).astype(np.float64)
    y = y.astype(np.float64)
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(a.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        gradient = a.T @ (p - y) / len(y) + penalty * theta
        hessian = (a * (p * (1 - p))[:, None]).T @ a / len(y) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])


@dataclass(frozen=True)
class ContextBranch:
    weights: np.ndarray  # c_g, one per vocabulary id (0 for padding, [UNK] and n-grams without a context vector)
    bias: float
    record: dict  # sizes and seconds, for the run's metrics

    def logits(self, texts: Positions) -> np.ndarray:
        return known_means(texts, self.weights) + self.bias


def fit(
    train: Positions,
    labels: np.ndarray,
    unlabelled: Positions,
    is_unigram: np.ndarray,
    *,
    dims: int = 200,
    min_reviews: int = 5,
    l2: float = 1e-3,
    seed: int = 0,
    is_bigram: np.ndarray | None = None,
    bigram_dims: int = 0,
) -> ContextBranch:
    """The context branch from the labelled training reviews (``train``, ``labels``) and the unlabelled ones. Only
    these texts enter the review vectors and the n-gram vectors: never pass a review that will be scored (a
    validation split), or its score will read the branch's own memory of it.

    With ``bigram_dims`` (and ``is_bigram``), a second view (issue 29, round 8): a ``bigram_dims``-dimension SVD of
    the reviews' bigrams gives each n-gram a second mean vector, and the head reads both (``dims + bigram_dims``
    features). Still one weight per n-gram: each view's table folds on its own part of the head, so the two tables
    are never held side by side in one array."""
    started = time.perf_counter()
    corpus = train.concat(unlabelled)
    views = [(is_unigram, dims)]
    if bigram_dims:
        if is_bigram is None:
            raise ValueError("bigram_dims needs is_bigram, the vocabulary's bigrams")
        views.append((is_bigram, bigram_dims))
    tables, svd_seconds = [], 0.0
    for terms, view_dims in views:
        svd_started = time.perf_counter()
        vectors = review_vectors(corpus, terms, view_dims, seed)
        svd_seconds += time.perf_counter() - svd_started
        tables.append(ngram_vectors(corpus, vectors, len(is_unigram), min_reviews))
    features = np.hstack([known_means(train, table) for table in tables])
    mu, sigma = features.mean(axis=0), features.std(axis=0) + 1e-12
    w, b = logistic_regression((features - mu) / sigma, labels, l2)
    folded = w / sigma
    weights = np.zeros(len(is_unigram), np.float64)
    start = 0
    for table in tables:  # the head's part for each view
        weights += table.astype(np.float64) @ folded[start : start + table.shape[1]]
        start += table.shape[1]
    return ContextBranch(
        weights=weights.astype(np.float32),
        bias=float(b - folded @ mu),
        record={
            "context_reviews": int(corpus.reviews),
            "context_ngrams": int(np.count_nonzero(np.any(tables[0] != 0, axis=1))),
            "context_svd_seconds": round(svd_seconds, 1),
            "context_seconds": round(time.perf_counter() - started, 1),
        },
    )


def nb_score_table(
    unlabelled: Positions, scores: np.ndarray, vocabulary_size: int, *, min_reviews: int = 5
) -> ContextBranch:
    """The ``context_nb_scores`` table (issue 29, round 5's ``plz``): each vocabulary id's mean of ``scores`` (the
    naive-Bayes branch's logits of the unlabelled reviews) over the unlabelled reviews that hold it; zero for an id
    held by fewer than ``min_reviews`` of them. A review's value is the table's mean over its known n-gram positions,
    as for the context vectors: one more per-n-gram table, which the calibration weighs as a branch of its own and
    folds into the context branch's weights. Only unlabelled reviews enter it: no labelled review's label, and never
    a review that will be scored."""
    started = time.perf_counter()
    table = ngram_vectors(unlabelled, np.asarray(scores, np.float32)[:, None], vocabulary_size, min_reviews)[:, 0]
    return ContextBranch(
        weights=table.astype(np.float32),
        bias=0.0,
        record={
            "nb_scores_ngrams": int(np.count_nonzero(table)),
            "nb_scores_seconds": round(time.perf_counter() - started, 1),
        },
    )
