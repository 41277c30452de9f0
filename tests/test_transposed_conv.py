"""Tests for course_lib.transposed_conv: the lecture example, numpy vs Keras, errors."""

import numpy as np
import pytest

import course_lib  # noqa: F401  (selects the torch backend before keras)
from course_lib.transposed_conv import (
    LECTURE_INPUT,
    LECTURE_KERNEL,
    LECTURE_OUTPUT,
    keras_transposed_conv,
    transposed_conv2d_numpy,
)

FLOAT32_TOLERANCE = 1e-4


def test_lecture_example_numpy():
    outputs = transposed_conv2d_numpy(LECTURE_INPUT, LECTURE_KERNEL, strides=1, padding="valid")
    np.testing.assert_array_equal(outputs, np.asarray(LECTURE_OUTPUT, dtype="float64"))


def test_lecture_example_keras():
    outputs = keras_transposed_conv(LECTURE_INPUT, LECTURE_KERNEL, strides=1, padding="valid")
    assert outputs.shape == (3, 3)
    np.testing.assert_array_equal(outputs, np.asarray(LECTURE_OUTPUT, dtype="float32"))


def test_lecture_example_is_not_flipped():
    # A flipped kernel would give another answer: guards against a flip in either function.
    flipped = np.flip(np.asarray(LECTURE_KERNEL), axis=(0, 1))
    assert not np.array_equal(transposed_conv2d_numpy(LECTURE_INPUT, flipped), LECTURE_OUTPUT)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
def test_numpy_matches_keras_multichannel(kernel_size, strides, padding):
    rng = np.random.default_rng(kernel_size * 100 + strides * 10 + len(padding))
    inputs = rng.normal(size=(2, 5, 4, 3))
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 2))
    expected = keras_transposed_conv(inputs, kernel, strides=strides, padding=padding)
    outputs = transposed_conv2d_numpy(inputs, kernel, strides=strides, padding=padding)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, atol=FLOAT32_TOLERANCE, rtol=FLOAT32_TOLERANCE)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_numpy_matches_keras_rectangular_kernel_and_strides(padding):
    rng = np.random.default_rng(7)
    inputs = rng.normal(size=(4, 6, 2))
    kernel = rng.normal(size=(3, 2, 2, 4))
    expected = keras_transposed_conv(inputs, kernel, strides=(2, 3), padding=padding)
    outputs = transposed_conv2d_numpy(inputs, kernel, strides=(2, 3), padding=padding)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, atol=FLOAT32_TOLERANCE, rtol=FLOAT32_TOLERANCE)


@pytest.mark.parametrize(
    "strides, padding, expected_size",
    [(1, "valid", 7), (2, "valid", 11), (3, "valid", 15), (2, "same", 10), (3, "same", 15)],
)
def test_output_size_formula(strides, padding, expected_size):
    outputs = transposed_conv2d_numpy(np.ones((5, 5)), np.ones((3, 3)), strides, padding)
    assert outputs.shape == (expected_size, expected_size)


def test_single_channel_image_with_two_output_channels():
    kernel = np.stack([np.asarray(LECTURE_KERNEL), -np.asarray(LECTURE_KERNEL)], axis=-1)
    outputs = transposed_conv2d_numpy(LECTURE_INPUT, kernel[:, :, np.newaxis, :])
    assert outputs.shape == (3, 3, 2)
    np.testing.assert_array_equal(outputs[..., 0], LECTURE_OUTPUT)
    np.testing.assert_array_equal(outputs[..., 1], -np.asarray(LECTURE_OUTPUT))


@pytest.mark.parametrize("function", [transposed_conv2d_numpy, keras_transposed_conv])
def test_bad_input_rank_names_the_shape(function):
    with pytest.raises(ValueError, match=r"inputs.shape=\(5,\)"):
        function(np.ones(5), np.ones((2, 2)))


@pytest.mark.parametrize("function", [transposed_conv2d_numpy, keras_transposed_conv])
def test_bad_kernel_rank_names_the_shape(function):
    with pytest.raises(ValueError, match=r"kernel.shape=\(2, 2, 1\)"):
        function(np.ones((3, 3)), np.ones((2, 2, 1)))


def test_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"inputs.shape=\(3, 3, 2\).*kernel.shape=\(2, 2, 3, 1\)"):
        transposed_conv2d_numpy(np.ones((3, 3, 2)), np.ones((2, 2, 3, 1)))


def test_bad_padding_and_strides():
    with pytest.raises(ValueError, match="padding='full'"):
        transposed_conv2d_numpy(LECTURE_INPUT, LECTURE_KERNEL, padding="full")
    with pytest.raises(ValueError, match="strides=0"):
        transposed_conv2d_numpy(LECTURE_INPUT, LECTURE_KERNEL, strides=0)
