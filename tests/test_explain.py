"""Explanations from the compiled tables (model/explain.py) are the TensorFlow model's Integrated Gradients: the same
n-gram ids as its vectorizer, the same attributions within 1e-5 as TensorFlow's autodiff gives on the same path, on
the sample reviews, hostile texts and real reviews; and explaining imports no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from core.settings import DEFAULT_MODEL
from model.explain import QUADRATURE_POINTS, Explainer, Explanation, unreadable
from model.samples import check_texts

TOLERANCE = 1e-5


class TensorFlowIntegratedGradients:
    """The reference: the same definition and quadrature, every number from the Keras model and TensorFlow's autodiff
    (what model/explain.py computed before the compiled tables did)."""

    def __init__(self, scorer) -> None:
        from model.keras_model import import_keras, import_tensorflow, model_parts
        from model.layers import DistinctSum, ForgetUnknown, KnownAverage

        self.tf, keras = import_tensorflow(), import_keras()
        self.vectorizer, core, pooling = model_parts(scorer.keras_model)
        # without ForgetUnknown (mask_unknown = false) the average pools every unknown n-gram as the [UNK] row
        self.pools_unknown = not any(isinstance(layer, ForgetUnknown) for layer in core.layers)
        self.embedding = next(layer for layer in core.layers if isinstance(layer, keras.layers.Embedding))
        after = core.layers[core.layers.index(pooling) + 1 :]
        self.head = [layer for layer in after if isinstance(layer, keras.layers.Dense | keras.layers.Dropout)]
        self.output = [layer for layer in after if isinstance(layer, keras.layers.Activation)]
        self.naive_bayes = next((layer for layer in core.layers if isinstance(layer, DistinctSum)), None)
        self.context = next((layer for layer in core.layers if isinstance(layer, KnownAverage)), None)
        self.cleaning = self.vectorizer.get_config()["standardize"]
        if self.cleaning == "lower_and_strip_punctuation":  # Keras' own, by name
            from model.cleaning import keras_lower_and_strip_punctuation

            self.cleaning = keras_lower_and_strip_punctuation
        self.vocabulary = np.asarray(self.vectorizer.get_vocabulary(), dtype=object)
        self.nodes, self.weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)

    def ids(self, text: str) -> np.ndarray:
        return self.vectorizer(self.tf.constant([text]))[0].numpy()

    def _f(self, pooled, nb_logit):
        for layer in self.head:
            pooled = layer(pooled, training=False)
        if self.output:
            pooled = self.output[0](pooled + self.tf.reshape(nb_logit, [-1, 1]))
        return self.tf.reshape(pooled, [-1])

    def _kinks(self, pooled: np.ndarray) -> np.ndarray:
        """Where the first dense layer's relu units turn on or off along the path (the quadrature's breakpoints)."""
        kernel, bias = (
            w.numpy().astype(np.float64) for w in next(h for h in self.head if type(h).__name__ == "Dense").weights
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = -bias / (pooled @ kernel)
        return np.unique(alphas[np.isfinite(alphas) & (alphas > 0) & (alphas < 1)])

    def _path_gradient(self, pooled: np.ndarray, nb_logit: float, pieces: int) -> tuple[np.ndarray, float]:
        tf = self.tf
        ends = np.concatenate([[0.0], self._kinks(pooled), [1.0]])
        alphas, weights = [], []
        for a, b in zip(ends[:-1], ends[1:]):
            for k in range(pieces):
                lo, width = a + (b - a) * k / pieces, (b - a) / pieces
                alphas.append(lo + (self.nodes + 1) / 2 * width)
                weights.append(self.weights / 2 * width)
        alphas, weights = np.concatenate(alphas), np.concatenate(weights)
        path = tf.constant(alphas[:, None] * pooled[None, :], dtype=tf.float32)
        nb_path = tf.constant(alphas * nb_logit, dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch([path, nb_path])
            values = self._f(path, nb_path)
        grad, nb_grad = tape.gradient(values, [path, nb_path])
        nb_grad = np.zeros(len(alphas)) if nb_grad is None else nb_grad.numpy().astype(np.float64)
        return (grad.numpy().astype(np.float64) * weights[:, None]).sum(axis=0), float(nb_grad @ weights)

    def explain(self, text: str) -> Explanation:
        tf = self.tf
        ids = self.ids(text)
        known = ids >= 2  # neither padding (0) nor [UNK] (1)
        pooled_at = ids >= 1 if self.pools_unknown else known
        vectors = self.embedding(tf.constant(ids[None, :]))[0].numpy().astype(np.float64)
        n_pooled = int(pooled_at.sum())
        pooled = (vectors * pooled_at[:, None]).sum(axis=0) / max(n_pooled, 1)
        nb_terms = np.zeros(len(ids))
        if self.naive_bayes is not None:  # each distinct n-gram's weight, shared among its positions
            weight = self.naive_bayes.weight.numpy().astype(np.float64)
            counts = dict(zip(*np.unique(ids[known], return_counts=True)))
            nb_terms[known] = [weight[i] / counts[i] for i in ids[known]]
            nb_logit = float(self.naive_bayes(tf.constant(ids[None, :]))[0, 0])
            assert abs(nb_logit - nb_terms.sum()) < 1e-5
        if self.context is not None:  # the context branch: each known position's weight over the known count
            weight = self.context.weight.numpy().astype(np.float64)
            context_terms = np.where(known, weight[ids] / max(int(known.sum()), 1), 0.0)
            context_logit = float(self.context(tf.constant(ids[None, :]))[0, 0])
            assert abs(context_logit - context_terms.sum()) < 1e-5
            nb_terms = nb_terms + context_terms  # both add to the logit: one straight path serves both
        nb_logit = float(nb_terms.sum())
        score = float(self._f(tf.constant(pooled[None, :], dtype=tf.float32), tf.constant([nb_logit]))[0])
        base = float(self._f(tf.zeros((1, len(pooled))), tf.zeros(1))[0])
        pieces = 1
        while True:
            gradient, nb_slope = self._path_gradient(pooled, nb_logit, pieces)
            if abs(pooled @ gradient + nb_logit * nb_slope - (score - base)) < 1e-5 or pieces >= 1024:
                break
            pieces *= 4
        per_ngram = np.where(pooled_at, (vectors @ gradient) / max(n_pooled, 1) + nb_terms * nb_slope, 0.0)
        cleaned = self.cleaning(tf.constant([text]))
        words = [w.decode("utf-8", "replace") for w in tf.strings.split(cleaned)[0].numpy()]
        word_attr = np.zeros(len(words))
        ngrams = []
        position = 0
        for width in (1, 2, 3):
            for start in range(max(len(words) - width + 1, 0)):
                if position >= len(ids) or ids[position] == 0:
                    break
                if pooled_at[position]:
                    word_attr[start : start + width] += per_ngram[position] / width
                    name = self.vocabulary[ids[position]] if known[position] else " ".join(words[start : start + width])
                    ngrams.append((str(name), float(per_ngram[position])))
                position += 1
        return Explanation(score, base, words, [float(a) for a in word_attr], ngrams)


@pytest.fixture(scope="module")
def explainer(fast_scorer) -> Explainer:
    return Explainer(fast_scorer)


@pytest.fixture(scope="module")
def reference(scorer) -> TensorFlowIntegratedGradients:
    return TensorFlowIntegratedGradients(scorer)


@pytest.fixture(scope="module")
def texts(imdb_test_rows) -> list[str]:
    return check_texts() + [row.text for row in imdb_test_rows[::83]]  # 302 reviews from all over the split


def test_the_ngram_ids_are_the_vectorizers(explainer, reference, texts):
    for text in texts:
        words, ids = explainer.fast.vectorize(text)
        theirs = reference.ids(text)
        np.testing.assert_array_equal(ids, theirs[: len(ids)], err_msg=text[:80])
        assert not theirs[len(ids) :].any(), f"the vectorizer has more n-grams for {text[:80]!r}"


def test_attributions_are_tensorflows_integrated_gradients(explainer, reference, texts):
    worst = 0.0
    for text in texts:
        ours, theirs = explainer.explain(text), reference.explain(text)
        assert ours.words == theirs.words, text[:80]
        assert [g for g, _ in ours.ngrams] == [g for g, _ in theirs.ngrams], text[:80]
        assert abs(ours.score - theirs.score) <= TOLERANCE and abs(ours.base - theirs.base) <= TOLERANCE
        assert abs(ours.total - (ours.score - ours.base)) <= TOLERANCE, f"completeness on {text[:80]!r}"
        differences = [abs(a - b) for (_, a), (_, b) in zip(ours.ngrams, theirs.ngrams)]
        differences += [abs(a - b) for a, b in zip(ours.word_attributions, theirs.word_attributions)]
        worst = max(worst, *differences, 0.0)
    assert worst <= TOLERANCE, f"largest attribution difference {worst:.3g}"


def test_the_score_is_the_compiled_scorers(explainer, fast_scorer, texts):
    ours = [explainer.explain(t).score for t in texts[:40]]
    np.testing.assert_allclose(ours, fast_scorer.score(texts[:40]), atol=1e-6, rtol=0)


def test_a_text_the_stream_refuses_is_explained_but_named(explainer):
    text = "great \ud800 film"
    assert unreadable(text) == "holds a lone surrogate (\\ud800 at character 6)"
    e = explainer.explain(text)  # a lone surrogate is dropped, as when the compiled path scores it
    assert e.words == ["great", "film"] and e.total == pytest.approx(e.score - e.base, abs=TOLERANCE)
    assert [unreadable(t) for t in check_texts()] == [None] * len(check_texts())


def test_explaining_from_cached_tables_does_not_import_tensorflow(compiled_cache):
    code = (
        "import sys; from pathlib import Path; from model.scorer import load_scorer; "
        "from model.explain import Explainer; "
        f"s = load_scorer({str(DEFAULT_MODEL)!r}, scoring='compiled', cache_dir=Path({str(compiled_cache)!r})); "
        "e = Explainer(s).explain('A wonderful film, though the ending was awful.'); "
        "print(s.scoring, max(e.ngrams, key=lambda g: g[1])[0], 'tensorflow' in sys.modules, sep='|')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    scoring, top, tensorflow = out.stdout.strip().splitlines()[-1].split("|")
    # the most positive n-gram holds "wonderful" (a unigram, or a bigram or trigram with it)
    assert (scoring, "wonderful" in top.split(), tensorflow) == ("compiled", True, "False"), out.stderr[-2000:]


@pytest.mark.integration  # builds a model in TensorFlow
@pytest.mark.parametrize("cleaning", ["full", "basic"])
def test_a_model_that_pools_unknown_ngrams_is_explained_as_tensorflow_does(imdb_test_rows, cleaning):
    """``mask_unknown = false`` (the default): every unknown n-gram is the [UNK] vector in the average, and gets its
    share of the attributions; they still add up, and equal TensorFlow's."""
    from model.compiled.build import from_keras
    from model.samples import sample_texts
    from model.scorer import Scorer
    from training.space import random_model, small_config

    cfg = small_config(cleaning=cleaning, mask_unknown=False, ngrams=2, sequence_length=200, nb_branch=True)
    model = random_model(cfg, sample_texts() + [row.text for row in imdb_test_rows[:200]])
    scorer = Scorer(model, "pools-unknown", fast=from_keras(model))
    explainer, reference = Explainer(scorer), TensorFlowIntegratedGradients(scorer)
    assert explainer.fast.pool_unknown and reference.pools_unknown
    worst, unknown_shares = 0.0, []
    for text in check_texts()[::2] + [row.text for row in imdb_test_rows[-40:]]:
        ours, theirs = explainer.explain(text), reference.explain(text)
        assert ours.words == theirs.words and [g for g, _ in ours.ngrams] == [g for g, _ in theirs.ngrams]
        assert abs(ours.score - theirs.score) <= TOLERANCE
        assert abs(ours.total - (ours.score - ours.base)) <= TOLERANCE, f"completeness on {text[:80]!r}"
        differences = [abs(a - b) for (_, a), (_, b) in zip(ours.ngrams, theirs.ngrams)]
        worst = max(worst, *differences, 0.0)
        _, ids = explainer.fast.vectorize(text)
        unknown_shares.append(float(np.mean(ids == 1)) if len(ids) else 0.0)
    assert worst <= TOLERANCE, f"largest attribution difference {worst:.3g}"
    assert max(unknown_shares) == 1.0 and min(unknown_shares) == 0.0  # texts all unknown, and texts all known
