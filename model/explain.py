"""Why the model said so: Integrated Gradients for the pooled-embedding model, exact by construction.

The model scores ``f(p, s)``, where ``p`` is the mean of the embedding vectors ``e_i`` of the review's known n-grams
and ``s`` the naive-Bayes branch's logit, the sum of one weight ``v_f`` per distinct known n-gram (0 for a model
without that branch). Integrated Gradients from the baseline of no known n-gram along the straight path
``a * (p, s)`` gives the n-gram at position ``i``

    attribution_i = (e_i / n) . g + t_i * h,    (g, h) = integral over a in [0, 1] of grad f(a * p, a * s) da

with ``t_i`` its n-gram's weight ``v_f`` shared among the positions where it occurs (it counts once). Every n-gram
shares one path integral, and the attributions add up to ``p . g + s * h = f(p, s) - f(0, 0)`` (the completeness
property): the score minus the base value, the score of a review with no known n-gram. The naive-Bayes branch is
linear in its weights, so its part of an n-gram's attribution is its own weight times the shared slope ``h``. The
context branch (a weight ``c_f`` per n-gram averaged over the known positions) adds to the same logit: ``s`` holds
its logit too, and each known position's part is ``c_f / n`` times ``h``. The
integral is computed with composite Gauss-Legendre quadrature, refined until the attributions add up to
``f(p, s) - f(0, 0)`` within ``TOLERANCE`` (a saturated sigmoid needs more points). Unknown n-grams have no vector
and no weight, and get 0; but a model trained with ``mask_unknown = false`` pools each of them as the [UNK] vector
(``e_i`` is that row, counted in ``n``), and they get their share like the known ones. A word's attribution is its
unigram's plus an equal share of every bigram and trigram it is part of, so the words' attributions add up to the
same total.

This answers "how much did each n-gram move the score away from the base value", not "what would the score be
without this word" (occlusion re-averages over the remaining n-grams, which moves every other n-gram's weight).

Everything is computed from the compiled path's tables (``model.compiled``): its n-gram ids, embedding rows and dense
head, the head's gradient by backpropagation in numpy (float32, as TensorFlow computes it). No TensorFlow: a worker
that scores from cached tables explains without it. A scorer that runs on TensorFlow gets the tables built from its
Keras model, checked against it as the compiled scorer's are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.compiled.tables import FastModel
from model.scorer import Scorer
from schemas import lone_surrogate

QUADRATURE_POINTS = 16  # per piece of the path
TOLERANCE = 1e-5  # on |sum of attributions - (score - base)|; the head runs in float32
MAX_PIECES = 1024
UNKNOWN_ID = 1  # the vectorizer's [UNK]; 0 is padding, which the compiled path never returns


@dataclass(frozen=True)
class Explanation:
    score: float
    base: float  # f(0): the score of a review with no known n-gram
    words: list[str]  # the review's words as the model sees them (after cleaning)
    word_attributions: list[float]  # add up to score - base
    # the n-grams in the average with their attributions, in order of appearance: the known ones (and the unknown ones
    # too for a model that pools [UNK])
    ngrams: list[tuple[str, float]]

    @property
    def total(self) -> float:
        return float(sum(self.word_attributions))


def unreadable(text: str) -> str | None:
    """Why the stream would refuse ``text`` as not Unicode text (``schemas.decode_review`` says the same), or None.

    The explainer reads such a text anyway (a lone surrogate is punctuation to the compiled path); a caller that
    answers clients should refuse it first, as the stream does (the API applies ``schemas.text_problem``, which
    asks this and the stream's other rules of a text)."""
    problem = lone_surrogate(text)
    return problem.detail if problem else None


class Explainer:
    """Explains one text at a time with the scorer's compiled tables (built from its Keras model if it has none)."""

    def __init__(self, scorer: Scorer) -> None:
        self.fast: FastModel = scorer.fast if scorer.fast is not None else _checked_tables(scorer)
        self.nodes, self.weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
        zero = np.zeros((1, self.fast.embedding.shape[1]), dtype=np.float32)
        self.base = float(self.fast.head(zero, np.zeros(1, dtype=np.float32))[0])

    def _path_gradient(self, pooled: np.ndarray, nb_logit: float, pieces: int) -> tuple[np.ndarray, float]:
        """The integral of grad f(a * pooled, a * nb_logit) over a in [0, 1], by Gauss-Legendre on ``pieces`` equal
        pieces of each stretch between the first layer's kinks (where one of its relu units turns on or off along
        the path: the gradient jumps there, and a quadrature across a jump converges slowly)."""
        ends = np.concatenate([[0.0], self._kinks(pooled), [1.0]])
        starts = np.concatenate(
            [ends[i] + (ends[i + 1] - ends[i]) * np.arange(pieces) / pieces for i in range(len(ends) - 1)]
        )
        widths = np.repeat(np.diff(ends) / pieces, pieces)
        alphas = (starts[:, None] + (self.nodes[None, :] + 1) / 2 * widths[:, None]).reshape(-1)
        weights = (self.weights[None, :] / 2 * widths[:, None]).reshape(-1)
        path = (alphas[:, None] * pooled[None, :]).astype(np.float32)
        grad, nb_grad = self.fast.head_gradient(path, (alphas * nb_logit).astype(np.float32))
        return (grad.astype(np.float64) * weights[:, None]).sum(axis=0), float(nb_grad.astype(np.float64) @ weights)

    def _kinks(self, pooled: np.ndarray) -> np.ndarray:
        """Where on the path the first dense layer's relu units change sides: a * (pooled . W) + b = 0."""
        kernel, bias, activation = self.fast.dense[0]
        if activation != "relu":
            return np.empty(0)
        slope = pooled @ kernel.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = -bias.astype(np.float64) / slope
        return np.unique(alphas[np.isfinite(alphas) & (alphas > 0) & (alphas < 1)])

    def explain(self, text: str) -> Explanation:
        words, ids = self.fast.vectorize(text)
        # the positions the average runs over: the known n-grams, and the unknown ones too (the [UNK] row) for a
        # model that pools them (mask_unknown = false)
        pooled_at = np.ones(len(ids), dtype=bool) if self.fast.pool_unknown else ids != UNKNOWN_ID
        vectors = self.fast.vectors(ids).astype(np.float64)
        n_pooled = int(pooled_at.sum())
        pooled = (vectors * pooled_at[:, None]).sum(axis=0) / max(n_pooled, 1)
        # the naive-Bayes and context branches both add to the logit: one slope serves both (context_terms: each
        # known position's context weight over the known count)
        nb_terms = self.fast.naive_bayes_terms(ids) + self.fast.context_terms(ids)
        nb_logit = float(nb_terms.sum())
        score = float(self.fast.head(pooled[None, :].astype(np.float32), np.float32([nb_logit]))[0])
        pieces = 1
        while True:
            gradient, nb_slope = self._path_gradient(pooled, nb_logit, pieces)
            if abs(pooled @ gradient + nb_logit * nb_slope - (score - self.base)) < TOLERANCE or pieces >= MAX_PIECES:
                break
            pieces *= 4
        per_ngram = np.where(pooled_at, (vectors @ gradient) / max(n_pooled, 1) + nb_terms * nb_slope, 0.0)

        word_attr = np.zeros(len(words))
        ngrams = []
        position = 0
        for width in range(1, self.fast.ngrams + 1):  # all unigrams, then all bigrams, then all trigrams
            for start in range(max(len(words) - width + 1, 0)):
                if position >= len(ids):
                    break
                if pooled_at[position]:
                    word_attr[start : start + width] += per_ngram[position] / width
                    ngrams.append((" ".join(words[start : start + width]), float(per_ngram[position])))
                position += 1
        return Explanation(score, self.base, words, [float(a) for a in word_attr], ngrams)


def _checked_tables(scorer: Scorer) -> FastModel:
    """The compiled tables of a scorer that runs on TensorFlow, built from its Keras model and checked against it."""
    from model.compiled.build import build_checked

    fast = build_checked(
        scorer.keras_model, scorer.version, None, lambda texts: scorer.inspect_tensorflow(texts).scores
    )
    if fast is None:
        raise RuntimeError("explanations need the compiled path's tables, and they could not be built: see the warning")
    return fast
