"""A convolutional autoencoder, and the conv stacks it shares with `course_lib.vae`.

Encoder: stride-2 `Conv2D` layers halve the image until it is small (7x7 for MNIST,
4x4 for 32x32 images), then `Dense` layers map the features to the latent code.
Decoder: the mirror image, `Dense` layers -> reshape -> stride-2 `Conv2DTranspose`
layers that double the size back (7x7x64 -> 14x14x32 -> 28x28x1 for MNIST); the last
one has a sigmoid, so every output pixel lies in [0, 1] like the input pixels.

Channels-first inside, NHWC outside (see `course_lib.layout` for why): images enter
and leave as `(batch, height, width, channels)`; the encoder's convolutions compute
channels-first between `to_channels_first` and `to_channels_last` (before `Flatten`),
and the decoder reshapes to NHWC, moves the channels first for its transposed
convolutions and back in its last layer (`image`).

Example:

```python
import course_lib
from course_lib.autoencoder import build_autoencoder, reconstruction_error

autoencoder, encoder, decoder = build_autoencoder(latent_dim=2)
autoencoder.fit(train_images, train_images, epochs=3, batch_size=128)
print(reconstruction_error(autoencoder, test_images))
```
"""

import numpy as np

import keras  # course_lib/__init__.py has already selected the torch backend
from keras import layers

from course_lib.layout import CHANNELS_FIRST, to_channels_first, to_channels_last

# Filters of the stride-2 stages, in order; an image gets as many stages as it can halve
# cleanly while staying at least MIN_FEATURE_SIZE pixels wide (28 -> 14 -> 7: two stages;
# 32 -> 16 -> 8 -> 4: three stages).
STAGE_FILTERS = (32, 64, 128)
MIN_STAGES = 2
MIN_FEATURE_SIZE = 4
KERNEL_SIZE = 3
HIDDEN_UNITS = 128
DEFAULT_INPUT_SHAPE = (28, 28, 1)
# After 3 epochs on 6,000 MNIST digits (batch 128), with 1e-3 both the 2-D and the 5-D
# model still sit near the "average digit" plateau (test MSE 0.063 and 0.059, seed 0);
# with 3e-3 the 5-D model leaves it (0.040 to 0.047 over 3 seeds, 2-D: 0.058).
DEFAULT_LEARNING_RATE = 3e-3
DEFAULT_BATCH_SIZE = 256


def _stages_for_size(size):
    """Number of times `size` halves exactly while staying >= MIN_FEATURE_SIZE."""
    stages = 0
    while size % 2 == 0 and size // 2 >= MIN_FEATURE_SIZE and stages < len(STAGE_FILTERS):
        size //= 2
        stages += 1
    return stages


def validate_image_shape(image_shape, argument_name="input_shape"):
    """Checks an image shape `(height, width, channels)` and returns it as a tuple of ints.

    Args:
        image_shape: the shape to check.
        argument_name: the name used in the error message.

    Returns:
        `(height, width, channels)`.

    Raises:
        ValueError: if it is not 3 positive ints, or if height or width cannot be halved
            at least `MIN_STAGES` times (e.g. 28, 32, 64 work; 30 does not).
    """
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(size, (int, np.integer)) and size > 0 for size in image_shape)
    ):
        raise ValueError(
            f"`{argument_name}` must be (height, width, channels) with positive ints. "
            f"Received: {argument_name}={image_shape!r}"
        )
    height, width, _ = (int(size) for size in image_shape)
    if min(_stages_for_size(height), _stages_for_size(width)) < MIN_STAGES:
        raise ValueError(
            f"Height and width of `{argument_name}` must be divisible by "
            f"{2 ** MIN_STAGES} and at least {MIN_FEATURE_SIZE * 2 ** MIN_STAGES} "
            f"(e.g. 28 or 32). Received: {argument_name}={tuple(image_shape)!r}"
        )
    return tuple(int(size) for size in image_shape)


def validate_latent_dim(latent_dim):
    """Returns `latent_dim` as an int; raises ValueError unless it is a positive int."""
    is_int = isinstance(latent_dim, (int, np.integer)) and not isinstance(latent_dim, bool)
    if not is_int or latent_dim < 1:
        raise ValueError(
            f"`latent_dim` must be a positive int. Received: latent_dim={latent_dim!r}"
        )
    return int(latent_dim)


def stage_filters(image_shape):
    """Filters of the stride-2 stages used for images of `image_shape` (validated)."""
    height, width, _ = validate_image_shape(image_shape)
    stages = min(_stages_for_size(height), _stages_for_size(width))
    return STAGE_FILTERS[:stages]


def encoder_features(image_inputs, image_shape):
    """Stride-2 `Conv2D` stages, then a `Dense` hidden layer (functional API).

    Args:
        image_inputs: a `keras.Input` of shape `image_shape`.
        image_shape: `(height, width, channels)`.

    Returns:
        The hidden feature tensor, shape `(batch, HIDDEN_UNITS)`.
    """
    features = to_channels_first(image_inputs)
    for filters in stage_filters(image_shape):
        features = _stride2_stage(layers.Conv2D, filters, "relu")(features)
    features = layers.Flatten()(to_channels_last(features))
    return layers.Dense(HIDDEN_UNITS, activation="relu")(features)


def _stride2_stage(layer_class, filters, activation, name=None):
    """One stride-2, "same"-padded stage computed channels-first (Conv2D or Conv2DTranspose)."""
    return layer_class(filters, KERNEL_SIZE, strides=2, padding="same", activation=activation,
                       data_format=CHANNELS_FIRST, name=name)


def decoder_outputs(latent_inputs, image_shape):
    """`Dense` -> reshape -> stride-2 `Conv2DTranspose` stages, the last with a sigmoid.

    Args:
        latent_inputs: a `keras.Input` of shape `(latent_dim,)`.
        image_shape: `(height, width, channels)` of the images to produce.

    Returns:
        The image tensor, shape `(batch, height, width, channels)`, values in [0, 1].
    """
    height, width, channels = validate_image_shape(image_shape, "output_shape")
    filters_per_stage = stage_filters(image_shape)
    shrink = 2 ** len(filters_per_stage)
    start_shape = (height // shrink, width // shrink, filters_per_stage[-1])

    features = layers.Dense(HIDDEN_UNITS, activation="relu")(latent_inputs)
    features = layers.Dense(int(np.prod(start_shape)), activation="relu")(features)
    features = layers.Reshape(start_shape)(features)
    features = to_channels_first(features)
    # Mirror of the encoder: 7x7x64 -> 14x14x32 -> 28x28x1 for MNIST.
    for filters in reversed(filters_per_stage[:-1]):
        features = _stride2_stage(layers.Conv2DTranspose, filters, "relu")(features)
    features = _stride2_stage(layers.Conv2DTranspose, channels, "sigmoid", name="image_conv")(features)
    return to_channels_last(features, name="image")


def build_autoencoder(
    latent_dim, input_shape=DEFAULT_INPUT_SHAPE, learning_rate=DEFAULT_LEARNING_RATE
):
    """Builds and compiles a convolutional autoencoder.

    The model is compiled with Adam and the mean squared error
    `mean over pixels of (x - x_hat)^2`, i.e. `||x - x_hat||^2 / num_pixels`.

    Args:
        latent_dim: size of the latent code, a positive int.
        input_shape: `(height, width, channels)`, by default MNIST's `(28, 28, 1)`.
        learning_rate: learning rate of the Adam optimizer.

    Returns:
        A tuple `(autoencoder, encoder, decoder)` of `keras.Model`s; `autoencoder` maps
        images to reconstructions, `encoder` images to codes `(batch, latent_dim)`,
        `decoder` codes to images.

    Raises:
        ValueError: on an invalid `latent_dim` or `input_shape`.
    """
    latent_dim = validate_latent_dim(latent_dim)
    input_shape = validate_image_shape(input_shape)

    image_inputs = keras.Input(shape=input_shape, name="image")
    codes = layers.Dense(latent_dim, name="code")(encoder_features(image_inputs, input_shape))
    encoder = keras.Model(image_inputs, codes, name="encoder")

    latent_inputs = keras.Input(shape=(latent_dim,), name="code")
    images = decoder_outputs(latent_inputs, input_shape)
    decoder = keras.Model(latent_inputs, images, name="decoder")

    autoencoder_inputs = keras.Input(shape=input_shape, name="image")
    autoencoder = keras.Model(
        autoencoder_inputs, decoder(encoder(autoencoder_inputs)), name="autoencoder"
    )
    autoencoder.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="mean_squared_error"
    )
    return autoencoder, encoder, decoder


def reconstruction_error(autoencoder, images, batch_size=DEFAULT_BATCH_SIZE):
    """Mean squared error per pixel between `images` and their reconstructions.

    Args:
        autoencoder: a model that maps images to reconstructions of the same shape.
        images: array `(num_images, height, width, channels)` with values in [0, 1].
        batch_size: images per forward pass.

    Returns:
        A python float, `mean((images - autoencoder(images))**2)` over all pixels.

    Raises:
        ValueError: if `images` is not a non-empty 4-D array.
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            "`images` must be a non-empty array (num_images, height, width, channels). "
            f"Received: images.shape={images.shape}"
        )
    reconstructions = autoencoder.predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean((images - reconstructions) ** 2))
