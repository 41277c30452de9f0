"""Tests for course_lib.autoencoder: shapes, loss and errors.

The 2-D vs 5-D lesson on real MNIST is tested once, on the lecture demo notebook that trains
both autoencoders with this module (tests/test_lecture_demo.py).
"""


import numpy as np
import pytest

import course_lib  # noqa: F401  (selects the torch backend before keras)
import keras
from course_lib.autoencoder import build_autoencoder, reconstruction_error


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_shapes_and_output_range(input_shape, latent_dim):
    autoencoder, encoder, decoder = build_autoencoder(latent_dim, input_shape=input_shape)
    images = np.random.default_rng(0).random((4, *input_shape)).astype("float32")
    codes = keras.ops.convert_to_numpy(encoder(images))
    assert codes.shape == (4, latent_dim)
    decoded = keras.ops.convert_to_numpy(decoder(codes))
    assert decoded.shape == (4, *input_shape)
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(autoencoder(images)), decoded, rtol=1e-5, atol=1e-6
    )
    assert any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in decoder.layers)


def _channels_last_autoencoder(input_shape, latent_dim):
    """The course autoencoder's layers from plain Keras layers, channels-last throughout."""
    height, width, channels = input_shape
    images = keras.Input(shape=input_shape)
    x = images
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Dense(latent_dim)(keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x)))
    x = keras.layers.Dense(4 * 4 * 128, activation="relu")(keras.layers.Dense(128, activation="relu")(x))
    x = keras.layers.Reshape((height // 8, width // 8, 128))(x)
    for filters in (64, 32):
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(images, x)


def test_channels_first_stacks_compute_what_channels_last_ones_do():
    """Same weights, same NHWC images: same codes and reconstructions (float rounding)."""
    input_shape, latent_dim = (32, 32, 3), 4
    autoencoder, _, _ = build_autoencoder(latent_dim, input_shape=input_shape)
    twin = _channels_last_autoencoder(input_shape, latent_dim)
    twin.set_weights(autoencoder.get_weights())
    images = np.random.default_rng(3).random((4, *input_shape)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(autoencoder(images)), keras.ops.convert_to_numpy(twin(images)),
        rtol=1e-5, atol=1e-6,
    )


def test_compiled_with_mean_squared_error():
    autoencoder, _, _ = build_autoencoder(2)
    images = np.random.default_rng(1).random((16, 28, 28, 1)).astype("float32")
    evaluated = autoencoder.evaluate(images, images, verbose=0, batch_size=16)
    assert evaluated == pytest.approx(reconstruction_error(autoencoder, images), rel=1e-5)


def test_reconstruction_error_is_the_mean_squared_error_per_pixel():
    autoencoder, _, _ = build_autoencoder(3)
    images = np.random.default_rng(2).random((10, 28, 28, 1)).astype("float32")
    reconstructions = autoencoder.predict(images, verbose=0)
    expected = np.mean((images - reconstructions) ** 2)
    error = reconstruction_error(autoencoder, images, batch_size=3)
    assert error == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((2, (28, 28)), r"input_shape=\(28, 28\)"),
        ((2, (30, 28, 1)), r"input_shape=\(30, 28, 1\)"),
        ((0, (28, 28, 1)), r"latent_dim=0"),
        (("2", (28, 28, 1)), r"latent_dim='2'"),
    ],
)
def test_bad_arguments_are_echoed(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_autoencoder(*arguments)


def test_reconstruction_error_rejects_bad_images():
    autoencoder, _, _ = build_autoencoder(2)
    with pytest.raises(ValueError, match=r"images.shape=\(28, 28\)"):
        reconstruction_error(autoencoder, np.zeros((28, 28)))

