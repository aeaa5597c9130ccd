"""The naive-Bayes branch (training/naive_bayes.py) and its two implementations at serving time (the Keras
``DistinctSum`` layer and the compiled kernel): each distinct known n-gram counts once."""

from __future__ import annotations

import numpy as np
import pytest

from training.naive_bayes import Features, fit, fit_calibration, log_count_ratios


def _features(rows: list[list[int]], columns: int = 8) -> Features:
    width = max(len(r) for r in rows)
    padded = np.array([r + [0] * (width - len(r)) for r in rows])
    return Features.of(lambda texts: padded[[int(t) for t in texts]], [str(i) for i in range(len(rows))], columns)


def test_features_count_each_known_ngram_once_and_skip_padding_and_unknown():
    features = _features([[2, 2, 3, 1, 0], [5, 1, 1], [1, 0]])
    pairs = sorted(zip(features.rows.tolist(), features.cols.tolist()))
    assert pairs == [(0, 2), (0, 3), (1, 5)]  # review 2 knows nothing
    weights = np.arange(8, dtype=np.float64)
    np.testing.assert_array_equal(features.times(weights), [5.0, 5.0, 0.0])
    np.testing.assert_array_equal(features.transposed_times(np.array([1.0, 10.0, 100.0]))[[2, 3, 5]], [1.0, 1.0, 10.0])


def test_the_sparse_products_equal_plain_sums_with_empty_reviews_and_ngrams():
    rng = np.random.default_rng(5)
    rows, cols = [], []
    for review in range(300):
        if review % 7:  # every seventh review knows nothing; the last ids are never used
            ids = np.unique(rng.integers(2, 990, rng.integers(1, 40)))
            rows += [review] * len(ids)
            cols += ids.tolist()
    features = Features(np.array(rows, np.int32), np.array(cols, np.int32), 300, 1000)
    u, g = rng.normal(size=1000), rng.normal(size=300)
    np.testing.assert_allclose(features.times(u), np.bincount(features.rows, u[features.cols], 300), atol=1e-12)
    np.testing.assert_allclose(
        features.transposed_times(g), np.bincount(features.cols, g[features.rows], 1000), atol=1e-12
    )


def test_the_sparse_products_are_numpys_reduceat_sums_to_the_last_bit():
    """The numba products (parallel, no gathered copy) sum in the order ``np.add.reduceat`` did before them (numpy's
    pairwise summation, which splits runs longer than 128): the same bits, so the fit is the same. Runs of every length
    from 0 to 700, the last review's run and the last n-gram's included; values over 12 orders of magnitude."""
    rng = np.random.default_rng(11)
    rows, cols = [], []
    for review in range(400):
        ids = np.unique(rng.integers(2, 5000, [0, 1, 7, 8, 9, 129, 300, 700][review % 8] if review % 3 else 257))
        rows += [review] * len(ids)
        cols += ids.tolist()
    cols[-1] = 4999  # the last review holds the last n-gram
    features = Features(np.array(rows, np.int32), np.array(cols, np.int32), 400, 5000)
    u = rng.normal(size=5000) * 10.0 ** rng.integers(-6, 6, 5000)
    g = rng.normal(size=400) * 10.0 ** rng.integers(-6, 6, 400)

    def reduceat(values, keys, index, count):  # the products as they were computed before
        order = np.argsort(keys, kind="stable")
        starts = np.searchsorted(keys[order], np.arange(count))
        sums = np.add.reduceat(np.append(values[index[order]], 0.0), starts)[:count]
        sums[np.bincount(keys, minlength=count) == 0] = 0.0
        return sums

    assert np.array_equal(features.times(u), reduceat(u, features.rows, features.cols, 400))
    assert np.array_equal(features.transposed_times(g), reduceat(g, features.cols, features.rows, 5000))
    assert not np.array_equal(features.times(u), np.bincount(features.rows, u[features.cols], 400))  # order matters


def test_log_count_ratios_favour_the_class_an_ngram_appears_in():
    # n-gram 2 only in positive reviews, 3 only in negative ones, 4 in both
    features = _features([[2, 4], [2, 4], [3, 4], [3, 4]])
    r = log_count_ratios(features, np.array([1, 1, 0, 0]))
    assert r[2] > 0 > r[3] and abs(r[4]) < 1e-12
    assert r[0] == r[1] == 0.0  # padding and [UNK] are never features


def test_fit_separates_separable_reviews_and_records_its_curve():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    rows = [[2 + int(y), int(rng.integers(4, 8))] for y in labels]  # n-gram 3 means positive, 2 negative, 4..7 noise
    features = _features(rows)
    branch = fit(features, labels, l2=1e-4, learning_rate=0.05, steps=100, validation=(features, labels))
    assert np.mean((branch.logits(features) > 0) == (labels == 1)) == 1.0
    assert branch.weights[3] > 0 > branch.weights[2]
    assert branch.history["step"][-1] == 100 and branch.history["val_accuracy"][-1] == 1.0
    assert branch.history["loss"][0] > branch.history["loss"][-1]


def test_calibration_recovers_a_known_platt_scaling():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * logits - 0.3)))).astype(int)  # over-confident by 2x
    a, c = fit_calibration(logits[:, None], labels)
    assert a == pytest.approx(0.5, abs=0.03) and c == pytest.approx(-0.3, abs=0.05)


def test_calibration_weighs_two_branches():
    rng = np.random.default_rng(2)
    informative, noise = rng.normal(0, 2, 5000), rng.normal(0, 2, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-informative))).astype(int)
    w_informative, w_noise, _ = fit_calibration(np.column_stack([informative, noise]), labels)
    assert w_informative == pytest.approx(1.0, abs=0.1) and abs(w_noise) < 0.1


def test_the_compiled_distinct_sum_counts_each_known_id_once():
    from model.compiled.kernels import _distinct_sum

    weights = np.array([100.0, 100.0, 1.0, 2.0, 4.0, 8.0], dtype=np.float32)
    assert _distinct_sum(np.array([2, 2, 3, 1, 1, 5]), weights) == 11.0
    assert _distinct_sum(np.array([1, 1]), weights) == 0.0


@pytest.mark.integration
def test_the_keras_layer_and_the_compiled_kernel_agree():
    from model.compiled.kernels import _distinct_sum
    from model.keras_model import import_keras

    import_keras()
    from model.layers import DistinctSum

    rng = np.random.default_rng(3)
    weights = rng.normal(0, 1, 50).astype(np.float32)
    ids = rng.integers(0, 50, (20, 30))
    layer = DistinctSum(50)
    layer.build(ids.shape)
    layer.set_weights([weights])
    keras_sums = np.asarray(layer(ids)).reshape(-1)
    compiled = np.array([_distinct_sum(row, weights) for row in ids])
    np.testing.assert_allclose(keras_sums, compiled, atol=1e-5)
