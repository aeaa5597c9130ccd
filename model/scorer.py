"""Load a model artifact and score batches of raw review texts.

An artifact is a folder::

    model.keras            the end-to-end Keras model: raw strings in, P(positive) out
    model_card.md          what it is, how it was trained, how well it does
    metrics.json           the training run's metrics
    reference_scores.json  its scores on reviews it did not train on (the reference for drift metrics)

The model version is the first 12 hex digits of the SHA-256 of ``model.keras``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import model.cleaning  # noqa: E402,F401  (registers clean_text for deserialization)
import model.layers  # noqa: E402,F401  (registers the pooling layers)

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


class Scorer:
    """Scores a batch of raw texts in one compiled call."""

    def __init__(self, keras_model: keras.Model, version: str) -> None:
        self.keras_model = keras_model
        self.version = version
        self._predict = tf.function(
            lambda texts: keras_model(texts, training=False),
            input_signature=[tf.TensorSpec([None], tf.string)],
            reduce_retracing=True,
        )

    def score(self, texts: list[str]) -> np.ndarray:
        """P(positive) for each text, as float32 in [0, 1], in input order."""
        if not texts:
            return np.empty(0, dtype=np.float32)
        out = self._predict(tf.constant(texts, dtype=tf.string))
        return np.asarray(out, dtype=np.float32).reshape(-1)


def load_scorer(path: Path | str | ModelArtifact) -> Scorer:
    artifact = path if isinstance(path, ModelArtifact) else ModelArtifact.at(path)
    keras_model = keras.models.load_model(artifact.model_file, compile=False)
    return Scorer(keras_model, artifact.version)
