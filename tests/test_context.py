"""The context branch (training/context.py, issue 29): n-gram values learned from unlabelled reviews, never from the
reviews being scored, served as one weight per n-gram averaged over the known n-grams (Keras ``KnownAverage`` and
the compiled kernel alike) and attributed exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import context as C


def _positions(reviews: list[list[int]]) -> C.Positions:
    width = max(len(r) for r in reviews)
    padded = np.array([r + [0] * (width - len(r)) for r in reviews])
    return C.Positions.of(lambda texts: padded[[int(t) for t in texts]], [str(i) for i in range(len(reviews))])


def test_positions_keep_every_position_but_padding_in_order():
    p = _positions([[2, 2, 3, 1, 0], [5, 1, 1], [0, 0]])
    assert [p.ids[a:b].tolist() for a, b in zip(p.offsets[:-1], p.offsets[1:])] == [[2, 2, 3, 1], [5, 1, 1], []]
    taken = p.take(np.array([1, 0]))
    assert taken.ids.tolist() == [5, 1, 1, 2, 2, 3, 1] and taken.offsets.tolist() == [0, 3, 7]
    rows, ids = p.distinct()
    assert list(zip(rows.tolist(), ids.tolist())) == [(0, 2), (0, 3), (1, 5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=25), st.integers(0, 2**32 - 1))
def test_distinct_pairs_and_the_column_order_are_the_global_sorts(reviews, seed):
    """Each review's distinct known ids, sorted review by review in parallel, are the (row, id) pairs a sort of all
    the pairs gives, in its order; the counting order is ``argsort(kind="stable")``."""
    lengths = np.array([len(r) for r in reviews])
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    p = C.Positions(np.array([i for r in reviews for i in r], np.int32), offsets)
    rows = p.row_of_position()
    known = p.ids > 1
    key = np.unique(rows[known] * np.int64(1 << 31) + p.ids[known])
    got_rows, got_ids = p.distinct()
    assert got_rows.tolist() == (key >> 31).tolist() and got_ids.tolist() == (key & ((1 << 31) - 1)).tolist()
    keep = np.random.default_rng(seed).random(41) > 0.5
    kept_rows, kept_ids = p.distinct(keep)
    assert (
        kept_ids.tolist() == got_ids[keep[got_ids]].tolist() and kept_rows.tolist() == got_rows[keep[got_ids]].tolist()
    )
    assert C._stable_order(p.ids.astype(np.int64), 41).tolist() == np.argsort(p.ids, kind="stable").tolist()


def test_known_means_average_over_known_positions_with_repeats_and_give_zero_without_any():
    p = _positions([[2, 2, 3, 1, 0], [5, 1, 1], [1], [0]])
    table = np.arange(8, dtype=np.float32) * 10
    np.testing.assert_allclose(C.known_means(p, table), [(20 + 20 + 30) / 3, 50, 0, 0])
    wide = np.column_stack([table, -table])
    np.testing.assert_allclose(C.known_means(p, wide)[0], [70 / 3, -70 / 3], rtol=1e-6)


def test_the_randomized_svd_spans_the_top_singular_vectors():
    rng = np.random.default_rng(0)
    reviews = [rng.integers(2, 40, rng.integers(3, 25)).tolist() for _ in range(200)]
    p = _positions(reviews)
    is_unigram = np.ones(40, bool)
    is_unigram[:2] = False
    vectors = C.review_vectors(p, is_unigram, dims=4, seed=0, power=4)
    rows, cols = p.distinct(is_unigram)
    x = np.zeros((200, 40))
    x[rows, cols] = 1
    x = x[:, x.sum(axis=0) > 0]
    x *= np.log(200 / x.sum(axis=0)) + 1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), s[:4], rtol=1e-3)
    cosines = np.abs(np.sum(u[:, :4] * vectors / np.linalg.norm(vectors, axis=0), axis=0))
    assert cosines.min() > 0.999


def test_an_ngram_never_labelled_learns_its_sentiment_from_the_unlabelled_reviews_it_shares():
    """'zorb' and 'blick' (ids 6, 7) occur in no labelled review; the unlabelled ones put them beside 'good' (2) and
    'bad' (3). Their context weights take those sides (the weights share an offset, which the bias takes back: only
    their differences matter); an n-gram in fewer than min_reviews reviews gets none."""
    rng = np.random.default_rng(1)
    good, bad, zorb, blick, rare = 2, 3, 6, 7, 8
    filler = lambda: rng.integers(10, 30, 6).tolist()  # noqa: E731
    labelled = [[good, *filler()] for _ in range(40)] + [[bad, *filler()] for _ in range(40)]
    labels = np.array([1.0] * 40 + [0.0] * 40)
    unlabelled = [[good, zorb, *filler()] for _ in range(60)] + [[bad, blick, *filler()] for _ in range(60)]
    unlabelled += [[rare, *filler()] for _ in range(4)]
    branch = C.fit(
        _positions(labelled), labels, _positions(unlabelled), np.r_[False, False, np.ones(28, bool)],
        dims=4, min_reviews=5, l2=0.1,
    )  # fmt: skip
    assert branch.weights[zorb] - branch.weights[blick] > 0.5 * (branch.weights[good] - branch.weights[bad]) > 0
    assert branch.weights[rare] == 0 and branch.weights[0] == branch.weights[1] == 0
    scored = branch.logits(_positions([[zorb, zorb, 12], [blick, 12]]))
    assert scored[0] > scored[1]


@pytest.mark.parametrize("bigram_dims", [0, 3])
def test_the_folded_weights_score_as_the_linear_head_on_the_standardised_mean_vector(monkeypatch, bigram_dims):
    """One weight per n-gram is the same function as the head on the review's mean n-gram vector; with the second
    view, on the two views' mean vectors side by side (ids 20-29 play the bigrams)."""
    captured = {}
    real = C.logistic_regression

    def spy(x, y, l2):
        w, b = real(x, y, l2)
        captured.update(w=w, b=b)
        return w, b

    monkeypatch.setattr(C, "logistic_regression", spy)
    rng = np.random.default_rng(2)
    reviews = [rng.integers(1, 30, rng.integers(1, 20)).tolist() for _ in range(120)]
    labels = (rng.random(120) > 0.5).astype(float)
    train, unlabelled = _positions(reviews), _positions(reviews[:60])
    is_unigram = np.r_[False, False, np.ones(18, bool), np.zeros(10, bool)]
    is_bigram = np.r_[np.zeros(20, bool), np.ones(10, bool)]
    branch = C.fit(
        train, labels, unlabelled, is_unigram, dims=3, min_reviews=2, l2=1e-2, is_bigram=is_bigram,
        bigram_dims=bigram_dims,
    )  # fmt: skip
    corpus = train.concat(unlabelled)
    views = [(is_unigram, 3)] + ([(is_bigram, bigram_dims)] if bigram_dims else [])
    features = np.hstack(
        [C.known_means(train, C.ngram_vectors(corpus, C.review_vectors(corpus, m, d, 0), 30, 2)) for m, d in views]
    )
    assert features.shape[1] == 3 + bigram_dims == len(captured["w"])
    mu, sigma = features.mean(axis=0), features.std(axis=0) + 1e-12
    unfolded = ((features - mu) / sigma) @ captured["w"] + captured["b"]
    np.testing.assert_allclose(branch.logits(train), unfolded, atol=1e-5)


def test_the_second_view_reads_the_bigrams_and_the_unigram_view_does_not():
    """The unigram SVD never sees a bigram column; the second view reads only them: two corpora that differ only in
    their bigrams give the same unigram vectors and different second-view vectors."""
    rng = np.random.default_rng(3)
    words = [rng.integers(2, 20, 8).tolist() for _ in range(80)]
    a = _positions([w + [20 + i % 5] for i, w in enumerate(words)])
    b = _positions([w + [25 + i % 3] for i, w in enumerate(words)])
    is_unigram = np.r_[False, False, np.ones(18, bool), np.zeros(10, bool)]
    is_bigram = np.r_[np.zeros(20, bool), np.ones(10, bool)]
    np.testing.assert_array_equal(C.review_vectors(a, is_unigram, 3, 0), C.review_vectors(b, is_unigram, 3, 0))
    assert not np.allclose(np.abs(C.review_vectors(a, is_bigram, 3, 0)), np.abs(C.review_vectors(b, is_bigram, 3, 0)))


def test_the_nb_scores_table_gives_an_ngram_only_unlabelled_reviews_hold_their_naive_bayes_side():
    """'zorb' (6) and 'blick' (7) occur only in unlabelled reviews, which the naive-Bayes branch scores positive and
    negative; the table gives each the mean logit of the reviews holding it, and none to an n-gram held by fewer
    than min_reviews of them (or to padding and [UNK])."""
    rng = np.random.default_rng(5)
    zorb, blick, rare = 6, 7, 8
    filler = lambda: rng.integers(10, 30, 5).tolist()  # noqa: E731
    unlabelled = [[zorb, *filler()] for _ in range(30)] + [[blick, *filler()] for _ in range(30)]
    unlabelled += [[rare, zorb, *filler()] for _ in range(3)]
    scores = np.r_[rng.normal(2.0, 0.5, 30), rng.normal(-2.0, 0.5, 30), [-1.0, -1.0, -1.0]]
    table = C.nb_score_table(_positions(unlabelled), scores, 30, min_reviews=5)
    assert table.weights[zorb] == pytest.approx(np.r_[scores[:30], scores[60:]].mean(), rel=1e-5)
    assert table.weights[zorb] > 1 and table.weights[blick] < -1
    assert table.weights[rare] == 0 and table.weights[0] == table.weights[1] == 0
    scored = table.logits(_positions([[zorb, 12, 1], [blick, blick, 12]]))
    assert scored[0] > 0 > scored[1]
    np.testing.assert_allclose(scored, [(table.weights[zorb] + table.weights[12]) / 2,
                                        (2 * table.weights[blick] + table.weights[12]) / 3], rtol=1e-6)  # fmt: skip


def test_self_training_teaches_the_naive_bayes_branch_ngrams_only_unlabelled_reviews_hold():
    """'zorb' (6) occurs in no labelled review, so the first fit gives it no weight; the unlabelled reviews hold it
    beside 'good' (2), the branch labels them positive, and after self-training 'zorb' weighs positive (and 'blick',
    beside 'bad', negative). Only the share asked for joins, the surest first."""
    from training.naive_bayes import Features, most_confident, self_train
    from training.naive_bayes import fit as nb_fit

    def features(reviews):
        p = _positions(reviews)
        rows, cols = p.distinct()
        return Features(rows.astype(np.int32), cols.astype(np.int32), p.reviews, 30)

    rng = np.random.default_rng(6)
    good, bad, zorb, blick = 2, 3, 6, 7
    filler = lambda: rng.integers(10, 30, 4).tolist()  # noqa: E731
    labelled = features([[good, *filler()] for _ in range(40)] + [[bad, *filler()] for _ in range(40)])
    labels = np.r_[np.ones(40), np.zeros(40)]
    unlabelled_reviews = [[good, zorb, *filler()] for _ in range(20)] + [[bad, blick, *filler()] for _ in range(20)]
    unlabelled_reviews += [[*filler()] for _ in range(40)]  # nothing to be sure of
    unlabelled = features(unlabelled_reviews)
    settings = dict(l2=1e-3, learning_rate=0.05, steps=100)
    first = nb_fit(labelled, labels, **settings)
    assert first.weights[zorb] == first.weights[blick] == 0
    logits = first.logits(unlabelled)
    taught, kept = self_train(labelled, labels, unlabelled, logits, 0.5, **settings)
    assert len(kept) == 40 and set(kept.tolist()) == set(range(40))  # the ones holding 'good' or 'bad'
    assert taught.weights[zorb] > 0.1 and taught.weights[blick] < -0.1
    assert most_confident(np.array([0.1, -3.0, 2.0, 0.5]), 0.5).tolist() == [1, 2]
    assert len(self_train(labelled, labels, unlabelled, logits, 0.0, **settings)[1]) == 0


# --- in the pipeline: a tiny run with the context branch on ---------------------------------------------------------

from tests.test_training import TINY, tiny_data  # noqa: E402,F401  (the tiny data folder fixture)


@pytest.fixture(scope="module")
def tiny_context_run(tiny_data, tmp_path_factory):  # noqa: F811
    """The default design in small with the context branch, the nb_scores table and naive-Bayes self-training,
    recording what texts each context fit, each naive-Bayes fit and each nb_scores table was given."""
    from training import naive_bayes, pipeline

    fits, nb_fits, tables = [], [], []
    real, real_nb, real_table = C.fit, naive_bayes.fit, C.nb_score_table

    def recording(train, labels, unlabelled, is_unigram, **kwargs):
        fits.append({"train": train, "unlabelled": unlabelled})
        return real(train, labels, unlabelled, is_unigram, **kwargs)

    def recording_nb(features, labels, **kwargs):
        nb_fits.append({"features": features, "labels": labels})
        return real_nb(features, labels, **kwargs)

    def recording_table(unlabelled, scores, vocabulary_size, **kwargs):
        tables.append({"unlabelled": unlabelled, "scores": scores})
        return real_table(unlabelled, scores, vocabulary_size, **kwargs)

    cfg = TINY.with_overrides(
        name="tiny-context", cleaning="tokens", ngrams=3, sequence_length=3000, max_epochs=2, patience=1,
        mask_unknown=True, quantize="int8", refit_on_all=True, nb_branch=True, calibrate=True, nb_steps=50,
        context_branch=True, context_dims=8, context_min_reviews=3, nb_self_training=0.5, context_nb_scores=True,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C, "fit", recording)
        patch.setattr(naive_bayes, "fit", recording_nb)
        patch.setattr(pipeline, "fit_naive_bayes", recording_nb)
        patch.setattr(C, "nb_score_table", recording_table)
        folder = pipeline.run(cfg, data=tiny_data, out_dir=tmp_path_factory.mktemp("runs"))
    return folder, (fits, nb_fits, tables), cfg


def _texts_ids(positions: C.Positions) -> set[tuple[int, ...]]:
    return {tuple(positions.ids[a:b].tolist()) for a, b in zip(positions.offsets[:-1], positions.offsets[1:])}


@pytest.mark.integration
def test_the_validation_split_never_enters_the_context_vectors(tiny_context_run, tiny_data):  # noqa: F811
    """The held-out fit's context branch is built from its training part and the unlabelled reviews only: the
    validation reviews it is calibrated on are scored as new reviews are at serving time (issue 29's trap: with them
    inside, cross-validation read 0.3-0.45 points too high)."""
    from training.datasets import imdb_split
    from training.pipeline import split

    folder, (fits, nb_fits, tables), cfg = tiny_context_run
    assert len(fits) == 2  # the held-out fit, then the refit
    train, val = split(imdb_split("train", tiny_data), cfg)
    held_out, refit = fits
    assert held_out["train"].reviews == len(train[0]) and refit["train"].reviews == len(train[0]) + len(val[0])
    # a tenth of the 100 unlabelled reviews is held out of every fit: the drift reference is the model's scores on them
    assert held_out["unlabelled"].reviews == refit["unlabelled"].reviews == 90
    from model.keras_model import load_keras_model, model_parts

    # the validation texts, vectorized as the held-out fit's vectorizer did (its vocabulary: the training part's)
    from training.pipeline import build

    vectorizer, _ = build(cfg, train[0])
    val_ids = _texts_ids(C.Positions.of(lambda t: vectorizer(np.array(t)), val[0]))
    seen = _texts_ids(held_out["train"]) | _texts_ids(held_out["unlabelled"])
    assert not val_ids & seen
    # nor the naive-Bayes self-training nor the nb_scores table: the held-out fit's two naive-Bayes fits (the first,
    # then the self-trained one) see the training part and the unlabelled reviews it labelled, never a validation text
    assert len(nb_fits) == 4 and len(tables) == 2  # first and self-trained fit, held-out and refit; a table each
    val_sets = {frozenset(ids) - {0, 1} for ids in val_ids}
    for fitted in nb_fits[:2]:
        f = fitted["features"]
        held = {frozenset(f.cols[f.rows == r].tolist()) for r in range(f.reviews)}
        assert not val_sets & held
    first, taught = nb_fits[0]["features"], nb_fits[1]["features"]
    assert first.reviews == len(train[0]) and taught.reviews == len(train[0]) + 45  # half of the 90 unlabelled
    assert set(nb_fits[1]["labels"][len(train[0]) :].tolist()) <= {0.0, 1.0}
    assert tables[0]["unlabelled"] is held_out["unlabelled"] and len(tables[0]["scores"]) == 90
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["nb_self_training_reviews"] == metrics["refit_nb_self_training_reviews"] == 45
    from model.scorer import ModelArtifact

    reference = json.loads((folder / "reference_scores.json").read_text())
    assert len(reference["scores"]) == 10 and "held out of training" in reference["source"]
    assert ModelArtifact.at(folder).reference_inputs()["reviews"] == 10  # the same ten reviews
    from training.pipeline import reference_indices

    unsup = [r.text for r in imdb_split("unsup", tiny_data)]
    held = [unsup[i] for i in reference_indices(len(unsup), cfg.split_seed, 10)]
    held_ids = _texts_ids(C.Positions.of(lambda t: vectorizer(np.array(t)), held))
    assert len(held_ids) == 10 and not held_ids & _texts_ids(held_out["unlabelled"])
    # the refit (the exported model) learns from every labelled training review
    exported, _, _ = model_parts(load_keras_model(folder / "model.keras"))
    all_ids = _texts_ids(C.Positions.of(lambda t: exported(np.array(t)), train[0] + val[0]))
    assert all_ids <= _texts_ids(refit["train"])


@pytest.mark.integration
def test_the_context_branch_is_calibrated_served_exactly_and_explained(tiny_context_run, tmp_path):
    from model.explain import Explainer
    from model.samples import hostile_texts
    from model.scorer import load_scorer

    folder, _, _ = tiny_context_run
    metrics = json.loads((folder / "metrics.json").read_text())
    # four branches weighed on the validation split (the nb_scores table, then folded into the context weights)
    w_pooled, w_nb, w_context, w_scores, shift = metrics["calibration"]
    assert np.isfinite([w_pooled, w_nb, w_context, w_scores, shift]).all()
    ablation = metrics["validation_branches"]  # each branch left out in turn, the weights cross-fitted
    assert set(ablation) == {"all", "without pooled", "without naive_bayes", "without context", "without nb_scores"}
    assert all(0 < v["log_loss"] < 1 and 0 <= v["accuracy"] <= 1 for v in ablation.values())
    assert metrics["context_reviews"] == metrics["train_examples"] + 90 and metrics["refit_context_reviews"] == 400 + 90
    card = (folder / "model_card.md").read_text()
    assert "context branch" in card and "imdb_unsup" in card and "self-trained" in card and "nb_scores" in card
    scorer = load_scorer(folder, scoring="compiled", cache_dir=tmp_path)
    assert scorer.scoring == "compiled" and scorer.fast.has_context and np.any(scorer.fast.context != 0)
    texts = ["Great film!!! :-) loved it", "awful... 1/10 :(", "great great great", *hostile_texts()]
    ours, theirs = scorer.inspect(texts), scorer.inspect_tensorflow(texts)
    np.testing.assert_array_equal(ours.known, theirs.known)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5, rtol=0)
    # without the context branch's weights the scores move: the branch is in the served function
    bare = load_scorer(folder, scoring="compiled", cache_dir=tmp_path)
    bare.fast.context = np.zeros_like(bare.fast.context)
    bare.fast._row_floats = None
    assert np.abs(bare.fast.score(texts[:3]).scores - ours.scores[:3]).max() > 1e-4
    explainer = Explainer(scorer)
    for text in texts[:3]:
        e = explainer.explain(text)
        assert e.total == pytest.approx(e.score - e.base, abs=1e-5)
        assert e.score == pytest.approx(float(scorer.fast.score([text]).scores[0]), abs=1e-6)
    # a text with no known n-gram is "no evidence": 0.5 in both paths, and the base the attributions start from
    nothing = ["qzxvbn wqpzkx", "映画"]
    np.testing.assert_allclose(scorer.inspect(nothing).scores, 0.5, atol=1e-6)
    np.testing.assert_allclose(scorer.inspect_tensorflow(nothing).scores, 0.5, atol=1e-6)
    assert explainer.explain(texts[0]).base == pytest.approx(0.5, abs=1e-6)
    # each known position's context share is its n-gram's weight over the known count; they add up to the branch
    _, ids = scorer.fast.vectorize("great great film")
    terms = scorer.fast.context_terms(ids)
    known = ids >= 2
    np.testing.assert_allclose(terms[known], scorer.fast.context[ids[known]] / known.sum(), rtol=1e-6)
    assert terms.sum() == pytest.approx(float(scorer.fast.score(["great great film"]).context[0]), abs=1e-6)


@pytest.mark.integration
def test_the_keras_layer_and_the_compiled_kernel_average_alike():
    from model.keras_model import import_keras

    import_keras()
    from model.layers import KnownAverage

    rng = np.random.default_rng(3)
    weights = rng.normal(0, 1, 50).astype(np.float32)
    ids = rng.integers(0, 50, (20, 30))
    ids[0] = 0  # padding only
    ids[1, :] = 1  # unknown only
    layer = KnownAverage(50)
    layer.build(ids.shape)
    layer.set_weights([weights])
    keras_means = np.asarray(layer(ids)).reshape(-1)
    expected = [weights[row[row >= 2]].mean() if np.any(row >= 2) else 0.0 for row in ids]
    np.testing.assert_allclose(keras_means, expected, atol=1e-6)
    assert keras_means[0] == keras_means[1] == 0.0


@pytest.mark.integration
def test_one_pass_of_the_vectorizer_gives_both_branches_their_inputs_in_order():
    """The pipeline vectorizes each text set once (tf.data, batches in parallel) for the naive-Bayes features and the
    context branch: the same ids, reviews in the same order across batches, as vectorizing batch by batch."""
    from model.keras_model import import_keras

    import_keras()
    import keras
    import tensorflow as tf

    from model.cleaning import CLEANINGS
    from training.naive_bayes import Features
    from training.pipeline import Branches, vectorized_positions

    rng = np.random.default_rng(4)
    words = ["good", "bad", "film", "plot", "not", "great", "!", "awful", "fine", "the"]
    texts = [" ".join(rng.choice(words, rng.integers(0, 40))) for _ in range(230)] + ["", "unseen words only"]
    vectorizer = keras.layers.TextVectorization(
        max_tokens=60, standardize=CLEANINGS["tokens"], ngrams=3, output_mode="int", output_sequence_length=50
    )
    vectorizer.adapt(texts[:100])
    one_by_one = C.Positions.of(lambda t: vectorizer(tf.constant(t)), texts, batch=7)
    ours = vectorized_positions(vectorizer, texts, batch=16)
    assert np.array_equal(ours.ids, one_by_one.ids) and np.array_equal(ours.offsets, one_by_one.offsets)
    assert ours.reviews == len(texts) and np.any(ours.ids == 1)  # unknown n-grams kept, as the context mean needs
    features = Branches(vectorizer, None).features(texts, ours)
    expected = Features.of(lambda t: vectorizer(tf.constant(t)), texts, vectorizer.vocabulary_size())
    assert np.array_equal(features.rows, expected.rows) and np.array_equal(features.cols, expected.cols)
    assert (features.reviews, features.columns) == (expected.reviews, expected.columns)


@pytest.mark.integration
def test_without_the_pooled_branch_no_epoch_runs_and_the_self_trained_naive_bayes_branch_is_served(
    tiny_data,  # noqa: F811
    tmp_path,
):
    """pooled_branch = false: the pooled branch is not fitted (no epochs, in the held-out fit or the refit) and is served
    with weight 0; the calibration weighs the naive-Bayes branch alone, self-trained on the unlabelled reviews even
    without the context branch; the compiled path still scores as TensorFlow does."""
    from model.keras_model import load_keras_model
    from model.scorer import load_scorer
    from training import pipeline

    cfg = TINY.with_overrides(
        name="tiny-no-pooled", cleaning="tokens", ngrams=3, sequence_length=3000, mask_unknown=True, quantize="int8",
        refit_on_all=True, nb_branch=True, calibrate=True, nb_steps=50, nb_self_training=0.5, pooled_branch=False,
        embedding_dim=1, hidden_units=1,
    )  # fmt: skip
    folder = pipeline.run(cfg, data=tiny_data, out_dir=tmp_path / "runs")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["history"] == {} and metrics["refit_history"] == {} and metrics["best_epoch"] == 0
    w_nb, shift = metrics["calibration"]
    assert w_nb > 0 and metrics["nb_self_training_reviews"] == metrics["refit_nb_self_training_reviews"] == 45
    assert "validation_branches" not in metrics  # one branch: nothing to leave out
    model = load_keras_model(folder / "model.keras")
    core = next(layer for layer in model.layers if hasattr(layer, "get_layer"))
    kernel, _ = core.get_layer("pooled_logit").get_weights()
    assert not np.any(kernel)  # served with weight 0
    card = (folder / "model_card.md").read_text()
    assert "not fitted, served with weight 0" in card and "self-trained" in card
    # what the unlabelled reviews gave this model, and only that: no context branch here
    assert "the 45 it was surest of joined its training reviews" in card and "(the context branch)" not in card
    scorer = load_scorer(folder, scoring="compiled", cache_dir=tmp_path)
    texts = ["Great film!!! :-) loved it", "awful... 1/10 :(", "fine"]
    np.testing.assert_allclose(scorer.inspect(texts).scores, scorer.inspect_tensorflow(texts).scores, atol=1e-5)
    assert (folder / "training_curves.png").stat().st_size > 1000
