"""Recording what each phase of a fine-tuning schedule really trains (lab 2).

`ScheduleRecorder` is a Keras callback: passed to one phase's `fit()`, it writes in
`schedule[phase]` the optimizer's learning rate, how many weights of the backbone, of
its BatchNormalization layers and of the head were trainable, how many epochs ran, and
how much the backbone's kernels and BN parameters/statistics changed. The notebook and
the grader read these records; the student does not write them.
"""

import keras
import numpy as np

from course_lib.cnn import batch_norm_layers

BACKBONE_NAME = "backbone"


def largest_change(before, after):
    """The largest absolute difference between two lists of arrays (0.0 for none).

    Args:
        before: a list of numpy arrays.
        after: a list of numpy arrays of the same shapes.

    Returns:
        A float.

    Raises:
        ValueError: if the two lists differ in length.
    """
    if len(before) != len(after):
        raise ValueError(f"Expected two lists of the same length. Received: {len(before)} and {len(after)}")
    return max((float(np.max(np.abs(a - b))) for a, b in zip(before, after)), default=0.0)


class ScheduleRecorder(keras.callbacks.Callback):
    """Records what one training phase trains, in `schedule[phase]`.

    Args:
        schedule: the dict that receives the record (one key per phase).
        phase: the name of the phase, e.g. "frozen" or "finetune".

    Raises:
        TypeError: if `schedule` is not a dict or `phase` not a string.
    """

    def __init__(self, schedule, phase):
        super().__init__()
        if not isinstance(schedule, dict):
            raise TypeError(f"`schedule` should be a dict. Received: {type(schedule).__name__}")
        if not isinstance(phase, str):
            raise TypeError(f"`phase` should be a string. Received: {phase!r}")
        self.schedule = schedule
        self.phase = phase
        self.start = None

    def _backbone(self):
        try:
            return self.model.get_layer(BACKBONE_NAME)
        except ValueError as error:
            raise ValueError(
                f"ScheduleRecorder needs a model with a sub-model named '{BACKBONE_NAME}' "
                "(course_lib.resnet.build_mnist_resnet18 builds one)."
            ) from error

    def _backbone_arrays(self):
        backbone = self._backbone()
        kernels = [keras.ops.convert_to_numpy(layer.kernel)
                   for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
        norms = [keras.ops.convert_to_numpy(variable)
                 for layer in batch_norm_layers(backbone) for variable in layer.weights]
        return kernels, norms

    def on_train_begin(self, logs=None):
        backbone = self._backbone()
        self.start = self._backbone_arrays()
        self.schedule[self.phase] = {
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "trainable_backbone_weights": len(backbone.trainable_weights),
            "trainable_batch_norm_weights": sum(
                len(layer.trainable_weights) for layer in batch_norm_layers(backbone)
            ),
            "trainable_head_weights": len(self.model.trainable_weights) - len(backbone.trainable_weights),
            "epochs": 0,
        }

    def on_epoch_end(self, epoch, logs=None):
        self.schedule[self.phase]["epochs"] += 1

    def on_train_end(self, logs=None):
        kernels, norms = self._backbone_arrays()
        self.schedule[self.phase]["backbone_kernel_change"] = largest_change(self.start[0], kernels)
        self.schedule[self.phase]["batch_norm_change"] = largest_change(self.start[1], norms)


class WeightAverage(keras.callbacks.Callback):
    """Evaluates and keeps an exponential moving average of the trainable weights.

    After the t-th training batch of `fit()`, `average = m * average + (1 - m) * weights`
    with `m = min(momentum, t / (t + 1))`: until it spans about `1 / (1 - momentum)` steps
    the average is the plain mean of the weights so far (those `fit()` starts from
    included), so that a short run is not held back at its start. Validation at the end of each
    epoch, and the callbacks that follow this one in the list (for example
    `EarlyStopping(restore_best_weights=True)`, which then keeps the best *averaged*
    epoch), see the averaged weights; the optimizer goes on from the raw ones. When
    `fit()` ends, the model holds the averaged weights. Averaging smooths the
    epoch-to-epoch swings of fine-tuning on a few thousand digits (lab 2), like
    `keras.optimizers.Optimizer(use_ema=True)` with `keras.callbacks.SwapEMAWeights`,
    but with any optimizer the student compiles.

    Args:
        momentum: the weight of the past in the average, in [0, 1). 0 keeps the raw
            weights.

    Raises:
        ValueError: if `momentum` is not a number in [0, 1).
    """

    def __init__(self, momentum):
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"`momentum` should be a number in [0, 1). Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.average = None
        self.raw = None
        self.updates = 0

    def _variables(self):
        return self.model.trainable_variables

    def _detached(self):
        # Without the training graph: the average must not hold on to it.
        return [keras.ops.stop_gradient(variable.value) for variable in self._variables()]

    def _values(self):
        """Copies of the current weights (assign() would change views of them)."""
        return [keras.ops.copy(value) for value in self._detached()]

    def _use_average(self):
        """Puts the averaged weights in the model (keeping the raw ones aside)."""
        if self.raw is None:
            self.raw = self._values()
            for variable, average in zip(self._variables(), self.average):
                variable.assign(average)

    def _use_raw(self):
        """Puts the raw weights back in the model, for the optimizer to go on from."""
        if self.raw is not None:
            for variable, raw in zip(self._variables(), self.raw):
                variable.assign(raw)
            self.raw = None

    def on_train_begin(self, logs=None):
        self.average = self._values()
        self.raw = None
        self.updates = 0

    def on_train_batch_end(self, batch, logs=None):
        self.updates += 1
        momentum = min(self.momentum, self.updates / (self.updates + 1))
        self.average = [
            keras.ops.add(keras.ops.multiply(average, momentum),
                          keras.ops.multiply(value, 1.0 - momentum))
            for value, average in zip(self._detached(), self.average)
        ]

    def on_test_begin(self, logs=None):
        # Called by fit() before validation; evaluate() outside fit() has its own callbacks.
        if self.average is not None:
            self._use_average()

    def on_epoch_begin(self, epoch, logs=None):
        self._use_raw()

    def on_epoch_end(self, epoch, logs=None):
        self._use_average()

    def on_train_end(self, logs=None):
        self._use_average()
        self.raw = None
        self.average = None
