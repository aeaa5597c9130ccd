"""The two small layers of the pooled-embedding model that Keras does not ship.

Both are registered, so a saved model loads with plain ``keras.models.load_model`` once this
module is imported (``model.scorer`` imports it).
"""

from __future__ import annotations

import keras
from keras import ops

# TextVectorization's ids: 0 is padding, 1 the out-of-vocabulary token "[UNK]".
PADDING_ID = 0
UNKNOWN_ID = 1


@keras.saving.register_keras_serializable(package="sentiment", name="ForgetUnknown")
class ForgetUnknown(keras.layers.Layer):
    """Turn out-of-vocabulary ids into padding, so the average runs over known n-grams only.

    Without it, every n-gram outside the vocabulary shares one learned "[UNK]" vector, and the share
    of unknown n-grams in a review (which grows with the vocabulary cut, not with sentiment) pulls
    every average toward that one vector.
    """

    def call(self, token_ids):
        return ops.where(ops.equal(token_ids, UNKNOWN_ID), ops.zeros_like(token_ids), token_ids)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="sentiment", name="MaskedAverage")
class MaskedAverage(keras.layers.Layer):
    """The mean of the unmasked vectors; the zero vector when every position is masked.

    Keras' ``GlobalAveragePooling1D`` divides by the number of unmasked positions, which is 0 for a
    text with no known n-gram (a text in another script, say), and returns NaN.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, vectors, mask=None):
        if mask is None:
            return ops.mean(vectors, axis=1)
        weights = ops.expand_dims(ops.cast(mask, vectors.dtype), -1)
        total = ops.sum(vectors * weights, axis=1)
        count = ops.sum(weights, axis=1)
        return total / ops.maximum(count, 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
