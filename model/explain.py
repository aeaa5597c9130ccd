"""Why the model said so: Integrated Gradients for the pooled-embedding model, exact by construction.

The model scores ``f(p)``, where ``p`` is the mean of the embedding vectors ``e_i`` of the review's known n-grams.
Integrated Gradients from the all-zero embedding baseline along the straight path ``a * p`` gives n-gram ``i``

    attribution_i = (e_i / n) . g,    g = integral over a in [0, 1] of grad f(a * p) da

so every n-gram shares one path integral ``g``, and the attributions add up to ``p . g = f(p) - f(0)`` (the
completeness property): the score minus the base value, the score of a review with no known n-gram. ``g`` is
computed with composite Gauss-Legendre quadrature, refined until the attributions add up to ``f(p) - f(0)`` within
``TOLERANCE`` (a saturated sigmoid needs more points). Unknown n-grams
have no vector and get 0. A word's attribution is its unigram's plus an equal share of every bigram and trigram
it is part of, so the words' attributions add up to the same total.

This answers "how much did each n-gram move the score away from the base value", not "what would the score be
without this word" (occlusion re-averages over the remaining n-grams, which moves every other n-gram's weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from model.cleaning import clean_text
from model.keras_model import model_parts
from model.layers import PADDING_ID, UNKNOWN_ID, ForgetUnknown
from model.scorer import Scorer

QUADRATURE_POINTS = 16  # per piece of the path
TOLERANCE = 1e-5  # on |sum of attributions - (score - base)|; the head runs in float32
MAX_PIECES = 1024


@dataclass(frozen=True)
class Explanation:
    score: float
    base: float  # f(0): the score of a review with no known n-gram
    words: list[str]  # the review's words as the model sees them (after cleaning)
    word_attributions: list[float]  # add up to score - base
    ngrams: list[tuple[str, float]]  # the known n-grams with their attributions, in order of appearance

    @property
    def total(self) -> float:
        return float(sum(self.word_attributions))


class Explainer:
    def __init__(self, scorer: Scorer) -> None:
        self.vectorizer, core, pooling = model_parts(scorer.keras_model)
        self.masks_unknown = any(isinstance(layer, ForgetUnknown) for layer in core.layers)
        self.embedding = next(layer for layer in core.layers if isinstance(layer, keras.layers.Embedding))
        self.head: list[keras.layers.Layer] = core.layers[core.layers.index(pooling) + 1 :]
        self.vocabulary = np.asarray(self.vectorizer.get_vocabulary(), dtype=object)
        self.nodes, self.weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)

    def _path_gradient(self, pooled: np.ndarray, pieces: int) -> np.ndarray:
        """The integral of grad f(a * pooled) over a in [0, 1], by Gauss-Legendre on ``pieces`` equal pieces."""
        starts = np.arange(pieces) / pieces
        alphas = (starts[:, None] + (self.nodes[None, :] + 1) / (2 * pieces)).reshape(-1)
        weights = np.tile(self.weights / (2 * pieces), pieces)
        path = tf.constant(alphas[:, None] * pooled[None, :], dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(path)
            values = self._f(path)
        return (tape.gradient(values, path).numpy().astype(np.float64) * weights[:, None]).sum(axis=0)

    def _f(self, pooled: tf.Tensor) -> tf.Tensor:
        x = pooled
        for layer in self.head:
            x = layer(x, training=False)
        return tf.reshape(x, [-1])

    def explain(self, text: str) -> Explanation:
        ids = self.vectorizer(tf.constant([text]))[0].numpy()
        known = (ids != PADDING_ID) & ((ids != UNKNOWN_ID) if self.masks_unknown else True)
        vectors = self.embedding(tf.constant(ids[None, :]))[0].numpy().astype(np.float64)
        n_known = int(known.sum())
        pooled = (vectors * known[:, None]).sum(axis=0) / max(n_known, 1)
        score = float(self._f(tf.constant(pooled[None, :], dtype=tf.float32))[0])
        base = float(self._f(tf.zeros((1, len(pooled))))[0])
        pieces = 1
        while True:
            gradient = self._path_gradient(pooled, pieces)
            if abs(pooled @ gradient - (score - base)) < TOLERANCE or pieces >= MAX_PIECES:
                break
            pieces *= 4
        per_ngram = np.where(known, (vectors @ gradient) / max(n_known, 1), 0.0)

        words = [w.decode("utf-8", "replace") for w in tf.strings.split(clean_text(tf.constant([text])))[0].numpy()]
        word_attr = np.zeros(len(words))
        ngrams = []
        position = 0
        for width in (1, 2, 3):  # TextVectorization lists all unigrams, then all bigrams, then all trigrams
            for start in range(max(len(words) - width + 1, 0)):
                if position >= len(ids) or ids[position] == PADDING_ID:
                    break
                if known[position]:
                    word_attr[start : start + width] += per_ngram[position] / width
                    ngrams.append((str(self.vocabulary[ids[position]]), float(per_ngram[position])))
                position += 1
        return Explanation(score, base, words, [float(a) for a in word_attr], ngrams)
