"""Adam whose dense update of a variable with a sparse gradient (the embedding's) is one fused pass, with the same
arithmetic as ``keras.optimizers.Adam``: the same weights, bit for bit (tests/test_training.py).

Keras' Adam makes the embedding's sparse gradient (``tf.IndexedSlices``) dense and updates the moments and weights of
all 800,000 x 8 rows at every step, one whole-table temporary per operation: a dozen 25 MB arrays a step, each
allocated, faulted in and freed: a pooled epoch of the default model took 86 s of CPU, 30 of them system time (9.5 M
page faults), and 51 s (3.6 system, 0.7 M faults) with this. Here the same per-element operations, in the same order,
run as one XLA-compiled loop over the table (training/TUNING.md, "Training time").

Same arithmetic: XLA would contract ``m + (g - m) * c`` into a fused multiply-add (one rounding instead of two, a last
bit apart from Keras' in 1 element of 10), so its CPU code is limited to AVX, which has no FMA instruction
(``--xla_cpu_max_isa=AVX``, added to ``XLA_FLAGS`` when this module is imported, before anything is compiled: the
flags are read at the first compile). Nothing else in the project compiles with XLA.
"""

from __future__ import annotations

import os

_NO_FMA = "--xla_cpu_max_isa=AVX"
if "xla_cpu_max_isa" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_NO_FMA}".strip()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402


def _dense_adam(variable, m, v, gradient, squares, alpha, one_minus_beta_1, one_minus_beta_2, epsilon):
    m_new = m + (gradient - m) * one_minus_beta_1
    v_new = v + (squares - v) * one_minus_beta_2
    m.assign(m_new)
    v.assign(v_new)
    variable.assign(variable - (m_new * alpha) / (tf.sqrt(v_new) + epsilon))


class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (without amsgrad or weight decay) whose update of a variable with a sparse gradient
    is one fused pass; other variables are updated by Keras' own code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # one compiled function per optimizer: a function traced for another model's variables would call them after
        # they are deleted (the refit builds a second model of the same shapes)
        self._fused_update = tf.function(_dense_adam, jit_compile=True)

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        # alpha as Adam.update_step computes it
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        index = self._get_variable_index(variable)
        # Adam densifies the gradient for gradient - m, and for square(gradient) - v it squares the slices, then
        # densifies them: where a row occurs twice in a batch, v gets the sum of the squares, and so it does here
        values = tf.cast(gradient.values, dtype)
        dense = tf.convert_to_tensor(tf.IndexedSlices(values, gradient.indices, gradient.dense_shape))
        squares = tf.convert_to_tensor(tf.IndexedSlices(tf.square(values), gradient.indices, gradient.dense_shape))
        self._fused_update(
            _tf_variable(variable), _tf_variable(self._momentums[index]), _tf_variable(self._velocities[index]),
            dense, squares, alpha,
            tf.constant(1 - self.beta_1, dtype), tf.constant(1 - self.beta_2, dtype), tf.constant(self.epsilon, dtype),
        )  # fmt: skip


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (the optimizer is handed either)."""
    return variable.value if isinstance(variable, keras.Variable) else variable
