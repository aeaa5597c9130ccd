"""Training end to end on a few hundred rows: every artifact is written and the model reloads exactly."""

import json

import numpy as np
import pytest

from model.scorer import ModelArtifact, load_scorer
from training.config import TrainConfig
from training.pipeline import run

# Every test here trains or loads a model with TensorFlow.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, data_dir):
    """A tiny data folder: 400 train and 200 test rows of the real CSVs (both classes), 100 unlabelled."""
    import csv
    import gzip

    folder = tmp_path_factory.mktemp("tiny-data")
    for split, n in (("train", 400), ("test", 200), ("unsup", 100)):
        with gzip.open(data_dir / f"imdb_{split}.csv.gz", "rt", encoding="utf-8", newline="") as src:
            rows = list(csv.DictReader(src))
        picked = rows[: n // 2] + rows[-n // 2 :]
        with gzip.open(folder / f"imdb_{split}.csv.gz", "wt", encoding="utf-8", newline="") as dst:
            writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(picked)
    return folder


TINY = TrainConfig(
    name="tiny",
    max_tokens=2000,
    ngrams=2,
    sequence_length=64,
    embedding_dim=4,
    hidden_units=4,
    max_epochs=1,
    batch_size=32,
)


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    return run(TINY, data=tiny_data, out_dir=tmp_path_factory.mktemp("runs"))


def test_explore_writes_a_data_report(tiny_data, tmp_path):
    from training.explore import report

    path = report(tiny_data, tmp_path)
    text = path.read_text()
    assert "| train | 400 | 200 | 200 |" in text and "| test | 200 | 100 | 100 |" in text
    assert "Samples / words-per-sample ratio" in text and "bigrams" in text
    assert (tmp_path / "words_per_review.png").stat().st_size > 1000


def test_evaluate_json_on_a_labelled_file(capsys):
    from sentiment.cli import main

    assert main(["evaluate", "--data", "model/sample_reviews.jsonl", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 34 and metrics["accuracy"] >= 0.8


def test_every_artifact_file_is_written(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {
        "model.keras",
        "metrics.json",
        "model_card.md",
        "reference_scores.json",
        "reference_inputs.json",
        "training_curves.png",
        "confusion_matrix.png",
    } <= names
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "calibration_error", "confusion_matrix"):
        assert key in metrics["validation"] and key in metrics["test"]
    n_val = metrics["validation"]["examples"]
    assert metrics["test"]["examples"] == 200 and 30 <= n_val <= 60  # 10% of 400, rounded up to whole films
    assert metrics["training_seconds"] > 0 and metrics["parameters"] > 0 and metrics["artifact_bytes"] > 0
    assert tiny_run.name == f"tiny-{metrics['model_version']}"
    assert metrics["model_version"] == ModelArtifact.at(tiny_run).version
    assert len(json.loads((tiny_run / "reference_scores.json").read_text())["scores"]) == n_val
    # the input-drift reference: the unlabelled reviews whenever there are some (here all 100 of them), whatever
    # the score reference is (the drift verdict's scales were chosen against them)
    inputs = ModelArtifact.at(tiny_run).reference_inputs()
    assert inputs["reviews"] == 100 and "imdb_unsup" in inputs["source"]
    assert 0 < inputs["known_share"] <= 1 and len(inputs["pooled_mean"]) > 0
    assert "imdb_test" in (tiny_run / "model_card.md").read_text()


def test_artifact_round_trip_gives_the_same_scores(tiny_run, tmp_path):
    texts = ["A great film!", "Terrible.", "<br />meh", ""]
    first = load_scorer(tiny_run)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes())
    second = load_scorer(copy)
    np.testing.assert_array_equal(first.score(texts), second.score(texts))
    assert first.version == second.version


def test_validation_split_is_by_film_and_repeatable():
    from training.datasets import ReviewRow
    from training.pipeline import split

    rows = [ReviewRow(f"r{i}", f"tt{i % 37}", f"text {i}", i % 2) for i in range(1000)]
    cfg = TrainConfig(validation_fraction=0.2)
    (train_a, _), (val_a, _) = split(rows, cfg)
    (train_b, _), (val_b, _) = split(rows, cfg)
    assert train_a == train_b and val_a == val_b
    film = {r.text: r.movie_id for r in rows}
    assert not {film[t] for t in train_a} & {film[t] for t in val_a}
    assert 180 <= len(val_a) <= 240 and len(train_a) + len(val_a) == 1000


@pytest.fixture(scope="module")
def tiny_refit_run(tiny_data, tmp_path_factory):
    """The default model's options: known n-grams only, int8 embedding, refit on all training rows."""
    cfg = TINY.with_overrides(
        name="tiny-refit",
        ngrams=3,
        sequence_length=96,
        max_epochs=2,
        patience=1,
        mask_unknown=True,
        quantize="int8",
        refit_on_all=True,
    )
    return run(cfg, data=tiny_data, out_dir=tmp_path_factory.mktemp("runs"))


def test_refit_uses_every_training_row_and_is_reported(tiny_refit_run):
    metrics = json.loads((tiny_refit_run / "metrics.json").read_text())
    assert metrics["refit_examples"] == 400
    assert 1 <= metrics["refit_epochs"] == metrics["best_epoch"] <= 2
    assert len(metrics["refit_history"]["loss"]) == metrics["refit_epochs"]
    # the refit model has seen the validation split: the drift reference is its scores on unseen reviews
    reference = json.loads((tiny_refit_run / "reference_scores.json").read_text())
    assert len(reference["scores"]) == 100 and "imdb_unsup" in reference["source"]
    assert metrics["drift_reference"] == reference["source"]
    card = (tiny_refit_run / "model_card.md").read_text()
    assert "fitted again on all 400" in card and "int8" in card


def test_int8_artifact_stores_an_int8_embedding(tiny_refit_run):
    import zipfile

    import h5py

    with zipfile.ZipFile(tiny_refit_run / "model.keras") as archive:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
        weights = tiny_refit_run / "weights.h5"
        weights.write_bytes(archive.read("model.weights.h5"))
    try:
        dtypes = []
        with h5py.File(weights) as h5:
            h5.visititems(lambda name, obj: dtypes.append(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
        assert "int8" in dtypes
    finally:
        weights.unlink()


def test_unknown_words_do_not_move_the_score(tiny_refit_run):
    scorer = load_scorer(tiny_refit_run)
    plain, padded, unknown_only, empty = scorer.score(["the film", "the film qzxvbn wqpzkx", "qzxvbn wqpzkx", ""])
    assert plain == pytest.approx(padded, abs=1e-6)
    # nothing known: a finite score, the same as for an empty text (never NaN)
    assert np.isfinite(unknown_only) and unknown_only == pytest.approx(empty, abs=1e-6)


# The default model's design in small: punctuation tokens, the naive-Bayes branch, calibration, refit, int8.
TINY_NB = TINY.with_overrides(
    name="tiny-nb", cleaning="tokens", ngrams=3, sequence_length=3000, max_epochs=2, patience=1,
    mask_unknown=True, quantize="int8", refit_on_all=True, nb_branch=True, calibrate=True, nb_steps=50,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_nb_run(tiny_data, tmp_path_factory):
    return run(TINY_NB, data=tiny_data, out_dir=tmp_path_factory.mktemp("runs"))


def test_the_naive_bayes_branch_is_fitted_calibrated_and_reported(tiny_nb_run):
    metrics = json.loads((tiny_nb_run / "metrics.json").read_text())
    w_pooled, w_nb, shift = metrics["calibration"]  # fitted on the validation split's logits
    assert w_nb > 0 and np.isfinite([w_pooled, shift]).all()
    assert metrics["nb_history"]["step"][-1] == 50 and len(metrics["nb_history"]["val_accuracy"]) == 2
    assert metrics["refit_nb_history"]["step"][-1] == 50  # fitted again on all 400 rows, as the pooled branch
    uncertain = metrics["test"]["uncertain"]
    assert 0 <= uncertain["share"] <= 1 and uncertain["band"] == 0.1
    card = (tiny_nb_run / "model_card.md").read_text()
    assert "naive-Bayes branch" in card and "calibrated" in card and "Flagged uncertain" in card


def test_the_naive_bayes_model_is_computed_exactly_by_the_compiled_path_and_explained(tiny_nb_run, tmp_path):
    from model.explain import Explainer
    from model.samples import hostile_texts

    scorer = load_scorer(tiny_nb_run, scoring="compiled", cache_dir=tmp_path)
    assert scorer.scoring == "compiled" and scorer.fast.has_naive_bayes and scorer.fast.chars.split_all
    texts = ["Great film!!! :-) loved it", "awful... 1/10 :(", "great great great", *hostile_texts()]
    ours, theirs = scorer.inspect(texts), scorer.inspect_tensorflow(texts)
    np.testing.assert_array_equal(ours.ngrams, theirs.ngrams)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5, rtol=0)
    explainer = Explainer(scorer)
    for text in texts[:3]:
        e = explainer.explain(text)
        assert e.total == pytest.approx(e.score - e.base, abs=1e-5)
    assert "!" in explainer.explain(texts[0]).words  # punctuation is a token
    # a repeated n-gram counts once in the naive-Bayes branch: its weight is shared among its occurrences
    _, ids = scorer.fast.vectorize("great great great")
    assert ids[0] == ids[1] == ids[2] >= 2  # "great" is known
    terms = scorer.fast.naive_bayes_terms(ids)
    weights = scorer.fast.naive_bayes.astype(np.float64)
    assert terms[:3] == pytest.approx([weights[ids[0]] / 3] * 3)
    assert terms.sum() == pytest.approx(weights[np.unique(ids[ids >= 2])].sum())


def test_the_run_ends_saying_it_is_served_compiled(tiny_run):
    """TINY leaves mask_unknown at its default (false): the model pools [UNK], and the compiled path serves it."""
    from training.pipeline import serving

    line = serving(load_scorer(tiny_run))
    assert line.startswith("served compiled: largest difference from TensorFlow "), line
    assert float(line.split()[-5]) <= 1e-5


def test_train_to_a_file_writes_one_line_per_epoch_and_nothing_from_tensorflow(tiny_data, tmp_path):
    """What `sentiment train > train.log` leaves: the epochs as lines (no progress bar redrawn into the file), the
    serving line at the end, and a standard error free of TensorFlow's start-up lines and Keras' warnings."""
    import os
    import subprocess
    import sys

    config = tmp_path / "small.toml"
    config.write_text('name = "small"\nmax_tokens = 2000\nsequence_length = 64\nmax_epochs = 2\npatience = 5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "SENTIMENT_"))}
    done = subprocess.run(
        [sys.executable, "-m", "sentiment", "train", "--config", str(config), "--data", str(tiny_data),
         "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x08" not in done.stdout and "\r" not in done.stdout, "a progress bar was redrawn into the file"
    assert sum(line.startswith("Epoch ") for line in done.stdout.splitlines()) == 2, done.stdout
    assert "served compiled: largest difference from TensorFlow" in done.stdout
    noise = [line for line in done.stderr.splitlines() if line.strip()]
    assert not noise, "\n".join(noise)
    assert not list((tmp_path / "runs").glob(".*-staging")), "a staging folder was left behind"


def test_a_training_stopped_while_writing_its_run_leaves_no_staging_folder(tiny_run, tmp_path, monkeypatch):
    import training.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "plot_curves", interrupted)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    scorer = load_scorer(tiny_run)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export(TINY, scorer.keras_model, tmp_path, metrics, np.zeros(10, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_the_same_seed_trains_the_same_model(tiny_nb_run, tiny_data, tmp_path):
    """The default design in small, trained again with the same config: the same figures and the same scores (the
    initial weights come from the seed too; they did not, and two runs of one config differed by tenths of a point)."""
    again = run(TINY_NB, data=tiny_data, out_dir=tmp_path)
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (tiny_nb_run, again))
    for part in ("validation", "test", "calibration", "history"):
        assert first[part] == second[part], part
    texts = ["a fine film, well acted", "dull and far too long", "", "!!!"]
    np.testing.assert_array_equal(
        load_scorer(tiny_nb_run, scoring="tensorflow").score(texts),
        load_scorer(again, scoring="tensorflow").score(texts),
    )


def test_the_fused_adam_trains_the_weights_keras_adam_trains(monkeypatch):
    """training/adam.py's fused update of the embedding (a full-data pooled epoch: 86 -> 51 s of CPU) is
    Keras' Adam to the last bit: the pooled branch trained by both on the same batches (rows repeated within a batch,
    unknown ids, padding) has equal weights; and the fused update is what ran."""
    import gc

    import keras

    from training import adam
    from training.pipeline import core_model

    cfg = TrainConfig(name="adam", embedding_dim=8, hidden_units=4)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 3000, size=(256, 40))  # 0 padding, 1 unknown, the others repeated across and within rows
    ids[:, 30:] = 0
    labels = (ids[:, :5].sum(axis=1) % 2).astype(np.float32)
    fused_calls = []
    original = adam._dense_adam
    monkeypatch.setattr(adam, "_dense_adam", lambda *args: fused_calls.append(1) or original(*args))

    def trained(optimizer_class) -> list[np.ndarray]:
        keras.utils.set_random_seed(3)
        core = core_model(cfg, 3000)
        initial = core.get_weights()[0]
        core.compile(optimizer=optimizer_class(0.01), loss="binary_crossentropy")
        core.fit(ids, labels, batch_size=32, epochs=3, shuffle=False, verbose=0)
        assert (core.get_weights()[0] != initial).all(axis=1).mean() > 0.9  # nearly every row moved
        return core.get_weights()

    keras_weights = trained(keras.optimizers.Adam)
    assert not fused_calls
    fused_weights = trained(adam.FusedAdam)
    assert fused_calls  # traced into the train step
    gc.collect()  # the first model's variables deleted
    again = trained(adam.FusedAdam)  # a second model in the same process (the refit): its own variables are updated
    assert len(keras_weights) == len(fused_weights) == len(again) == 5
    for before, after, after_again in zip(keras_weights, fused_weights, again):
        np.testing.assert_array_equal(before, after)
        np.testing.assert_array_equal(before, after_again)
