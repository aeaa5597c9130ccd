"""Load a model artifact and score batches of raw review texts.

An artifact is a folder::

    model.keras            the end-to-end Keras model: raw strings in, P(positive) out
    model_card.md          what it is, how it was trained, how well it does
    metrics.json           the training run's metrics
    reference_scores.json  its scores on reviews it did not train on (the reference for drift metrics)
    reference_inputs.json  what those reviews look like to the model: share of known n-grams, length, pooled vectors

The model version is the first 12 hex digits of the SHA-256 of ``model.keras``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings import SCORING_CHOICES
from model.keras_model import import_keras, import_tensorflow, load_keras_model, model_parts

# TensorFlow and Keras (about 530 MB resident once imported) are imported where a function needs them
# (model.keras_model), numba where compiled scoring is asked for: a worker that scores with the compiled path from its
# cached tables never imports TensorFlow, one that scores with TensorFlow never imports numba.

MODEL_FILE = "model.keras"


def model_version(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ModelArtifact:
    model_file: Path
    version: str

    @classmethod
    def at(cls, path: Path | str) -> ModelArtifact:
        """An artifact folder, or a ``.keras`` file of any name (its folder holds the other files)."""
        path = Path(path)
        file = path / MODEL_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no model artifact at {path} (expected {MODEL_FILE} in it)")
        return cls(model_file=file, version=model_version(file))

    @property
    def folder(self) -> Path:
        return self.model_file.parent

    def metrics(self) -> dict:
        path = self.folder / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def reference_scores(self) -> np.ndarray:
        path = self.folder / "reference_scores.json"
        if not path.exists():
            return np.empty(0, dtype=np.float32)
        return np.asarray(json.loads(path.read_text())["scores"], dtype=np.float32)

    def reference_inputs(self) -> dict | None:
        """The reference for input drift (see :func:`input_reference`), or None for an artifact made before it."""
        path = self.folder / "reference_inputs.json"
        return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Inspection:
    """A batch as the model sees it: the scores, and what input drift is measured on."""

    scores: np.ndarray  # P(positive), float32
    ngrams: np.ndarray  # n-grams of each text after cleaning (capped at the model's sequence length)
    known: np.ndarray  # of them, the ones in the vocabulary
    pooled: np.ndarray  # the pooled embedding the head scores, one row per text

    def known_shares(self) -> np.ndarray:
        """Of each text's n-grams, the share the model knows, rounded to 3 decimals (what events and tables
        carry); 0 for a text with no n-gram at all, which the model knows nothing of."""
        return np.round(self.known / np.maximum(self.ngrams, 1), 3)


def _inspector(keras_model):
    """One compiled call: raw texts -> scores, n-gram counts, known n-gram counts and pooled vectors."""
    tf = import_tensorflow()
    keras = import_keras()
    from model.layers import PADDING_ID, UNKNOWN_ID

    vectorizer, core, pooling = model_parts(keras_model)
    scores_and_pooled = keras.Model(core.input, [core.output, pooling.output])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], reduce_retracing=True)
    def inspect(texts):
        ids = vectorizer(texts)
        scores, pooled = scores_and_pooled(ids, training=False)
        ngrams = tf.reduce_sum(tf.cast(ids != PADDING_ID, tf.int32), axis=1)
        known = tf.reduce_sum(tf.cast((ids != PADDING_ID) & (ids != UNKNOWN_ID), tf.int32), axis=1)
        return tf.reshape(scores, [-1]), ngrams, known, pooled

    return inspect


class Scorer:
    """Scores a batch of raw texts: with the compiled path (``model.compiled``) when it is on, else in one compiled
    TensorFlow call. Both give the same numbers (within 1e-5); :attr:`scoring` says which one runs. The Keras model
    is loaded when something first needs it (the TensorFlow path, attributions), if it was not given."""

    def __init__(self, keras_model, version: str, fast=None, model_file: Path | None = None) -> None:
        self._keras_model = keras_model
        self._model_file = model_file
        self.version = version
        self.fast = fast
        self._predict = None
        self._inspect = None

    @property
    def keras_model(self):
        if self._keras_model is None:
            self._keras_model = load_keras_model(self._model_file)
        return self._keras_model

    def _tf_calls(self):
        if self._predict is None:
            tf = import_tensorflow()
            keras_model = self.keras_model
            self._predict = tf.function(
                lambda texts: keras_model(texts, training=False),
                input_signature=[tf.TensorSpec([None], tf.string)],
                reduce_retracing=True,
            )
            self._inspect = _inspector(keras_model)
        return self._predict, self._inspect

    @property
    def scoring(self) -> str:
        return "compiled" if self.fast is not None else "tensorflow"

    def score(self, texts: list[str]) -> np.ndarray:
        """P(positive) for each text, as float32 in [0, 1], in input order."""
        if not texts:
            return np.empty(0, dtype=np.float32)
        if self.fast is not None:
            return self.fast.score(texts).scores
        tf = import_tensorflow()
        out = self._tf_calls()[0](tf.constant(texts, dtype=tf.string))
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def inspect(self, texts: list[str]) -> Inspection:
        """The scores of :meth:`score` (the same numbers), with the inputs' n-gram counts and pooled vectors."""
        if not texts:
            empty = np.empty(0, dtype=np.int32)
            return Inspection(np.empty(0, dtype=np.float32), empty, empty, np.empty((0, 0), dtype=np.float32))
        if self.fast is not None:
            out = self.fast.score(texts)
            return Inspection(out.scores, out.ngrams, out.known, out.pooled)
        return self.inspect_tensorflow(texts)

    def inspect_tensorflow(self, texts: list[str]) -> Inspection:
        """:meth:`inspect` computed by the TensorFlow model itself, whichever path is on."""
        tf = import_tensorflow()
        scores, ngrams, known, pooled = self._tf_calls()[1](tf.constant(texts, dtype=tf.string))
        return Inspection(scores.numpy().astype(np.float32), ngrams.numpy(), known.numpy(), pooled.numpy())


def input_reference(scorer: Scorer, texts: list[str], source: str, batch: int = 512) -> dict:
    """What in-domain reviews look like to the model, for input drift: the share of their n-grams it knows, their
    length in n-grams, and the mean and spread of their pooled vectors."""
    parts = [scorer.inspect(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    ngrams = np.concatenate([p.ngrams for p in parts]).astype(np.float64)
    known = np.concatenate([p.known for p in parts]).astype(np.float64)
    pooled = np.concatenate([p.pooled for p in parts]).astype(np.float64)
    return {
        "source": source,
        "reviews": len(texts),
        "known_share": float(known.sum() / max(ngrams.sum(), 1.0)),
        "mean_log_ngrams": float(np.mean(np.log1p(ngrams))),
        "mean_ngrams": float(ngrams.mean()),
        "pooled_mean": [round(float(v), 6) for v in pooled.mean(axis=0)],
        "pooled_std": [round(float(v), 6) for v in pooled.std(axis=0)],
    }


def load_scorer(
    path: Path | str | ModelArtifact,
    scoring: str = "tensorflow",
    cache_dir: Path | None = None,
    build_in_child: bool = False,
    threads: int = 0,
) -> Scorer:
    """The artifact's scorer. ``scoring="compiled"`` reads the fast path's tables from ``cache_dir`` (they were
    checked against TensorFlow when they were built, for this model, this TensorFlow and this version of the fast
    path's code), or builds them, checks that they score the project's sample reviews and hostile texts as
    TensorFlow does, and keeps them. It falls back to TensorFlow with a warning when they cannot be built or do
    not agree. From cached tables, TensorFlow is not even imported until something asks for the Keras model.
    ``build_in_child`` builds and checks missing tables in a child process (``python -m model.compiled``), so that a
    long-running worker does not keep TensorFlow's memory (about 1 GB at its peak) for the tables' sake.
    ``threads`` (0: :func:`model.compiled.tables.default_threads`) is how many cores the compiled path spreads a batch
    over."""
    if scoring not in SCORING_CHOICES:
        raise ValueError(f"scoring must be one of {', '.join(SCORING_CHOICES)}, not {scoring!r}")
    artifact = path if isinstance(path, ModelArtifact) else ModelArtifact.at(path)
    if scoring == "compiled" and cache_dir is not None:
        from model.compiled.cache import load_cached

        fast = load_cached(artifact.version, cache_dir)
        if fast is None and build_in_child:
            _build_in_child(artifact, cache_dir)
            fast = load_cached(artifact.version, cache_dir)
        if fast is not None:
            if threads:
                fast.threads = threads
            return Scorer(None, artifact.version, fast=fast, model_file=artifact.model_file)
    scorer = Scorer(load_keras_model(artifact.model_file), artifact.version, model_file=artifact.model_file)
    if scoring == "compiled":
        from model.compiled.build import build_checked

        scorer.fast = build_checked(
            scorer.keras_model, scorer.version, cache_dir, lambda texts: scorer.inspect_tensorflow(texts).scores
        )
        if scorer.fast is not None and threads:
            scorer.fast.threads = threads
    return scorer


def load_configured_scorer(artifact: ModelArtifact, settings) -> Scorer:
    """The scorer as the worker and the page run it, from ``core.settings.Settings``: ``SENTIMENT_SCORING``,
    ``SENTIMENT_CACHE_DIR`` and ``SENTIMENT_SCORING_THREADS``, missing tables built in a child process."""
    return load_scorer(
        artifact,
        scoring=settings.scoring,
        cache_dir=settings.cache_dir,
        build_in_child=True,
        threads=settings.scoring_threads,
    )


def _build_in_child(artifact: ModelArtifact, cache_dir: Path) -> None:
    import logging

    why = build_tables_in_child(artifact, cache_dir)
    if why is not None:
        logging.getLogger("sentiment.model").warning(
            "compiled scoring is off (building its tables failed: %s): scoring with TensorFlow", why
        )


CHILD_NICENESS = 10  # the child that builds tables yields the CPU to the stream it runs beside


def build_tables_in_child(artifact: ModelArtifact, cache_dir: Path) -> str | None:
    """Build and check the compiled tables of ``artifact`` in a child process (``python -m model.compiled``, at a
    lower priority), unless they are in ``cache_dir`` already: TensorFlow and its memory stay in the child. Returns
    None when the tables are there, else why they are not (the child's last line)."""
    import logging
    import os
    import shutil
    import subprocess
    import sys

    from model.compiled.cache import cache_path

    if cache_path(artifact.version, cache_dir).exists():
        return None
    logging.getLogger("sentiment.model").info(
        "building the compiled scorer's tables for model %s in %s (once per model)", artifact.version, cache_dir
    )
    nice = [shutil.which("nice"), "-n", str(CHILD_NICENESS)] if shutil.which("nice") else []
    try:
        done = subprocess.run(
            [*nice, sys.executable, "-m", "model.compiled", str(artifact.model_file), str(cache_dir)],
            capture_output=True, text=True, timeout=900, env=os.environ.copy(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the child process failed: {exc}"
    if done.returncode != 0 or not cache_path(artifact.version, cache_dir).exists():
        return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
    return None
