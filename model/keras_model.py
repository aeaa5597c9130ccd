"""The exported Keras model: importing Keras where a function needs it, loading the model, finding its parts.

TensorFlow and Keras (about 530 MB resident once imported) are imported by :func:`import_keras` when something first
needs them: a worker that scores with the compiled path from its cached tables never imports them.
"""

from __future__ import annotations

from pathlib import Path

from core.tensorflow_logs import quiet_tensorflow


def import_keras():
    """Keras (TensorFlow under it), with the project's cleaning function and layers registered for deserialization."""
    quiet_tensorflow()  # read once, when TensorFlow is first imported
    import keras

    import model.cleaning  # noqa: F401  (registers clean_text for deserialization)
    import model.layers  # noqa: F401  (registers the pooling layers)

    return keras


def import_tensorflow():
    """TensorFlow, imported as :func:`import_keras` does."""
    import_keras()
    import tensorflow as tf

    return tf


def load_keras_model(model_file: Path):
    return import_keras().models.load_model(model_file, compile=False)


def model_parts(keras_model):
    """The exported model's vectorizer (TextVectorization), its core (token ids -> score, a keras.Model) and the
    core's pooling layer."""
    keras = import_keras()
    from model.layers import MaskedAverage

    vectorizer = next(layer for layer in keras_model.layers if isinstance(layer, keras.layers.TextVectorization))
    core = next(layer for layer in keras_model.layers if isinstance(layer, keras.Model))
    pooling = next(
        layer for layer in core.layers if isinstance(layer, MaskedAverage | keras.layers.GlobalAveragePooling1D)
    )
    return vectorizer, core, pooling
