"""The course's image layers that trained models hold (registered, so saved models reload).

- `AugmentationPipeline`: a `keras.Sequential` of random layers, inactive unless training.
- `GrayscaleToRGB`: repeats a single gray channel three times, so that a one-channel
  image can enter a network pretrained on RGB images.
- `ImageNetNormalization`: `(image - mean) / std` per channel with the ImageNet
  statistics that torchvision's pretrained models were trained with (images in [0, 1]).

They live apart from `course_lib.augment` (which builds the lab's reference augmentation), so
that the grader can load a student's saved model without showing that reference.
"""

import keras
from keras import ops

RGB_CHANNELS = 3
# Per-channel mean and standard deviation of the ImageNet training images (RGB, [0, 1]),
# as used by torchvision's pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="course_lib")
class AugmentationPipeline(keras.Sequential):
    """A `keras.Sequential` of random layers that is inactive unless training.

    Identical to `keras.Sequential` except that `training` defaults to False: a
    direct call without `training` (and outside `fit()`) returns its inputs unchanged
    and tells the layers after it (in the same model call) that this is inference.
    Inside `fit()` or with `training=True` the random layers transform the images.
    """

    def call(self, inputs, training=False, mask=None, **kwargs):
        return super().call(inputs, training=training, mask=mask, **kwargs)


@keras.saving.register_keras_serializable(package="course_lib")
class GrayscaleToRGB(keras.layers.Layer):
    """Repeats the single channel of gray images three times: `(..., 1)` -> `(..., 3)`.

    A network pretrained on RGB images expects three channels; a gray pixel is the
    RGB colour with three equal values.
    """

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(
                "GrayscaleToRGB expects images with one channel (last axis of size 1). "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        return ops.repeat(inputs, RGB_CHANNELS, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (RGB_CHANNELS,)


@keras.saving.register_keras_serializable(package="course_lib")
class ImageNetNormalization(keras.layers.Layer):
    """Normalizes RGB images in [0, 1] per channel: `(image - mean) / std`.

    Args:
        mean: per-channel means, ImageNet's by default.
        std: per-channel standard deviations, ImageNet's by default.
        **kwargs: base layer arguments (`name`, `dtype`...).

    Raises:
        ValueError: if `mean` and `std` differ in length, or a std is not positive.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        mean = tuple(float(value) for value in mean)
        std = tuple(float(value) for value in std)
        if len(mean) != len(std):
            raise ValueError(
                f"`mean` and `std` need one value per channel each. "
                f"Received: mean={mean}, std={std}"
            )
        if min(std) <= 0:
            raise ValueError(f"Every `std` value must be positive. Received: std={std}")
        self.mean = mean
        self.std = std

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(
                f"ImageNetNormalization has statistics for {len(self.mean)} channels but "
                f"the images have {input_shape[-1]}. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (ops.cast(inputs, self.compute_dtype) - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": list(self.mean), "std": list(self.std)})
        return config
