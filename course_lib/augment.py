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

# The layers themselves live in course_lib.image_layers (see there); re-exported here.
from course_lib.image_layers import (  # noqa: F401
    IMAGENET_MEAN,
    IMAGENET_STD,
    RGB_CHANNELS,
    AugmentationPipeline,
    GrayscaleToRGB,
    ImageNetNormalization,
)

# A rotation factor is a fraction of a full turn: 0.08 is +/- 28.8 degrees.
DEFAULT_ROTATION = 0.08
# Translation and zoom factors are fractions of the image height/width.
DEFAULT_TRANSLATION = 0.1
DEFAULT_ZOOM = 0.1
# MNIST digits lie on a black (0) background: fill uncovered pixels with it, not with
# a reflection of the digit (Keras' default fill mode).
FILL_MODE = "constant"
FILL_VALUE = 0.0



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
