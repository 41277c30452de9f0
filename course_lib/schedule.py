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
