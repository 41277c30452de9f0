"""Batch normalization on torch's fused kernel, with Keras' semantics (course-built models).

`keras.layers.BatchNormalization` computes batch normalization from elementwise ops
(`ops.moments`: mean and mean of squares; then subtract, rsqrt, multiply, add), and
autograd goes back through each of them. On the torch backend that is about twice the
operator calls of torch's own fused kernel: measured on lab 1's CNN (BENCHMARKS.md), the
BN model stays 1.4x slower than its plain-PyTorch twin even when it computes
channels-first. `BatchNormalization` here is the same layer (a subclass: same
arguments, weights, config, and `isinstance(layer, keras.layers.BatchNormalization)`)
whose `call` runs torch's fused kernel when it can:

- training (`training=True` and `trainable`): `torch.native_batch_norm` normalizes with
  the statistics of the batch, in one kernel forward and one backward (gradients flow
  through the batch mean and variance, as in Keras), and returns the batch mean and
  `1 / sqrt(variance + epsilon)`. The moving statistics are then updated the Keras way,
  `moving = moving * momentum + batch * (1 - momentum)`, with the *biased* batch
  variance (divided by n, as Keras' `ops.moments`). torch's own running-variance update
  uses the unbiased one (divided by n - 1), so the layer never hands its moving
  statistics to torch in training: it recovers the biased variance from the returned
  inverse standard deviation. That recovery is exact up to float32 rounding of
  `variance + epsilon`, the only form in which the moving variance is ever used.
- inference (otherwise, including `trainable=False` inside `fit()`, which lab 2's
  fine-tuning relies on): `torch.nn.functional.batch_norm` with the moving statistics,
  which it leaves unchanged.

The fused path needs the torch backend, the channels on axis 1 (channels-first images,
or `(batch, features)`), float32 inputs and computation, no mask and no `renorm`;
otherwise the layer runs `keras.layers.BatchNormalization.call` unchanged. It adds no
argument, so the parent's `get_config` describes it completely.

The class keeps Keras' name `BatchNormalization` on purpose: Keras addresses the arrays
of a `.weights.h5` file by the class name of each layer (`batch_normalization_3/vars/0`),
so weight files written before course models used this layer (e.g. by
`scripts/convert_resnet18_weights.py`) still load, and `model.summary()` shows the same
layer types. It is registered as "course_lib>BatchNormalization", so a saved `.keras`
model reloads into this class (`safe_mode=True` included) wherever this module is
imported: the grader's probe process imports it (`autograder/probes/runtime.py`).
"""

import keras

FUSED_AXIS = 1
FUSED_DTYPE = "float32"


def _torch():
    import torch

    return torch


@keras.saving.register_keras_serializable(package="course_lib")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with torch's fused kernel when possible.

    Same arguments, weights and behaviour as `keras.layers.BatchNormalization` (see the
    module docstring for when the fused path applies and why it matches Keras). Use
    `axis=1` on channels-first inputs to get the fused path.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        torch = _torch()
        gamma = self.gamma.value if self.scale else None
        beta = self.beta.value if self.center else None
        if training and self.trainable:
            outputs, mean, inverse_std = torch.native_batch_norm(
                inputs, gamma, beta, None, None, True, 0.0, self.epsilon
            )
            self._update_moving_statistics(mean, inverse_std)
            return outputs
        return torch.nn.functional.batch_norm(
            inputs,
            self.moving_mean.value,
            self.moving_variance.value,
            gamma,
            beta,
            training=False,
            eps=self.epsilon,
        )

    def _fusable(self, inputs, mask):
        """Whether torch's fused kernel computes exactly what the parent's `call` would."""
        return (
            keras.backend.backend() == "torch"
            and mask is None
            and not self.renorm
            and len(inputs.shape) >= 2
            and self.axis % len(inputs.shape) == FUSED_AXIS
            and self.compute_dtype == FUSED_DTYPE
            and keras.backend.standardize_dtype(inputs.dtype) == FUSED_DTYPE
        )

    def _update_moving_statistics(self, mean, inverse_std):
        """Keras' update, `moving * momentum + batch * (1 - momentum)`, biased variance."""
        torch = _torch()
        with torch.no_grad():
            # float64, so that only the float32 rounding of variance + epsilon remains.
            variance = inverse_std.double().pow(-2.0).sub(self.epsilon).clamp_min(0.0)
            variance = variance.to(mean.dtype)
            momentum = self.momentum
            self.moving_mean.assign(
                self.moving_mean.value * momentum + mean * (1.0 - momentum)
            )
            self.moving_variance.assign(
                self.moving_variance.value * momentum + variance * (1.0 - momentum)
            )
