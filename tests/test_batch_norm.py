"""course_lib.batch_norm.BatchNormalization computes what keras.layers.BatchNormalization does."""

import sys

import course_lib  # noqa: F401  (torch backend before keras)
import keras
import numpy as np
import pytest
import torch

from autograder.probes import runtime
from course_lib import batch_norm
from course_lib.batch_norm import BatchNormalization

SHAPE = (6, 4, 5, 5)  # batch, channels, height, width
MOMENTUM = 0.9
EPSILON = 1e-3
TRAINING_STEPS = 4
# float32 rounding: the two layers sum in different orders (and Keras' variance is
# E[x^2] - E[x]^2); values are of order 1..10.
RTOL = 1e-5
ATOL = 1e-5
REGISTERED_NAME = "course_lib>BatchNormalization"


def _batches(seed, count=TRAINING_STEPS):
    """Channels with different means and scales, so that wrong statistics show."""
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-3.0, 3.0, size=(1, SHAPE[1], 1, 1))
    scale = rng.uniform(0.5, 4.0, size=(1, SHAPE[1], 1, 1))
    return [(shift + scale * rng.standard_normal(SHAPE)).astype("float32") for _ in range(count)]


def _pair(axis=1, shape=SHAPE, **kwargs):
    """A course layer and a Keras layer with the same (non-trivial) weights."""
    fused = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPSILON, **kwargs)
    plain = keras.layers.BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPSILON, **kwargs)
    fused.build(shape)
    plain.build(shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 2.0, size=weight.shape).astype("float32") for weight in plain.weights]
    plain.set_weights(weights)
    fused.set_weights(weights)
    return fused, plain


def _numpy(values):
    return [keras.ops.convert_to_numpy(value) for value in values]


def _train_step(layer, images, upstream):
    """One training call and backward pass; returns output, input gradient, weight gradients."""
    inputs = torch.tensor(images, requires_grad=True)
    outputs = layer(inputs, training=True)
    torch.sum(outputs * torch.tensor(upstream)).backward()
    gradients = [weight.value.grad.clone() for weight in layer.trainable_weights]
    for weight in layer.trainable_weights:
        weight.value.grad = None
    return outputs.detach().numpy(), inputs.grad.numpy(), _numpy(gradients)


def test_training_outputs_gradients_and_moving_statistics_match_keras():
    fused, plain = _pair()
    upstream = _batches(7, count=1)[0]
    for images in _batches(0):
        fused_step, plain_step = _train_step(fused, images, upstream), _train_step(plain, images, upstream)
        np.testing.assert_allclose(fused_step[0], plain_step[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(fused_step[1], plain_step[1], rtol=RTOL, atol=ATOL)
        for fused_gradient, plain_gradient in zip(fused_step[2], plain_step[2]):
            np.testing.assert_allclose(fused_gradient, plain_gradient, rtol=RTOL, atol=1e-4)
    initial_variance = np.ones(SHAPE[1])
    moved = np.abs(keras.ops.convert_to_numpy(plain.moving_variance) - initial_variance).max()
    assert moved > 0.1, "the batches should move the moving variance away from 1"
    for fused_weight, plain_weight in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(_numpy([fused_weight])[0], _numpy([plain_weight])[0], rtol=RTOL)


def test_moving_variance_uses_the_biased_batch_variance():
    layer = BatchNormalization(axis=1, momentum=MOMENTUM, epsilon=EPSILON)
    images = _batches(2, count=1)[0]
    layer(images, training=True)
    biased = images.var(axis=(0, 2, 3), dtype="float64")
    expected = MOMENTUM * 1.0 + (1.0 - MOMENTUM) * biased
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), expected, rtol=RTOL)
    expected_mean = (1.0 - MOMENTUM) * images.mean(axis=(0, 2, 3), dtype="float64")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), expected_mean, rtol=RTOL, atol=1e-7)


def test_inference_and_frozen_layers_use_the_moving_statistics_and_keep_them():
    fused, plain = _pair()
    images = _batches(3, count=1)[0]
    before = _numpy([fused.moving_mean, fused.moving_variance])
    for training in (False, None):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fused(images, training=training)),
            keras.ops.convert_to_numpy(plain(images, training=training)),
            rtol=RTOL, atol=ATOL,
        )
    fused.trainable = plain.trainable = False
    fused_frozen = keras.ops.convert_to_numpy(fused(images, training=True))
    np.testing.assert_allclose(
        fused_frozen, keras.ops.convert_to_numpy(plain(images, training=True)), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_array_equal(np.stack(_numpy([fused.moving_mean, fused.moving_variance])), np.stack(before))
    batch_normalized = keras.ops.convert_to_numpy(BatchNormalization(axis=1)(images, training=True))
    assert np.abs(fused_frozen - batch_normalized).max() > 0.1, "frozen must not use batch statistics"


def test_channels_last_falls_back_to_keras_and_matches():
    images = np.moveaxis(_batches(4, count=1)[0], 1, -1)
    fused, plain = _pair(axis=-1, shape=images.shape, center=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fused(images, training=True)),
        keras.ops.convert_to_numpy(plain(images, training=True)),
        rtol=RTOL, atol=ATOL,
    )
    assert not fused._fusable(torch.tensor(images), mask=None)
    assert BatchNormalization(axis=1)._fusable(torch.tensor(np.moveaxis(images, -1, 1)), mask=None)


def _saved_model(tmp_path):
    inputs = keras.Input(shape=SHAPE[1:])
    outputs = BatchNormalization(axis=1, momentum=MOMENTUM, name="norm")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("norm")(_batches(5, count=1)[0], training=True)  # moving statistics != init
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def test_saved_model_reloads_with_safe_mode(tmp_path):
    model, path = _saved_model(tmp_path)
    restored = keras.saving.load_model(path, safe_mode=True)
    layer = restored.get_layer("norm")
    assert type(layer) is BatchNormalization
    assert layer.get_config() == model.get_layer("norm").get_config()
    images = _batches(6, count=1)[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images)), keras.ops.convert_to_numpy(model(images)), rtol=RTOL
    )


def test_the_probe_process_registers_the_layer(tmp_path, monkeypatch):
    """The grader's probe loads saved models after `runtime._course_register_course_layers()`.

    With the course module forgotten (not imported, not registered), the probe's own
    registration must bring it back, or its `load_model(safe_mode=True)` cannot
    deserialize "course_lib>BatchNormalization".
    """
    model, path = _saved_model(tmp_path)
    monkeypatch.delitem(sys.modules, batch_norm.__name__)
    monkeypatch.delitem(keras.saving.get_custom_objects(), REGISTERED_NAME)
    monkeypatch.delattr(course_lib, "batch_norm")
    with pytest.raises(TypeError, match="BatchNormalization"):
        keras.saving.load_model(path, safe_mode=True)
    restored = keras.saving.load_model(path, custom_objects=runtime._course_custom_objects(path), safe_mode=True)
    layer = restored.get_layer("norm")
    assert type(layer).__module__ == batch_norm.__name__ and type(layer).__name__ == "BatchNormalization"
    images = _batches(6, count=1)[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images)), keras.ops.convert_to_numpy(model(images)), rtol=RTOL
    )
