"""The training pipeline, top to bottom: load -> split -> build -> fit -> evaluate -> export.

    sentiment train --config training/bigram.toml [--data PATH] [--out runs] [--promote]

Choices (hyperparameters, early stopping) see only a validation split cut from ``imdb_train``;
``imdb_test`` is scored once, at the end, for the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from core.tensorflow_logs import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Keras says this after every pass over a dataset of unknown length (ours are finite by design): noise
warnings.filterwarnings("ignore", message=".*[Yy]our input ran out of data.*")

from model.cleaning import CLEANINGS  # noqa: E402
from model.layers import UNKNOWN_ID, DistinctSum, ForgetUnknown, KnownAverage, MaskedAverage  # noqa: E402
from model.scorer import MODEL_FILE, input_reference, load_scorer, model_version  # noqa: E402
from training import context as context_branch  # noqa: E402
from training.adam import FusedAdam  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.datasets import ReviewRow, imdb_split  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402
from training.naive_bayes import Features, NaiveBayesBranch, fit_calibration, self_train  # noqa: E402
from training.naive_bayes import fit as fit_naive_bayes  # noqa: E402

Split = tuple[list[str], np.ndarray]
ACL_IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
REFERENCE_SIZE = 5000  # most unlabelled reviews in a drift reference (refit models; those that read imdb_unsup)


def download(dest: Path) -> Path:
    """Fetch the original aclImdb tarball (84 MB) to ``dest``, unless it is there already."""
    import urllib.error
    import urllib.request

    target = dest / "aclImdb_v1.tar.gz"
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    print(f"downloading {ACL_IMDB_URL} ...", flush=True)
    try:
        with urllib.request.urlopen(ACL_IMDB_URL, timeout=30) as response, open(f"{target}.part", "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as exc:
        raise FileNotFoundError(
            f"could not download {ACL_IMDB_URL} ({exc}); download it by hand and pass --data PATH/aclImdb_v1.tar.gz"
        ) from exc
    os.replace(f"{target}.part", target)
    return target


def load(data: Path | str | None) -> tuple[list[ReviewRow], list[ReviewRow]]:
    """The labelled IMDB train and test splits."""
    return imdb_split("train", data), imdb_split("test", data)


def split(rows: list[ReviewRow], cfg: TrainConfig) -> tuple[Split, Split]:
    """Cut the validation split off the training rows by film: no film has reviews on both sides, as
    between imdb_train and imdb_test, so validation accuracy is an honest estimate of test accuracy.
    The films are shuffled with the fixed split seed; the rows of each side are shuffled too."""
    rng = np.random.default_rng(cfg.split_seed)
    film_of = [r.movie_id or "" for r in rows]  # reviews without a film id form one group of their own
    films = sorted(set(film_of))
    rng.shuffle(films)
    wanted = int(round(len(rows) * cfg.validation_fraction))
    per_film: dict[str, int] = {}
    for film in film_of:
        per_film[film] = per_film.get(film, 0) + 1
    val_films: set[str] = set()
    taken = 0
    for film in films:
        if taken >= wanted:
            break
        val_films.add(film)
        taken += per_film[film]
    order = rng.permutation(len(rows))
    val_idx = [i for i in order if film_of[i] in val_films]
    train_idx = [i for i in order if film_of[i] not in val_films]

    def pick(idx: list[int]) -> Split:
        return [rows[i].text for i in idx], np.array([rows[i].label for i in idx], dtype=np.float32)

    return pick(train_idx), pick(val_idx)


def build(cfg: TrainConfig, train_texts: list[str]) -> tuple[keras.layers.TextVectorization, keras.Model]:
    """A vectorizer adapted to the training texts, and the pooled branch that scores token ids."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=cfg.max_tokens,
        standardize=CLEANINGS[cfg.cleaning],
        ngrams=cfg.ngrams if cfg.ngrams > 1 else None,
        output_mode="int",
        output_sequence_length=cfg.sequence_length,
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_texts).batch(1024))
    return vectorizer, core_model(cfg, vectorizer.vocabulary_size())


def core_model(cfg: TrainConfig, vocabulary_size: int, naive_bayes: bool = False, context: bool = False) -> keras.Model:
    """Token ids -> Embedding -> average pooling -> Dense -> Dense(1): the pooled branch's logit; with
    ``naive_bayes``, plus the naive-Bayes branch's (:class:`DistinctSum`); with ``context``, plus the context
    branch's (:class:`KnownAverage`); then the sigmoid: P(positive)."""
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = ForgetUnknown()(token_ids) if cfg.mask_unknown else token_ids
    x = keras.layers.Embedding(vocabulary_size, cfg.embedding_dim, mask_zero=True, name="embedding")(x)
    x = MaskedAverage()(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout)(x)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu", name="hidden")(x)
    logit = keras.layers.Dense(1, name="pooled_logit")(x)
    added = [DistinctSum(vocabulary_size, name="naive_bayes")(token_ids)] if naive_bayes else []
    if context:
        added.append(KnownAverage(vocabulary_size, name="context")(token_ids))
    if added:
        logit = keras.layers.Add(name="logit")([logit, *added])
    probability = keras.layers.Activation("sigmoid", name="p_positive")(logit)
    return keras.Model(token_ids, probability, name="pooled_embedding")


def _token_dataset(vectorizer, texts: list[str], labels: np.ndarray, batch: int, shuffle_seed: int | None):
    """Token ids and labels, each review's ids without their padding (batches are padded to their longest review:
    the same average, and a fraction of the memory and time of padding all to the sequence length)."""
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    ds = ds.batch(1024).map(lambda t, y: (vectorizer(t), y), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.map(lambda ids, y: (tf.boolean_mask(ids, ids != 0), y)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(texts), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.padded_batch(batch).prefetch(tf.data.AUTOTUNE)


def _optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    if cfg.weight_decay:
        return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)
    return FusedAdam(cfg.learning_rate)  # keras.optimizers.Adam's arithmetic, a fraction of its time (training/adam.py)


def fit(cfg: TrainConfig, vectorizer, core: keras.Model, train: Split, val: Split, verbose: int = 1) -> dict:
    """Fit the core on token ids; stop early on the validation split and keep the best weights."""
    keras.utils.set_random_seed(cfg.seed)
    train_ds = _token_dataset(vectorizer, *train, cfg.batch_size, shuffle_seed=cfg.seed)
    val_ds = _token_dataset(vectorizer, *val, 1024, shuffle_seed=None)
    core.compile(optimizer=_optimizer(cfg), loss="binary_crossentropy", metrics=["accuracy"])
    mode = "min" if cfg.monitor == "val_loss" else "max"
    stop = keras.callbacks.EarlyStopping(
        monitor=cfg.monitor, mode=mode, patience=cfg.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    # (shuffle=False: the datasets shuffle themselves; Keras ignores the flag for a dataset and warns when it is on)
    history = core.fit(
        train_ds, validation_data=val_ds, epochs=cfg.max_epochs, callbacks=[stop], verbose=verbose, shuffle=False
    )
    return {
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "best_epoch": int((np.argmin if mode == "min" else np.argmax)(history.history[cfg.monitor])) + 1,
        "fit_seconds": time.perf_counter() - started,
    }


@dataclass
class Branches:
    """What one fit produced: the pooled branch (a Keras core), the naive-Bayes and context branches (when the config
    has them), the vectorizer they share, and the calibration that weighs them:
    ``[w_pooled, (w_nb,) (w_ctx,) (w_nb_scores,) c]``. The ``context_nb_scores`` table (``nb_scores``) is a branch
    of its own for the calibration, and is served folded into the context branch's per-n-gram weights."""

    vectorizer: keras.layers.TextVectorization
    pooled: keras.Model
    naive_bayes: NaiveBayesBranch | None = None
    calibration: np.ndarray | None = None
    context: context_branch.ContextBranch | None = None
    nb_scores: context_branch.ContextBranch | None = None
    # the naive-Bayes branch's first fit's logits of the unlabelled reviews (self-training and the nb_scores table)
    unlabelled_nb_logits: np.ndarray | None = None
    use_pooled: bool = True  # false (pooled_branch = false): not fitted, weight 0

    def names(self) -> list[str]:
        """The branches the calibration weighs, in the order of its weights (then its shift)."""
        present = (("naive_bayes", self.naive_bayes), ("context", self.context), ("nb_scores", self.nb_scores))
        return ["pooled"] * self.use_pooled + [name for name, branch in present if branch is not None]

    def positions(self, texts: list[str]) -> context_branch.Positions:
        """Each review's n-gram ids without the padding, in order: one pass of the vectorizer over the texts (batches
        in parallel, in order), from which both the naive-Bayes features and the context branch's inputs come."""
        return vectorized_positions(self.vectorizer, texts)

    def features(self, texts: list[str], positions: context_branch.Positions | None = None) -> Features:
        """The naive-Bayes branch's features: each review's distinct known ids (as ``Features.of`` makes them)."""
        positions = positions or self.positions(texts)
        rows, cols = positions.distinct()
        return Features(
            rows.astype(np.int32), cols.astype(np.int32), positions.reviews, self.vectorizer.vocabulary_size()
        )

    def logits(self, texts: list[str]) -> np.ndarray:
        """One column per branch (:meth:`names`): the pooled branch's logit, the naive-Bayes branch's, the context
        branch's and the nb_scores table's (uncalibrated)."""
        columns = []
        if self.use_pooled:
            pooled = keras.Model(self.pooled.input, self.pooled.get_layer("pooled_logit").output)
            call = tf.function(lambda t: pooled(self.vectorizer(t), training=False))
            columns.append(np.concatenate([np.asarray(call(tf.constant(texts[i : i + 1024]))).reshape(-1)
                                           for i in range(0, len(texts), 1024)]))  # fmt: skip
        linear = self.naive_bayes is not None or self.context is not None or self.nb_scores is not None
        positions = self.positions(texts) if linear else None
        if self.naive_bayes is not None:
            columns.append(self.naive_bayes.logits(self.features(texts, positions)))
        if self.context is not None:
            columns.append(self.context.logits(positions))
        if self.nb_scores is not None:
            columns.append(self.nb_scores.logits(positions))
        return np.column_stack(columns)


def vectorized_positions(vectorizer, texts: list[str], batch: int = 1024) -> context_branch.Positions:
    """``Positions.of(vectorizer, texts)``, the batches vectorized by tf.data on every core (in order) and only
    their known-or-unknown ids (no padding) brought back to numpy."""
    if not texts:
        return context_branch.Positions(np.zeros(0, np.int32), np.zeros(1, np.int64))

    def unpadded(t):
        ids = vectorizer(t)
        present = ids != 0
        return tf.cast(tf.boolean_mask(ids, present), tf.int32), tf.reduce_sum(tf.cast(present, tf.int64), axis=1)

    ds = tf.data.Dataset.from_tensor_slices(texts).batch(batch)
    ds = ds.map(unpadded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    flat, lengths = [], []
    for ids, counts in ds.as_numpy_iterator():
        flat.append(ids)
        lengths.append(counts)
    lengths = np.concatenate(lengths)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return context_branch.Positions(np.concatenate(flat), offsets)


def fit_naive_bayes_branch(
    cfg: TrainConfig,
    branches: Branches,
    train: Split,
    val: Split | None = None,
    verbose: int = 1,
    positions: tuple[context_branch.Positions, context_branch.Positions | None] | None = None,
    unlabelled: context_branch.Positions | None = None,
) -> dict:
    """``positions``: the training texts' (and the validation texts') positions when the caller has them already.
    ``unlabelled``: the unlabelled reviews' positions (never a validation text): the first fit scores them (for the
    nb_scores table and self-training); with ``nb_self_training``, the share it is surest of joins the training
    reviews with its labels and the branch is fitted again."""
    started = time.perf_counter()
    train_positions, val_positions = positions or (None, None)
    validation = (branches.features(val[0], val_positions), val[1]) if val is not None else None
    features = branches.features(train[0], train_positions)
    settings = dict(l2=cfg.nb_l2, learning_rate=cfg.nb_learning_rate, steps=cfg.nb_steps, smoothing=cfg.nb_smoothing)
    branches.naive_bayes = fit_naive_bayes(features, train[1], **settings, validation=validation)
    record: dict = {}
    branches.unlabelled_nb_logits = None
    if unlabelled is not None and (cfg.nb_self_training > 0 or cfg.context_nb_scores):
        unlabelled_features = branches.features([], unlabelled)
        branches.unlabelled_nb_logits = branches.naive_bayes.logits(unlabelled_features)
        if cfg.nb_self_training > 0:
            first = branches.naive_bayes.history
            record["nb_first_history"] = first
            branches.naive_bayes, kept = self_train(
                features, train[1], unlabelled_features, branches.unlabelled_nb_logits, cfg.nb_self_training,
                **settings, validation=validation,
            )  # fmt: skip
            positive = float(np.mean(branches.unlabelled_nb_logits[kept] > 0)) if len(kept) else 0.0
            record |= {"nb_self_training_reviews": int(len(kept)), "nb_self_training_positive": positive}
            if verbose and "val_accuracy" in first:
                print(f"naive-Bayes branch before self-training: validation accuracy {first['val_accuracy'][-1]:.4f}")
    seconds = time.perf_counter() - started
    if verbose:
        last = branches.naive_bayes.history
        shown = f", validation accuracy {last['val_accuracy'][-1]:.4f}" if "val_accuracy" in last else ""
        taught = (
            f", self-trained on {record['nb_self_training_reviews']:,} unlabelled reviews"
            if "nb_self_training_reviews" in record
            else ""
        )
        print(
            f"naive-Bayes branch: {cfg.nb_steps} steps in {seconds:.0f} s{taught}, loss {last['loss'][-1]:.4f}{shown}"
        )
    return {"nb_history": branches.naive_bayes.history, "nb_seconds": seconds, **record}


def fit_context(
    cfg: TrainConfig,
    branches: Branches,
    train: Split,
    unlabelled: list[str] | None,
    verbose: int = 1,
    train_positions: context_branch.Positions | None = None,
    unlabelled_positions: context_branch.Positions | None = None,
) -> dict:
    """The context branch from the training texts and the unlabelled ones (never the validation split's: they are
    scored by it); with ``context_nb_scores`` (and the naive-Bayes branch's logits of the unlabelled reviews), the
    nb_scores table too."""
    if not unlabelled and unlabelled_positions is None:
        raise ValueError("context_branch needs the unlabelled reviews (imdb_unsup.csv.gz, or aclImdb's train/unsup/)")
    started = time.perf_counter()
    spaces = np.array([token.count(" ") for token in branches.vectorizer.get_vocabulary()])
    is_unigram, is_bigram = spaces == 0, spaces == 1
    is_unigram[:2] = False  # padding and [UNK]
    if unlabelled_positions is None:
        unlabelled_positions = branches.positions(unlabelled)
    branches.context = context_branch.fit(
        train_positions or branches.positions(train[0]), train[1], unlabelled_positions, is_unigram,
        dims=cfg.context_dims, min_reviews=cfg.context_min_reviews, l2=cfg.context_l2, seed=cfg.seed,
        is_bigram=is_bigram, bigram_dims=cfg.context_bigram_dims,
    )  # fmt: skip
    record = {**branches.context.record}
    branches.nb_scores = None
    if cfg.context_nb_scores and branches.unlabelled_nb_logits is not None:
        branches.nb_scores = context_branch.nb_score_table(
            unlabelled_positions, branches.unlabelled_nb_logits, len(is_unigram), min_reviews=cfg.context_min_reviews
        )
        record |= branches.nb_scores.record
    record["context_total_seconds"] = round(time.perf_counter() - started, 1)
    if verbose:
        table = f"; nb_scores table: {record['nb_scores_ngrams']:,} n-grams" if branches.nb_scores else ""
        print(
            f"context branch: {record['context_ngrams']:,} n-grams from {record['context_reviews']:,} reviews"
            f"{table} in {record['context_total_seconds']:.0f} s"
        )
    return record


def end_to_end(cfg: TrainConfig, branches: Branches) -> keras.Model:
    """Raw strings in, P(positive) out: the cleaning and vectorizing travel inside the model, the calibration in the
    weights (the pooled branch's last layer scaled and shifted, the naive-Bayes weights scaled)."""
    vectorizer = branches.vectorizer
    naive_bayes = branches.naive_bayes
    context = branches.context
    serving_core = core_model(  # no optimizer state
        cfg, vectorizer.vocabulary_size(), naive_bayes is not None, context is not None
    )
    for layer in branches.pooled.layers:
        if layer.weights:
            serving_core.get_layer(layer.name).set_weights(layer.get_weights())
    names = branches.names()
    weight = dict(zip(names, np.ones(len(names)) if branches.calibration is None else branches.calibration[:-1]))
    weight.setdefault("pooled", 0.0)  # pooled_branch = false: its layers are served, their output times 0
    shift = 0.0 if branches.calibration is None else float(branches.calibration[-1])
    last = serving_core.get_layer("pooled_logit")
    kernel, bias = last.get_weights()
    if naive_bayes is not None:
        shift += weight["naive_bayes"] * naive_bayes.bias
        serving_core.get_layer("naive_bayes").set_weights(
            [(weight["naive_bayes"] * naive_bayes.weights).astype(np.float32)]
        )
    if context is not None:
        # the context branch and the nb_scores table are both averages over the known n-grams: one table, summed
        table = weight["context"] * context.weights.astype(np.float64)
        shift += weight["context"] * context.bias
        if branches.nb_scores is not None:
            table = table + weight["nb_scores"] * branches.nb_scores.weights.astype(np.float64)
            shift += weight["nb_scores"] * branches.nb_scores.bias
        serving_core.get_layer("context").set_weights([table.astype(np.float32)])
    last.set_weights([kernel * weight["pooled"], bias * weight["pooled"] + shift])
    if context is not None:
        _centre_on_no_evidence(serving_core)
    if cfg.quantize == "int8":
        serving_core.get_layer("embedding").quantize("int8")
    texts = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(texts, serving_core(vectorizer(texts)), name="sentiment")


def _centre_on_no_evidence(core: keras.Model) -> None:
    """Make a review with no known n-gram score 0.5 ("no evidence"), changing no other score: the context table is
    an average over the known n-grams, so a constant added to each of its n-grams' weights and taken off the bias
    cancels for every review that has one, and moves only the one that has none (whose average is 0). Without this
    the empty review lands wherever the branches' biases put it (0.72 for nbcontext), outside the uncertain band;
    it is also the base value ``explain`` attributes from."""
    logit_of = keras.Model(core.input, core.get_layer("logit").output)  # before the sigmoid: no rounding to 0 or 1
    logit = float(np.asarray(logit_of(np.zeros((1, 1), dtype=np.int64), training=False)).reshape(-1)[0])
    context = core.get_layer("context")
    (table,) = context.get_weights()
    table = table.astype(np.float64)
    table[UNKNOWN_ID + 1 :] += logit  # padding and [UNK] are never averaged
    context.set_weights([table.astype(np.float32)])
    last = core.get_layer("pooled_logit")
    kernel, bias = last.get_weights()
    last.set_weights([kernel, bias - np.float32(logit)])


def predict(model: keras.Model, texts: list[str], batch: int = 1024) -> np.ndarray:
    call = tf.function(lambda t: model(t, training=False))
    parts = [np.asarray(call(tf.constant(texts[i : i + batch]))).reshape(-1) for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def needs_unlabelled(cfg: TrainConfig) -> bool:
    """Whether fitting ``cfg`` reads the unlabelled reviews (the context branch, or naive-Bayes self-training)."""
    return cfg.context_branch or (cfg.nb_branch and cfg.nb_self_training > 0)


def fit_linear_branches(
    cfg: TrainConfig, branches: Branches, train: Split, val: Split | None, unlabelled: list[str] | None, verbose: int
) -> dict:
    """The naive-Bayes branch (self-trained on the unlabelled reviews when the config says so), then the context
    branch and its nb_scores table: each text set vectorized once for all of them. ``val`` (when given) is only
    watched by the naive-Bayes fit's history: no validation text enters any fit."""
    record: dict = {}
    uses_unlabelled = needs_unlabelled(cfg)
    if uses_unlabelled and not unlabelled:
        raise ValueError(
            "context_branch and nb_self_training need the unlabelled reviews (imdb_unsup.csv.gz, or aclImdb's "
            "train/unsup/)"
        )
    shared = cfg.nb_branch and cfg.context_branch
    positions = branches.positions(train[0]) if shared else None  # one pass for both
    unlabelled_positions = branches.positions(unlabelled) if uses_unlabelled else None
    if cfg.nb_branch:
        record |= fit_naive_bayes_branch(
            cfg, branches, train, val, verbose, positions=(positions, None), unlabelled=unlabelled_positions
        )
    if cfg.context_branch:
        record |= fit_context(
            cfg, branches, train, unlabelled, verbose, train_positions=positions,
            unlabelled_positions=unlabelled_positions,
        )  # fmt: skip
    return record


def train_and_validate(
    cfg: TrainConfig, train: Split, val: Split, verbose: int = 1, unlabelled: list[str] | None = None
) -> tuple[keras.Model, dict, np.ndarray, np.ndarray | None]:
    """Build and fit; returns the end-to-end model, the fit record, the validation scores and the calibration."""
    started = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)  # before build: the initial weights come from it
    vectorizer, core = build(cfg, train[0])
    if cfg.pooled_branch:
        fitted = fit(cfg, vectorizer, core, train, val, verbose=verbose)
    else:
        fitted = {"history": {}, "best_epoch": 0, "fit_seconds": 0.0}
    branches = Branches(vectorizer, core, use_pooled=cfg.pooled_branch)
    fitted.update(fit_linear_branches(cfg, branches, train, val, unlabelled, verbose))
    if cfg.calibrate:
        logits = branches.logits(val[0])
        fitted["validation_uncalibrated"] = evaluate(1 / (1 + np.exp(-logits.sum(axis=1))), val[1])
        branches.calibration = fit_calibration(logits, val[1])
        fitted["calibration"] = [float(v) for v in branches.calibration]
        if logits.shape[1] > 1:
            fitted["validation_branches"] = branch_ablation(logits, val[1], branches.names())
            if verbose:
                shown = ", ".join(
                    f"{name} {v['accuracy']:.4f} ({v['log_loss']:.4f})"
                    for name, v in fitted["validation_branches"].items()
                )
                print(f"validation accuracy (log loss), branch weights cross-fitted: {shown}")
    model = end_to_end(cfg, branches)
    fitted["training_seconds"] = time.perf_counter() - started  # vocabulary, fitting and export model
    fitted["parameters"] = int(model.count_params())
    fitted["vocabulary_size"] = int(vectorizer.vocabulary_size())
    return model, fitted, predict(model, val[0]), branches.calibration


def branch_ablation(logits: np.ndarray, labels: np.ndarray, names: list[str], parts: int = 10) -> dict:
    """What each branch adds, read on the validation split without reading a review's own label: the calibration
    (branch weights and shift) cross-fitted, each of ``parts`` random parts scored by the weights fitted on the
    others, for all the branches and for all but each one. Accuracy, log loss and calibration error (10 bins)."""
    from training.metrics import expected_calibration_error

    y = np.asarray(labels, np.float64)
    part = np.random.default_rng(0).integers(0, parts, len(y))
    out = {}
    for left_out in [None, *names]:
        columns = [i for i, name in enumerate(names) if name != left_out]
        p = np.zeros(len(y))
        for k in range(parts):
            theta = fit_calibration(logits[part != k][:, columns], y[part != k])
            p[part == k] = 1 / (1 + np.exp(-(logits[part == k][:, columns] @ theta[:-1] + theta[-1])))
        q = np.clip(p, 1e-12, 1 - 1e-12)
        out["all" if left_out is None else f"without {left_out}"] = {
            "accuracy": round(float(np.mean((p > 0.5) == (y > 0.5))), 5),
            "log_loss": round(float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))), 5),
            "calibration_error": round(float(expected_calibration_error(y, p)), 5),
        }
    return out


def refit(
    cfg: TrainConfig,
    train: Split,
    val: Split,
    epochs: int,
    calibration: np.ndarray | None,
    verbose: int = 1,
    unlabelled: list[str] | None = None,
) -> tuple[keras.Model, dict]:
    """Vocabulary and model again, from all the labelled training rows, for a fixed number of epochs (and the
    naive-Bayes branch's steps); the calibration is the held-out fit's."""
    started = time.perf_counter()
    texts = train[0] + val[0]
    labels = np.concatenate([train[1], val[1]])
    order = np.random.default_rng(cfg.split_seed).permutation(len(texts))
    texts, labels = [texts[i] for i in order], labels[order]
    keras.utils.set_random_seed(cfg.seed)  # before build: the initial weights come from it
    vectorizer, core = build(cfg, texts)
    history = {}
    if cfg.pooled_branch:
        core.compile(optimizer=_optimizer(cfg), loss="binary_crossentropy", metrics=["accuracy"])
        history = core.fit(
            _token_dataset(vectorizer, texts, labels, cfg.batch_size, shuffle_seed=cfg.seed),
            epochs=epochs,
            verbose=verbose,
            shuffle=False,
        ).history
    branches = Branches(vectorizer, core, calibration=calibration, use_pooled=cfg.pooled_branch)
    linear = fit_linear_branches(cfg, branches, (texts, labels), None, unlabelled, verbose)
    record = {f"refit_{k}": v for k, v in linear.items()}
    model = end_to_end(cfg, branches)
    record |= {
        "refit_examples": len(texts),
        "refit_epochs": epochs,
        "refit_history": {k: [float(v) for v in vals] for k, vals in history.items()},
        "refit_seconds": time.perf_counter() - started,
        "parameters": int(model.count_params()),
        "vocabulary_size": int(vectorizer.vocabulary_size()),
    }
    return model, record


def evaluate(scores: np.ndarray, labels: np.ndarray) -> dict:
    return classification_metrics(labels, scores)


def reference_indices(count: int, seed: int, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Which of ``count`` unlabelled reviews make a drift reference of ``size``, picked with ``seed`` (ascending)."""
    return np.sort(np.random.default_rng(seed).choice(count, size=min(size, count), replace=False))


def reference_sample(data, seed: int, size: int = REFERENCE_SIZE) -> list[str]:
    """The unlabelled ``imdb_unsup`` reviews a drift reference is made of (films in neither train nor test), picked
    with ``seed``: the same texts each time, so a reference can be rebuilt for a saved model. With all 50,000 of
    them, these are the ones a model that reads unlabelled reviews is trained without."""
    unlabelled = [r.text for r in imdb_split("unsup", data)]
    return [unlabelled[i] for i in reference_indices(len(unlabelled), seed, size)]


def drift_reference(
    cfg: TrainConfig,
    model: keras.Model,
    data,
    val_scores: np.ndarray,
    val_texts: list[str],
    held_unlabelled: list[str] | None = None,
) -> tuple[np.ndarray, str, list[str]]:
    """The score distribution the drift metrics compare live traffic with: the exported model's scores on
    in-domain reviews it never saw, and those reviews (for the input reference). A model that read unlabelled
    reviews was trained without ``held_unlabelled``: those, in their natural mix of stars. Otherwise, without a
    refit, the validation split. A refit model has seen the validation split (and scores it more confidently than
    new reviews), so it scores up to ``REFERENCE_SIZE`` unlabelled ``imdb_unsup`` reviews instead."""
    if held_unlabelled:
        source = (
            f"{len(held_unlabelled):,} reviews of imdb_unsup held out of training "
            "(unlabelled; films in neither train nor test)"
        )
        return predict(model, held_unlabelled), source, held_unlabelled
    if not cfg.refit_on_all:
        return val_scores, "validation split of imdb_train", val_texts
    try:
        sample = reference_sample(data, cfg.split_seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"warning: no imdb_unsup reviews ({exc}); the drift reference is the held-out fit's validation scores")
        source = "validation split of imdb_train, scored by the held-out fit (no imdb_unsup found)"
        return val_scores, source, val_texts
    source = f"{len(sample):,} reviews of imdb_unsup (unlabelled; films in neither train nor test)"
    return predict(model, sample), source, sample


def unlabelled_reference(cfg: TrainConfig, data) -> tuple[list[str], str] | None:
    """The input-drift reference's reviews (unknown n-gram share, length) for a model whose score reference is the
    labelled validation split: the same ``REFERENCE_SIZE`` unlabelled ``imdb_unsup`` reviews as every other model's,
    with their source; None without them. What a review looks like to the vocabulary does not depend on whether a
    branch read it (the vocabulary is the labelled training reviews'), and these include the mixed 5- and 6-star
    reviews the labelled splits leave out: the drift verdict's scales were chosen against them
    (bench/drift_thresholds.py)."""
    try:
        sample = reference_sample(data, cfg.split_seed)
    except (FileNotFoundError, ValueError):
        return None
    return (
        (sample, f"{len(sample):,} reviews of imdb_unsup (unlabelled; films in neither train nor test)")
        if sample
        else None
    )


def export(
    cfg: TrainConfig,
    model: keras.Model,
    out_dir: Path,
    metrics: dict,
    reference_scores: np.ndarray,
) -> Path:
    """Write one versioned run folder: model, metrics, plots, reference scores, model card."""
    staging = out_dir / f".{cfg.name}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        return _write_run(cfg, model, out_dir, staging, metrics, reference_scores)
    except BaseException:  # Ctrl-C or an error half-way: no half-written folder is left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_run(
    cfg: TrainConfig, model: keras.Model, out_dir: Path, staging: Path, metrics: dict, reference_scores: np.ndarray
) -> Path:
    save_model(model, staging / MODEL_FILE)
    version = model_version(staging / MODEL_FILE)
    metrics = {**metrics, "model_version": version, "artifact_bytes": (staging / MODEL_FILE).stat().st_size}
    # binds these metrics to this model file: `sentiment model add` refuses a metrics.json of another model
    metrics["model_sha256"] = hashlib.sha256((staging / MODEL_FILE).read_bytes()).hexdigest()
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (staging / "reference_scores.json").write_text(
        json.dumps({"source": metrics["drift_reference"], "scores": [round(float(s), 5) for s in reference_scores]})
        + "\n"
    )
    plot_curves(metrics["history"], staging / "training_curves.png", metrics.get("nb_history"))
    plot_confusion(metrics["test"]["confusion_matrix"], staging / "confusion_matrix.png")
    (staging / "model_card.md").write_text(model_card(cfg, metrics))
    final = out_dir / f"{cfg.name}-{version}"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def write_input_reference(folder: Path, reference: dict) -> None:
    """``reference_inputs.json``: the input-drift reference of the artifact in ``folder``."""
    (folder / "reference_inputs.json").write_text(json.dumps(reference, indent=1) + "\n")


def save_model(model: keras.Model, path: Path) -> None:
    """``model.save``, then the archive deflated: Keras stores it uncompressed, and the vocabulary
    (text, kept twice: by TextVectorization and by its lookup table) shrinks to about a third."""
    raw = path.with_name(f"{path.stem}.stored.keras")
    model.save(raw)
    with zipfile.ZipFile(raw) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in source.infolist():
            out.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    raw.unlink()


def plot_curves(history: dict, path: Path, nb_history: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = bool(history.get("loss"))  # none without the pooled branch (pooled_branch = false)
    panels = 2 * pooled + bool(nb_history)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(4.5 * max(panels, 1), 3.5), squeeze=False)
    axes = axes[0]
    if nb_history:
        nb_ax = axes[-1]
        nb_ax.plot(nb_history["step"], nb_history["loss"], "o-", label="train loss")
        if nb_history.get("val_accuracy"):
            nb_ax.plot(nb_history["step"], nb_history["val_accuracy"], "o-", label="validation accuracy")
        nb_ax.set_xlabel("full-batch Adam step")
        nb_ax.set_title("naive-Bayes branch")
        nb_ax.grid(alpha=0.3)
        nb_ax.legend()
    if not pooled:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    loss_ax, acc_ax = axes[:2]
    epochs = range(1, len(history["loss"]) + 1)
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, history[key], "o-", label="train")
        ax.plot(epochs, history[f"val_{key}"], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(f"pooled branch: {key}" if nb_history else key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array([[cm["true_negative"], cm["false_positive"]], [cm["false_negative"], cm["true_positive"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(grid, cmap="Blues")
    for (i, j), n in np.ndenumerate(grid):
        ax.text(j, i, f"{n:,}", ha="center", va="center", color="white" if n > grid.max() / 2 else "black")
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("imdb_test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _unlabelled_line(cfg: TrainConfig, metrics: dict) -> str:
    """The model card's sentence on what the unlabelled ``imdb_unsup`` reviews gave the model (none: empty)."""
    uses = []
    if cfg.context_branch:
        uses.append("their words place each n-gram near the n-grams it occurs with (the context branch)")
    if cfg.nb_branch and cfg.context_branch and cfg.context_nb_scores:
        uses.append("the naive-Bayes branch's first fit scored them, and each n-gram's mean score is a table beside it")
    if cfg.nb_branch and cfg.nb_self_training > 0:
        taught = metrics.get("nb_self_training_reviews", 0)
        uses.append(f"the {taught:,} it was surest of joined its training reviews with the labels it gave them")
    if not uses:
        return ""
    return (
        " The unlabelled `imdb_unsup` reviews (films in neither `imdb_train` nor `imdb_test`) were read too: "
        f"{'; '.join(uses)}. No person labelled them. A tenth of them (at most {REFERENCE_SIZE:,}) were held out of "
        "all of this: the drift reference is the model's scores on those."
    )


def model_card(cfg: TrainConfig, metrics: dict) -> str:
    test, val = metrics["test"], metrics["validation"]
    grams = "unigrams" if cfg.ngrams == 1 else f"1- to {cfg.ngrams}-grams"
    cleaning = {
        "full": "lowercase, cp1252 punctuation repaired, HTML removed, negations expanded, `!` and `?` kept, "
        "other punctuation dropped",
        "tokens": "lowercase, cp1252 punctuation repaired, HTML removed, negations expanded, every punctuation "
        "character a token of its own",
    }.get(cfg.cleaning, "lowercase, punctuation stripped")
    pooling = "average pooling over the n-grams in the vocabulary" if cfg.mask_unknown else "average pooling"
    embedding = (
        f"Embedding({cfg.embedding_dim}, stored as int8 with a scale per row)"
        if cfg.quantize == "int8"
        else f"Embedding({cfg.embedding_dim})"
    )
    head = f"Dense({cfg.hidden_units}, relu) -> Dense(1)"
    if not cfg.pooled_branch:
        head += " (the pooled branch: not fitted, served with weight 0)"
    if cfg.nb_branch:
        head += (
            ", plus the naive-Bayes branch: one weight per n-gram, summed over the review's distinct known n-grams "
            f"(NB log-count ratios times weights fitted by {cfg.nb_steps} steps of full-batch Adam, L2 {cfg.nb_l2}"
        )
        if cfg.nb_self_training > 0:
            taught = metrics.get("nb_self_training_reviews", 0)
            head += (
                f"; self-trained: it scored the unlabelled `imdb_unsup` reviews, the {taught:,} it was surest of "
                "joined the training reviews with the labels it gave them, and it was fitted again"
            )
        head += ")"
    if cfg.context_branch:
        second_view = (
            f", and a {cfg.context_bigram_dims}-dimension one of its bigrams beside it"
            if cfg.context_bigram_dims
            else ""
        )
        head += (
            ", plus the context branch: one weight per n-gram, averaged over the review's known n-grams, learned "
            f"from the {metrics.get('context_reviews', 0):,} training and unlabelled `imdb_unsup` reviews (each "
            f"review a {cfg.context_dims}-dimension SVD of its idf-weighted unigrams{second_view}; each n-gram seen "
            f"in at least {cfg.context_min_reviews} of them the mean vector of the reviews that hold it; a logistic "
            "regression on a review's mean n-gram vector, folded into one weight per n-gram). The context vectors "
            "use only the unlabelled reviews' words, to place n-grams near the n-grams they occur with"
        )
        if cfg.context_nb_scores and cfg.nb_branch:
            head += (
                "; beside it, and served in the same per-n-gram weights, the nb_scores table: each n-gram held by at "
                f"least {cfg.context_min_reviews} unlabelled reviews gets the mean of the naive-Bayes branch's logits "
                "of those reviews (averaged over the review's known n-grams, weighed by the calibration)"
            )
    head += " -> sigmoid"
    if "calibration" in metrics:
        names = ["pooled"] * cfg.pooled_branch + (["naive-Bayes"] if cfg.nb_branch else [])
        names += ["context"] if cfg.context_branch else []
        names += ["nb_scores"] if cfg.context_branch and cfg.context_nb_scores and cfg.nb_branch else []
        names = names[: len(metrics["calibration"]) - 1] + ["shift"]
        weights = ", ".join(f"{name} {w:.3f}" for name, w in zip(names, metrics["calibration"]))
        head += (
            f". The branches are weighed and calibrated by logistic regression on the validation split's logits "
            f"({weights}), folded into the exported weights, so that the probability means what it says (the "
            f"validation row below is therefore in-sample for those {len(names)} numbers)"
        )
    refit_line = (
        f" Then fitted again on all {metrics['refit_examples']:,} labelled `imdb_train` reviews"
        + (f" for those {metrics['refit_epochs']} epochs" if cfg.pooled_branch else "")
        + ": that is the exported model. The validation row is the held-out fit's; "
        "the test row is the exported model's."
        if "refit_examples" in metrics
        else ""
    )
    stopped = (
        f"early-stopped (best epoch {metrics['best_epoch']})"
        if cfg.pooled_branch
        else "branches weighed and calibrated"
    )
    config_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in asdict(cfg).items())
    return f"""# Model card: `{cfg.name}` ({metrics["model_version"]})

**What it does.** Scores the sentiment of an English movie review: raw text in, the probability that the
review is positive out (label `positive` when the probability is at least 0.5).

**Architecture.** TextVectorization inside the model ({cleaning}; {grams}, {metrics["vocabulary_size"]:,} tokens,
{cfg.sequence_length} per review) -> {embedding} -> {pooling} -> {head}. {metrics["parameters"]:,} parameters; the
artifact is {metrics["artifact_bytes"] / 1e6:.1f} MB.

**Data.** IMDB Large Movie Review Dataset (Maas et al., ACL 2011). Trained on {metrics["train_examples"]:,} reviews of
`imdb_train`; {stopped} on a validation split of {val["examples"]:,} reviews cut from
`imdb_train` with seed {cfg.split_seed}; no film has reviews on both sides.{refit_line}{_unlabelled_line(cfg, metrics)}
`imdb_test` was scored once, for the figures below, never for a choice.

| split | accuracy | precision | recall | F1 | ROC AUC | calibration error |
|---|---:|---:|---:|---:|---:|---:|
| validation | {val["accuracy"]:.4f} | {val["precision"]:.4f} | {val["recall"]:.4f} | {val["f1"]:.4f} | {val["roc_auc"]:.4f} | {val["calibration_error"]:.4f} |
| test ({test["examples"]:,}) | {test["accuracy"]:.4f} | {test["precision"]:.4f} | {test["recall"]:.4f} | {test["f1"]:.4f} | {test["roc_auc"]:.4f} | {test["calibration_error"]:.4f} |

Calibration error: expected calibration error over 10 equal-width bins of P(positive). Flagged uncertain (score within
{test["uncertain"]["band"]} of 0.5) on `imdb_test`: {test["uncertain"]["share"]:.1%} of reviews, accuracy
{test["uncertain"]["accuracy_inside"]:.1%} inside that band and {test["uncertain"]["accuracy_outside"]:.1%} outside.

Training took {metrics["training_seconds"]:.0f} s on CPU (vocabulary, fitting, export model).
Curves: `training_curves.png`; test confusion matrix: `confusion_matrix.png`.

**Limits.** Trained on movie reviews: accuracy drops on other domains (product reviews, tweets), and the score
distribution shifts; watch the drift metrics. English only: a review in another language or script shares few
n-grams with the vocabulary, and the worker marks it `readable: false` instead of trusting its score. Sarcasm and
mixed reviews are often misread. Do not use it to make decisions about people.

**Config.**

```toml
{config_lines}
```
"""


def progress_verbosity() -> int:
    """Keras' progress bar on a terminal; one line per epoch otherwise (a bar redrawn into a log file is noise)."""
    return 1 if sys.stdout.isatty() else 2


def run(cfg: TrainConfig, data: Path | str | None = None, out_dir: Path | str = "runs") -> Path:
    """The whole pipeline; returns the run folder."""
    train_rows, test_rows = load(data)
    train, val = split(train_rows, cfg)
    unlabelled, held_unlabelled = None, None
    if needs_unlabelled(cfg):
        every = [r.text for r in imdb_split("unsup", data)]
        if not every:  # before minutes of fitting, not after
            raise ValueError(
                "context_branch and nb_self_training need unlabelled reviews: imdb_unsup.csv.gz, or aclImdb's "
                "train/unsup/"
            )
        # a tenth (at most REFERENCE_SIZE) never reaches a branch: the drift reference, reviews the model never read
        held = np.zeros(len(every), dtype=bool)
        held[reference_indices(len(every), cfg.split_seed, min(REFERENCE_SIZE, len(every) // 10))] = True
        held_unlabelled = [text for text, out in zip(every, held) if out]
        unlabelled = [text for text, out in zip(every, held) if not out]
    shown = f"  unlabelled {len(unlabelled):,}" if unlabelled is not None else ""
    shown += f" (and {len(held_unlabelled):,} held out for the drift reference)" if held_unlabelled else ""
    print(f"train {len(train[0]):,}  validation {len(val[0]):,}  test {len(test_rows):,}{shown}", flush=True)
    verbose = progress_verbosity()
    model, fitted, val_scores, calibration = train_and_validate(cfg, train, val, verbose=verbose, unlabelled=unlabelled)
    if cfg.refit_on_all:
        epochs = f" for {fitted['best_epoch']} epochs" if cfg.pooled_branch else ""
        print(f"refitting on all {len(train[0]) + len(val[0]):,} training reviews{epochs}")
        model, refitted = refit(
            cfg, train, val, fitted["best_epoch"], calibration, verbose=verbose, unlabelled=unlabelled
        )
        fitted = {**fitted, **refitted, "training_seconds": fitted["training_seconds"] + refitted["refit_seconds"]}
    test_scores = predict(model, [r.text for r in test_rows])
    metrics = {
        "config": asdict(cfg),
        "train_examples": len(train[0]),
        "validation": evaluate(val_scores, val[1]),
        "test": evaluate(test_scores, np.array([r.label for r in test_rows])),
        **fitted,
    }
    val_texts = list(val[0])
    reference_scores, reference_source, reference_texts = drift_reference(
        cfg, model, data, val_scores, val_texts, held_unlabelled
    )
    metrics["drift_reference"] = reference_source
    folder = export(cfg, model, Path(out_dir), metrics, reference_scores)
    exported = load_scorer(folder)
    inputs = (reference_texts, reference_source)
    if reference_texts is val_texts:  # the labelled split: the unlabelled sample instead, when there is one
        inputs = unlabelled_reference(cfg, data) or inputs
    write_input_reference(folder, input_reference(exported, *inputs))
    # the artifact must score exactly as the model in memory did
    probe = [r.text for r in test_rows[:32]] + [r.text for r in test_rows[-32:]]
    reloaded = exported.score(probe)
    expected = np.concatenate([test_scores[:32], test_scores[-32:]])
    if not np.allclose(reloaded, expected, atol=1e-5):
        worst = float(np.abs(reloaded - expected).max())
        raise RuntimeError(f"exported model at {folder} does not reproduce its scores (largest difference {worst:.3g})")
    print(
        f"validation accuracy {metrics['validation']['accuracy']:.4f}  test accuracy {metrics['test']['accuracy']:.4f}"
        f"  ({metrics['training_seconds']:.0f} s, {metrics['parameters']:,} parameters)"
    )
    print(f"wrote {folder}")
    print(serving(exported))
    return folder


def serving(scorer) -> str:
    """How the exported model will be served, in one line: its compiled tables checked against TensorFlow on the
    check texts, as a worker checks them before it serves them."""
    from model.compiled.build import check

    return check(scorer.keras_model, lambda texts: scorer.inspect_tensorflow(texts).scores).summary()
