"""Image augmentation and preprocessing layers for the transfer-learning lab.

- `build_mnist_augmentation()`: small random rotations, shifts and zooms of MNIST
  digits, active only in training: inside `fit()` (or `model(x, training=True)`)
  they transform the images; in `evaluate()`, `predict()` and `model(x)` they pass
  them through unchanged, so the same model can hold them.

  A pitfall this module avoids: Keras' random image layers declare
  `call(..., training=True)`, so a *direct call without* `training` (`model(x)`)
  augments, and Keras then hands `training=True` on to the layers after them in the
  same call (BatchNormalization normalizes with batch statistics and updates its
  moving averages). `AugmentationPipeline`, the `Sequential` returned here, defaults
  to `training=False` instead.
- `GrayscaleToRGB`: repeats a single gray channel three times, so that a one-channel
  image can enter a network pretrained on RGB images.
- `ImageNetNormalization`: `(image - mean) / std` per channel with the ImageNet
  statistics that torchvision's pretrained models were trained with. It expects
  images in [0, 1].
"""

import keras
from keras import ops

# A rotation factor is a fraction of a full turn: 0.08 is +/- 28.8 degrees.
DEFAULT_ROTATION = 0.08
# Translation and zoom factors are fractions of the image height/width.
DEFAULT_TRANSLATION = 0.1
DEFAULT_ZOOM = 0.1
# MNIST digits lie on a black (0) background: fill uncovered pixels with it, not with
# a reflection of the digit (Keras' default fill mode).
FILL_MODE = "constant"
FILL_VALUE = 0.0

RGB_CHANNELS = 3
# Per-channel mean and standard deviation of the ImageNet training images (RGB, [0, 1]),
# as used by torchvision's pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_factor(name, value):
    """Returns `value` as a float after checking that it lies in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def _layer_seed(seed, offset):
    """Returns a distinct seed per random layer, or None when `seed` is None."""
    return None if seed is None else seed + offset


def build_mnist_augmentation(
    rotation=DEFAULT_ROTATION, translation=DEFAULT_TRANSLATION, zoom=DEFAULT_ZOOM, seed=None
):
    """Builds the augmentation pipeline for MNIST digits.

    The layers are active only in training (inside `fit()`, or when called with
    `training=True`); otherwise, including a plain call `augmentation(images)`, the
    pipeline returns its input unchanged. To look at augmented digits, call
    `augmentation(images, training=True)`.

    Args:
        rotation: maximum rotation, as a fraction of a full turn (0.08 = 28.8 degrees).
            0 leaves the rotation layer out.
        translation: maximum shift, as a fraction of the height and of the width.
            0 leaves the translation layer out.
        zoom: maximum zoom in or out, as a fraction of the size. 0 leaves the zoom
            layer out.
        seed: optional integer; makes the random transformations repeatable.

    Returns:
        An `AugmentationPipeline` (a `keras.Sequential`) named "augmentation" with
        the layers `random_rotation`, `random_translation` and `random_zoom` (those
        with a non-zero factor).

    Raises:
        ValueError: if a factor is not in [0, 1) or `seed` is not an integer.
    """
    rotation = _check_factor("rotation", rotation)
    translation = _check_factor("translation", translation)
    zoom = _check_factor("zoom", zoom)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
    fill = {"fill_mode": FILL_MODE, "fill_value": FILL_VALUE}
    layers = []
    if rotation > 0:
        layers.append(
            keras.layers.RandomRotation(
                rotation, seed=_layer_seed(seed, 0), name="random_rotation", **fill
            )
        )
    if translation > 0:
        layers.append(
            keras.layers.RandomTranslation(
                translation,
                translation,
                seed=_layer_seed(seed, 1),
                name="random_translation",
                **fill,
            )
        )
    if zoom > 0:
        layers.append(
            keras.layers.RandomZoom(
                (-zoom, zoom), (-zoom, zoom), seed=_layer_seed(seed, 2), name="random_zoom", **fill
            )
        )
    return AugmentationPipeline(layers, name="augmentation")


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
