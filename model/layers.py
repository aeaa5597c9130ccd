"""The small layers of the pooled-embedding model that Keras does not ship.

They are registered, so a saved model loads with plain ``keras.models.load_model`` once this
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


@keras.saving.register_keras_serializable(package="sentiment", name="DistinctSum")
class DistinctSum(keras.layers.Layer):
    """The sum of one weight per n-gram over the distinct known n-grams of a review: the naive-Bayes branch.

    Each n-gram counts once however often it occurs (binarized features, as NB-SVM has them), so a review's logit
    does not grow with repetition, and neither padding nor [UNK] adds anything. The weights are fitted outside Keras
    (``training.naive_bayes``) and set whole; the layer is not trained by gradient descent.
    """

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.weight = self.add_weight(
            shape=(vocabulary_size,), initializer="zeros", trainable=False, name="ngram_weights"
        )

    def call(self, token_ids):
        ids = ops.sort(token_ids, axis=-1)
        first = ops.concatenate([ops.ones_like(ids[:, :1], dtype="bool"), ids[:, 1:] != ids[:, :-1]], axis=-1)
        counted = ops.logical_and(first, ids > UNKNOWN_ID)
        terms = ops.take(self.weight, ids) * ops.cast(counted, self.weight.dtype)
        return ops.sum(terms, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="sentiment", name="KnownAverage")
class KnownAverage(keras.layers.Layer):
    """The mean of one weight per n-gram over the known n-gram positions of a review (repeats included; 0 for a review
    with none): the context branch (``training.context``), the pooled branch's average taken of a scalar table.

    The positions are those the pooled branch averages over when it leaves unknown n-grams out: neither padding nor
    [UNK] counts. The weights are fitted outside Keras and set whole, as :class:`DistinctSum`'s are.
    """

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.weight = self.add_weight(
            shape=(vocabulary_size,), initializer="zeros", trainable=False, name="ngram_weights"
        )

    def call(self, token_ids):
        known = ops.cast(token_ids > UNKNOWN_ID, self.weight.dtype)
        total = ops.sum(ops.take(self.weight, token_ids) * known, axis=-1, keepdims=True)
        return total / ops.maximum(ops.sum(known, axis=-1, keepdims=True), 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}
