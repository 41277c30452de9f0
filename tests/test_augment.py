"""Tests for course_lib.augment: MNIST augmentation and the preprocessing layers."""

import course_lib  # noqa: F401  (torch backend before keras)
import keras
import numpy as np
import pytest

from course_lib.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationPipeline,
    GrayscaleToRGB,
    ImageNetNormalization,
    build_mnist_augmentation,
)
from course_lib.data import load_mnist

NUM_DIGITS = 32


@pytest.fixture(scope="module")
def digits():
    images, _ = load_mnist("test", limit=NUM_DIGITS)
    return images


def test_augmentation_layers_and_names():
    augmentation = build_mnist_augmentation(seed=1)
    names = [layer.name for layer in augmentation.layers]
    assert names == ["random_rotation", "random_translation", "random_zoom"]
    assert isinstance(augmentation.get_layer("random_rotation"), keras.layers.RandomRotation)
    assert isinstance(augmentation.get_layer("random_translation"), keras.layers.RandomTranslation)
    assert isinstance(augmentation.get_layer("random_zoom"), keras.layers.RandomZoom)
    # Uncovered pixels become background (0), not a reflection of the digit.
    for layer in augmentation.layers:
        assert layer.fill_mode == "constant" and layer.fill_value == 0.0


def test_zero_factor_leaves_the_layer_out():
    augmentation = build_mnist_augmentation(rotation=0.0, zoom=0.0)
    assert [layer.name for layer in augmentation.layers] == ["random_translation"]


@pytest.mark.parametrize(
    "arguments", [{"rotation": -0.1}, {"translation": 1.0}, {"zoom": "big"}, {"seed": 1.5}]
)
def test_invalid_arguments_raise(arguments):
    with pytest.raises(ValueError, match="Received"):
        build_mnist_augmentation(**arguments)


def test_augmentation_only_in_training(digits):
    augmentation = build_mnist_augmentation(seed=3)
    inference = keras.ops.convert_to_numpy(augmentation(digits, training=False))
    np.testing.assert_array_equal(inference, digits)
    training = keras.ops.convert_to_numpy(augmentation(digits, training=True))
    assert training.shape == digits.shape
    changed_per_image = np.abs(training - digits).reshape(NUM_DIGITS, -1).max(axis=1)
    # Some draws can be near-identity; most digits must move.
    assert np.mean(changed_per_image > 0.1) > 0.5
    assert training.min() >= -1e-6 and training.max() <= 1.0 + 1e-6


def test_direct_call_without_training_is_inference(digits):
    # Keras' random layers alone default to training=True; the pipeline does not.
    augmentation = build_mnist_augmentation(seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augmentation(digits)), digits)
    inputs = keras.Input(shape=(28, 28, 1))
    model = keras.Model(inputs, augmentation(inputs))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(digits)), digits)
    # The outer model's training flag reaches the nested random layers (as in fit()).
    trained = keras.ops.convert_to_numpy(model(digits, training=True))
    assert np.abs(trained - digits).max() > 0.1


def test_same_seed_repeats(digits):
    first = build_mnist_augmentation(seed=7)(digits, training=True)
    second = build_mnist_augmentation(seed=7)(digits, training=True)
    other = build_mnist_augmentation(seed=8)(digits, training=True)
    first, second, other = (keras.ops.convert_to_numpy(t) for t in (first, second, other))
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert np.abs(first - other).max() > 0.1


def test_grayscale_to_rgb(digits):
    rgb = keras.ops.convert_to_numpy(GrayscaleToRGB()(digits))
    assert rgb.shape == digits.shape[:-1] + (3,)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], digits[..., 0])


def test_grayscale_to_rgb_rejects_color_images():
    with pytest.raises(ValueError, match="one channel"):
        GrayscaleToRGB()(np.zeros((2, 8, 8, 3), dtype="float32"))


def test_imagenet_normalization_values():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 5, 5, 3)).astype("float32")
    normalized = keras.ops.convert_to_numpy(ImageNetNormalization()(images))
    expected = (images - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)


def test_imagenet_normalization_rejects_bad_statistics():
    with pytest.raises(ValueError, match="std"):
        ImageNetNormalization(mean=(0.5, 0.5), std=(0.2,))
    with pytest.raises(ValueError, match="positive"):
        ImageNetNormalization(mean=(0.5,), std=(0.0,))


def test_layers_serialization_round_trip():
    layer = ImageNetNormalization(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), name="norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ImageNetNormalization)
    assert restored.mean == layer.mean and restored.std == layer.std
    assert restored.name == "norm"
    gray = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(GrayscaleToRGB(name="gray"))
    )
    assert isinstance(gray, GrayscaleToRGB) and gray.name == "gray"


def test_model_with_augmentation_saves_and_loads(tmp_path, digits):
    inputs = keras.Input(shape=(28, 28, 1))
    x = build_mnist_augmentation(seed=11)(inputs)
    x = GrayscaleToRGB()(x)
    outputs = ImageNetNormalization()(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "preprocessing.keras"
    model.save(path)
    restored = keras.saving.load_model(path)

    augmentation = restored.get_layer("augmentation")
    assert isinstance(augmentation, AugmentationPipeline)
    assert [layer.name for layer in augmentation.layers] == [
        "random_rotation",
        "random_translation",
        "random_zoom",
    ]
    assert augmentation.get_layer("random_zoom").seed == 13
    assert isinstance(restored.layers[2], GrayscaleToRGB)
    assert isinstance(restored.layers[3], ImageNetNormalization)

    # Inference: no augmentation, the same deterministic preprocessing.
    expected = (np.repeat(digits, 3, axis=-1) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    inference = keras.ops.convert_to_numpy(restored(digits))
    np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(model(digits)), atol=1e-6)
    # Training: the restored augmentation is active.
    trained = keras.ops.convert_to_numpy(restored(digits, training=True))
    assert np.abs(trained - inference).max() > 0.1
