"""The training pipeline, top to bottom: load -> split -> build -> fit -> evaluate -> export.

    sentiment train --config training/seed.toml [--data PATH] [--out runs]
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.cleaning import clean_text  # noqa: E402
from model.scorer import MODEL_FILE, load_scorer, model_version  # noqa: E402
from sentiment.datasets import ReviewRow, imdb_split  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402

Split = tuple[list[str], np.ndarray]


def load(data: Path | str | None) -> tuple[list[ReviewRow], list[ReviewRow]]:
    """The labelled IMDB train and test splits."""
    return imdb_split("train", data), imdb_split("test", data)


def split(rows: list[ReviewRow], cfg: TrainConfig) -> tuple[Split, Split]:
    """Shuffle with the fixed split seed and cut the validation split off the training rows."""
    order = np.random.default_rng(cfg.split_seed).permutation(len(rows))
    n_val = int(round(len(rows) * cfg.validation_fraction))
    pick = lambda idx: ([rows[i].text for i in idx], np.array([rows[i].label for i in idx], dtype=np.float32))  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


def build(cfg: TrainConfig, train_texts: list[str]) -> tuple[keras.layers.TextVectorization, keras.Model]:
    """A vectorizer adapted to the training texts, and the model core that scores token ids."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=cfg.max_tokens,
        standardize=clean_text,
        ngrams=cfg.ngrams if cfg.ngrams > 1 else None,
        output_mode="int",
        output_sequence_length=cfg.sequence_length,
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_texts).batch(1024))
    return vectorizer, core_model(cfg, vectorizer.vocabulary_size())


def core_model(cfg: TrainConfig, vocabulary_size: int) -> keras.Model:
    """Token ids -> Embedding -> average pooling -> Dense -> P(positive)."""
    token_ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocabulary_size, cfg.embedding_dim, mask_zero=True)(token_ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout)(x)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu")(x)
    probability = keras.layers.Dense(1, activation="sigmoid", name="p_positive")(x)
    return keras.Model(token_ids, probability, name="pooled_embedding")


def _token_dataset(vectorizer, texts: list[str], labels: np.ndarray, batch: int, shuffle_seed: int | None):
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    ds = ds.batch(1024).map(lambda t, y: (vectorizer(t), y), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(texts), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def fit(cfg: TrainConfig, vectorizer, core: keras.Model, train: Split, val: Split) -> dict:
    """Fit the core on token ids; stop early on validation loss and keep the best weights."""
    keras.utils.set_random_seed(cfg.seed)
    train_ds = _token_dataset(vectorizer, *train, cfg.batch_size, shuffle_seed=cfg.seed)
    val_ds = _token_dataset(vectorizer, *val, 1024, shuffle_seed=None)
    core.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True)
    started = time.perf_counter()
    history = core.fit(train_ds, validation_data=val_ds, epochs=cfg.max_epochs, callbacks=[stop], verbose=1)
    return {
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "best_epoch": int(np.argmin(history.history["val_loss"])) + 1,
        "training_seconds": time.perf_counter() - started,
    }


def end_to_end(cfg: TrainConfig, vectorizer, core: keras.Model) -> keras.Model:
    """Raw strings in, P(positive) out: the cleaning and vectorizing travel inside the model."""
    serving_core = core_model(cfg, vectorizer.vocabulary_size())  # uncompiled: no optimizer state saved
    serving_core.set_weights(core.get_weights())
    texts = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(texts, serving_core(vectorizer(texts)), name="sentiment")


def evaluate(scores: np.ndarray, labels: np.ndarray) -> dict:
    return classification_metrics(labels, scores)


def export(
    cfg: TrainConfig, model: keras.Model, out_dir: Path, metrics: dict, reference_scores: np.ndarray
) -> Path:
    """Write one versioned run folder: model, metrics, reference scores, model card."""
    staging = out_dir / f".{cfg.name}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save(staging / MODEL_FILE)
    version = model_version(staging / MODEL_FILE)
    metrics = {**metrics, "model_version": version, "artifact_bytes": (staging / MODEL_FILE).stat().st_size}
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (staging / "reference_scores.json").write_text(
        json.dumps({"source": "validation split of imdb_train", "scores": [round(float(s), 5) for s in reference_scores]})
        + "\n"
    )
    (staging / "model_card.md").write_text(model_card(cfg, metrics))
    final = out_dir / f"{cfg.name}-{version}"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def model_card(cfg: TrainConfig, metrics: dict) -> str:
    test, val = metrics["test"], metrics["validation"]
    return f"""# Model card: `{cfg.name}` ({metrics['model_version']})

**What it does.** Scores the sentiment of an English movie review: raw text in, the probability that the
review is positive out (label `positive` when the probability is at least 0.5).

**Architecture.** TextVectorization (cleaning inside the model: lowercase, cp1252 punctuation repaired, HTML
removed, negations expanded, `!` and `?` kept, other punctuation dropped; {cfg.ngrams}-grams, {cfg.max_tokens:,}
tokens, {cfg.sequence_length} per review) -> Embedding({cfg.embedding_dim}) -> average pooling -> Dense({cfg.hidden_units}, relu)
-> Dense(1, sigmoid). {metrics['parameters']:,} parameters, {metrics['artifact_bytes'] / 1e6:.1f} MB.

**Data.** IMDB Large Movie Review Dataset (Maas et al., ACL 2011). Trained on {metrics['train_examples']:,} reviews of
`imdb_train`; early-stopped (best epoch {metrics['best_epoch']}) on a validation split of {val['examples']:,} reviews cut from
`imdb_train` with seed {cfg.split_seed}. `imdb_test` was used once, for the figures below, never for a choice.

| split | accuracy | precision | recall | F1 | ROC AUC | calibration error |
|---|---:|---:|---:|---:|---:|---:|
| validation | {val['accuracy']:.4f} | {val['precision']:.4f} | {val['recall']:.4f} | {val['f1']:.4f} | {val['roc_auc']:.4f} | {val['calibration_error']:.4f} |
| test ({test['examples']:,}) | {test['accuracy']:.4f} | {test['precision']:.4f} | {test['recall']:.4f} | {test['f1']:.4f} | {test['roc_auc']:.4f} | {test['calibration_error']:.4f} |

Training took {metrics['training_seconds']:.0f} s on CPU.

**Limits.** Trained on movie reviews: accuracy drops on other domains (product reviews, tweets), and the score
distribution shifts; watch the drift metrics. English only: other scripts are scored, but meaninglessly. Sarcasm and
mixed reviews are often misread. Do not use it to make decisions about people.

**Config.**

```toml
{chr(10).join(f'{k} = {json.dumps(v)}' for k, v in asdict(cfg).items())}
```
"""


def run(cfg: TrainConfig, data: Path | str | None = None, out_dir: Path | str = "runs") -> Path:
    """The whole pipeline; returns the run folder."""
    train_rows, test_rows = load(data)
    train, val = split(train_rows, cfg)
    print(f"train {len(train[0]):,}  validation {len(val[0]):,}  test {len(test_rows):,}", flush=True)
    vectorizer, core = build(cfg, train[0])
    fitted = fit(cfg, vectorizer, core, train, val)
    model = end_to_end(cfg, vectorizer, core)
    scorer_fn = tf.function(lambda t: model(t, training=False))
    score = lambda texts: np.concatenate(  # noqa: E731
        [np.asarray(scorer_fn(tf.constant(texts[i : i + 1024]))).reshape(-1) for i in range(0, len(texts), 1024)]
    )
    val_scores = score(val[0])
    test_texts = [r.text for r in test_rows]
    test_labels = np.array([r.label for r in test_rows])
    metrics = {
        "config": asdict(cfg),
        "train_examples": len(train[0]),
        "validation": evaluate(val_scores, val[1]),
        "test": evaluate(score(test_texts), test_labels),
        "parameters": int(core.count_params()),
        **fitted,
    }
    folder = export(cfg, model, Path(out_dir), metrics, val_scores)
    # the artifact must score exactly as the model in memory did
    reloaded = load_scorer(folder).score(val[0][:64])
    if not np.allclose(reloaded, val_scores[:64], atol=1e-5):
        raise RuntimeError(f"exported model at {folder} does not reproduce its scores")
    print(f"validation accuracy {metrics['validation']['accuracy']:.4f}  test accuracy {metrics['test']['accuracy']:.4f}")
    print(f"wrote {folder}")
    return folder


def promote(run_folder: Path, default_folder: Path) -> None:
    """Make a run's artifact the committed default model (the folder is replaced whole)."""
    staging = default_folder.with_name(default_folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run_folder, staging)
    shutil.rmtree(default_folder, ignore_errors=True)
    staging.rename(default_folder)
    print(f"promoted {run_folder} to {default_folder}")
