"""Other model versions for the model store's tests, made from the default cheaply: the same Keras model with its
last layer's bias moved (scores shift, labels mostly stay) or its output flipped (the pooled branch's last layer and
the naive-Bayes branch negated: labels inverted, below any floor)."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.settings import DEFAULT_MODEL


def variant(dest: Path, *, bias_shift: float = 0.0, flip: bool = False, source: Path = DEFAULT_MODEL) -> Path:
    """A copy of the default artifact in ``dest`` whose model.keras differs: the last Dense layer's bias moved by
    ``bias_shift``, and with ``flip`` its kernel and bias negated (P(positive) becomes P(negative))."""
    from model.keras_model import import_keras, load_keras_model

    shutil.copytree(source, dest)
    model = load_keras_model(dest / "model.keras")
    last = _dense_layers(model, import_keras())[-1]  # the output layer, whatever the layers before it are
    kernel, bias = last.get_weights()
    if flip:
        kernel, bias = -kernel, -bias
        for branch in _naive_bayes_layers(model):  # the other half of the logit, when the model has it
            branch.set_weights([-w for w in branch.get_weights()])
    last.set_weights([kernel, bias + bias_shift])
    (dest / "model.keras").unlink()
    model.save(dest / "model.keras")
    bind_metrics(dest)
    return dest


def bind_metrics(folder: Path) -> None:
    """Name the folder's model.keras in its metrics.json, as training does (the copied figures are the default's)."""
    import hashlib
    import json

    metrics_file = folder / "metrics.json"
    digest = hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest()
    metrics = json.loads(metrics_file.read_text()) | {"model_sha256": digest, "model_version": digest[:12]}
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")


def _dense_layers(layer, keras) -> list:
    found = []
    for child in getattr(layer, "layers", []):
        found += [child] if isinstance(child, keras.layers.Dense) else _dense_layers(child, keras)
    return found


def _naive_bayes_layers(layer) -> list:
    from model.layers import DistinctSum, KnownAverage

    found = []
    for child in getattr(layer, "layers", []):  # the naive-Bayes branch, and the context branch (issue 29) if any
        found += [child] if isinstance(child, DistinctSum | KnownAverage) else _naive_bayes_layers(child)
    return found
