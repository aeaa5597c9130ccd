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
        from model.layers import ForgetUnknown

        self.tf, keras = import_tensorflow(), import_keras()
        self.vectorizer, core, pooling = model_parts(scorer.keras_model)
        assert any(isinstance(layer, ForgetUnknown) for layer in core.layers), "the compiled path forgets [UNK]"
        self.embedding = next(layer for layer in core.layers if isinstance(layer, keras.layers.Embedding))
        self.head = core.layers[core.layers.index(pooling) + 1 :]
        self.vocabulary = np.asarray(self.vectorizer.get_vocabulary(), dtype=object)
        self.nodes, self.weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)

    def ids(self, text: str) -> np.ndarray:
        return self.vectorizer(self.tf.constant([text]))[0].numpy()

    def _f(self, pooled):
        for layer in self.head:
            pooled = layer(pooled, training=False)
        return self.tf.reshape(pooled, [-1])

    def _path_gradient(self, pooled: np.ndarray, pieces: int) -> np.ndarray:
        tf = self.tf
        starts = np.arange(pieces) / pieces
        alphas = (starts[:, None] + (self.nodes[None, :] + 1) / (2 * pieces)).reshape(-1)
        weights = np.tile(self.weights / (2 * pieces), pieces)
        path = tf.constant(alphas[:, None] * pooled[None, :], dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(path)
            values = self._f(path)
        return (tape.gradient(values, path).numpy().astype(np.float64) * weights[:, None]).sum(axis=0)

    def explain(self, text: str) -> Explanation:
        tf = self.tf
        ids = self.ids(text)
        known = ids >= 2  # neither padding (0) nor [UNK] (1)
        vectors = self.embedding(tf.constant(ids[None, :]))[0].numpy().astype(np.float64)
        n_known = int(known.sum())
        pooled = (vectors * known[:, None]).sum(axis=0) / max(n_known, 1)
        score = float(self._f(tf.constant(pooled[None, :], dtype=tf.float32))[0])
        base = float(self._f(tf.zeros((1, len(pooled))))[0])
        pieces = 1
        while True:
            gradient = self._path_gradient(pooled, pieces)
            if abs(pooled @ gradient - (score - base)) < 1e-5 or pieces >= 1024:
                break
            pieces *= 4
        per_ngram = np.where(known, (vectors @ gradient) / max(n_known, 1), 0.0)
        from model.cleaning import clean_text

        words = [w.decode("utf-8", "replace") for w in tf.strings.split(clean_text(tf.constant([text])))[0].numpy()]
        word_attr = np.zeros(len(words))
        ngrams = []
        position = 0
        for width in (1, 2, 3):
            for start in range(max(len(words) - width + 1, 0)):
                if position >= len(ids) or ids[position] == 0:
                    break
                if known[position]:
                    word_attr[start : start + width] += per_ngram[position] / width
                    ngrams.append((str(self.vocabulary[ids[position]]), float(per_ngram[position])))
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
    e = explainer.explain(text)  # a lone surrogate is punctuation, as when the compiled path scores it
    assert e.words == ["great", "film"] and e.total == pytest.approx(e.score - e.base, abs=TOLERANCE)
    assert [unreadable(t) for t in check_texts()] == [None] * len(check_texts())


def test_explaining_from_cached_tables_does_not_import_tensorflow(compiled_cache):
    code = (
        "import sys; from pathlib import Path; from model.scorer import load_scorer; "
        "from model.explain import Explainer; "
        f"s = load_scorer({str(DEFAULT_MODEL)!r}, scoring='compiled', cache_dir=Path({str(compiled_cache)!r})); "
        "e = Explainer(s).explain('A wonderful film, though the ending was awful.'); "
        "print(s.scoring, max(e.ngrams, key=lambda g: g[1])[0], 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-3:] == ["compiled", "wonderful", "False"], out.stderr[-2000:]
