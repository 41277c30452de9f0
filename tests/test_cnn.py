"""Tests for course_lib.cnn: the CIFAR-10 CNN with and without batch normalization."""

import course_lib  # noqa: F401  (torch backend before keras)
import keras
import numpy as np
import pytest

from course_lib.cnn import (
    BATCH_NORM_MOMENTUM,
    DEFAULT_CONVS_PER_BLOCK,
    DEFAULT_FILTERS,
    batch_norm_layers,
    build_cifar_cnn,
)
from course_lib.data import load_cifar10

NUM_BLOCKS = len(DEFAULT_FILTERS)
CONVS_PER_BLOCK = DEFAULT_CONVS_PER_BLOCK
BATCH = 16
TRAIN_EXAMPLES = 2000
TRAIN_BATCH_SIZE = 64
LOSS_BATCH_SIZE = 250
# The loss is measured on the first 500 of the training images.
LOSS_EXAMPLES = 500
TRAINING_SEED = 0
# Loss on the 2000 training images, in training mode (batch statistics; the models are
# built with dropout=0), before -> after 1 epoch (batch 64, Adam 1e-3), seeds 0..5
# (scratch runs, CPU, torch 2.13, keras 3.15):
#   no BN: drops 0.302, 0.217, 0.144, 0.253, 0.003, 0.273 (mean 0.20; seed 4 stayed
#          on the chance plateau, 2.303 -> 2.300, for this first epoch);
#   BN:    3.34 -> 1.65, 2.94 -> 1.74, 2.90 -> 1.76, 3.39 -> 1.68, 2.94 -> 1.59,
#          2.94 -> 1.85 (drops 1.08 to 1.71).
# The test pins seed 0 (in the test's own sequence, 2 threads: drops 0.232 / 1.643);
# thresholds sit below every non-plateau seed, margins about 1.4x (no BN) and 2x (BN).
# With BN, the *inference* loss after this single short epoch is not a fair measure:
# the moving averages lag the fast-changing weights (2.303 -> 1.97 .. 2.70 over the
# same seeds, while the batch-statistics loss is 1.6 .. 1.9).
MIN_LOSS_DROP = {False: 0.1, True: 0.5}


@pytest.fixture(scope="module")
def cifar_batch():
    images, _ = load_cifar10("test", limit=BATCH, exact_only=True)
    return images


@pytest.mark.parametrize("batch_norm", [False, True])
def test_output_shape_and_probabilities(batch_norm, cifar_batch):
    model = build_cifar_cnn(batch_norm=batch_norm)
    probabilities = keras.ops.convert_to_numpy(model(cifar_batch))
    assert probabilities.shape == (BATCH, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Channels-first inside (see course_lib.cnn), channels-last again before flatten.
    assert model.get_layer("block3_pool").output.shape[1:] == (DEFAULT_FILTERS[-1], 4, 4)
    assert model.get_layer("to_channels_last").output.shape[1:] == (4, 4, DEFAULT_FILTERS[-1])


def test_custom_shape_and_classes():
    model = build_cifar_cnn(
        batch_norm=True,
        num_classes=5,
        input_shape=(16, 16, 1),
        filters=(8, 16),
        convs_per_block=1,
    )
    assert model.output.shape == (None, 5)
    assert model.get_layer("block2_pool").output.shape[1:] == (16, 4, 4)
    assert [layer.name for layer in batch_norm_layers(model)] == ["block1_bn1", "block2_bn1"]


def test_without_batch_norm_has_none_and_biased_convs():
    model = build_cifar_cnn(batch_norm=False)
    assert batch_norm_layers(model) == []
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == NUM_BLOCKS * CONVS_PER_BLOCK
    assert all(conv.use_bias for conv in convs)


def test_batch_norm_follows_every_conv_before_relu():
    model = build_cifar_cnn(batch_norm=True)
    names = [layer.name for layer in model.layers]
    layers = batch_norm_layers(model)
    assert len(layers) == NUM_BLOCKS * CONVS_PER_BLOCK
    for block in range(1, NUM_BLOCKS + 1):
        for index in range(1, CONVS_PER_BLOCK + 1):
            conv_position = names.index(f"block{block}_conv{index}")
            # The chain is linear, so the layer order is the data flow.
            assert names[conv_position + 1] == f"block{block}_bn{index}"
            assert names[conv_position + 2] == f"block{block}_relu{index}"
            assert not model.get_layer(f"block{block}_conv{index}").use_bias
            assert model.get_layer(f"block{block}_bn{index}").momentum == BATCH_NORM_MOMENTUM


def test_batch_norm_layers_finds_nested_layers():
    inner = build_cifar_cnn(batch_norm=True)
    outer = keras.Sequential([keras.Input((32, 32, 3)), inner])
    assert len(batch_norm_layers(outer)) == NUM_BLOCKS * CONVS_PER_BLOCK


@pytest.mark.parametrize(
    "arguments",
    [{"num_classes": 1}, {"filters": ()}, {"filters": (8, 0)}, {"dropout": 1.0},
     {"input_shape": (32, 32)}, {"input_shape": (4, 4, 3)}, {"convs_per_block": 0}],
)
def test_invalid_arguments_raise(arguments):
    with pytest.raises(ValueError, match="Received"):
        build_cifar_cnn(**arguments)


def _moving_statistics(model):
    return [
        np.concatenate(
            [keras.ops.convert_to_numpy(layer.moving_mean),
             keras.ops.convert_to_numpy(layer.moving_variance)]
        )
        for layer in batch_norm_layers(model)
    ]


def test_batch_norm_inference_vs_training(cifar_batch):
    model = build_cifar_cnn(batch_norm=True, dropout=0.0)
    initial = _moving_statistics(model)

    inference_output = keras.ops.convert_to_numpy(model(cifar_batch, training=False))
    for before, after in zip(initial, _moving_statistics(model)):
        np.testing.assert_array_equal(before, after)

    training_output = keras.ops.convert_to_numpy(model(cifar_batch, training=True))
    updated = _moving_statistics(model)
    for before, after in zip(initial, updated):
        assert np.abs(after - before).max() > 1e-4
    # Batch statistics (training) and moving averages (inference) normalize differently.
    assert np.abs(training_output - inference_output).max() > 1e-4

    # The first update is exactly moving = m * moving + (1 - m) * batch_mean.
    first_conv = keras.Model(model.input, model.get_layer("block1_conv1").output)
    # (batch, channels, height, width): the statistics are per channel, over the others.
    batch_mean = keras.ops.convert_to_numpy(first_conv(cifar_batch)).mean(axis=(0, 2, 3))
    layer = model.get_layer("block1_bn1")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_mean),
        (1.0 - BATCH_NORM_MOMENTUM) * batch_mean,
        rtol=1e-4,
        atol=1e-6,
    )


def _training_mode_loss(model, images, labels):
    """Mean cross-entropy with BN on batch statistics (what `fit()` minimizes)."""
    losses = []
    for start in range(0, len(images), LOSS_BATCH_SIZE):
        probabilities = model(images[start : start + LOSS_BATCH_SIZE], training=True)
        losses.append(
            keras.ops.convert_to_numpy(
                keras.losses.sparse_categorical_crossentropy(
                    labels[start : start + LOSS_BATCH_SIZE], probabilities
                )
            )
        )
    return float(np.concatenate(losses).mean())


@pytest.mark.slow
@pytest.mark.parametrize("batch_norm", [False, True])
def test_short_training_reduces_the_loss(batch_norm):
    images, labels = load_cifar10("train", limit=TRAIN_EXAMPLES)
    course_lib.set_seed(TRAINING_SEED)
    model = build_cifar_cnn(batch_norm=batch_norm, dropout=0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    probe_images, probe_labels = images[:LOSS_EXAMPLES], labels[:LOSS_EXAMPLES]
    before = _training_mode_loss(model, probe_images, probe_labels)
    model.fit(images, labels, batch_size=TRAIN_BATCH_SIZE, epochs=1, verbose=0)
    after = _training_mode_loss(model, probe_images, probe_labels)
    assert before - after > MIN_LOSS_DROP[batch_norm]
    inference_loss = model.evaluate(
        probe_images, probe_labels, batch_size=LOSS_BATCH_SIZE, verbose=0
    )
    assert np.isfinite(inference_loss)


def _channels_last_twin(model, filters, convs_per_block):
    """The same CNN from plain Keras layers, channels-last throughout, with `model`'s weights."""
    inputs = keras.Input(shape=model.input.shape[1:])
    x = inputs
    for block, block_filters in enumerate(filters, start=1):
        for index in range(1, convs_per_block + 1):
            x = keras.layers.Conv2D(
                block_filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{index}"
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=BATCH_NORM_MOMENTUM, name=f"block{block}_bn{index}"
            )(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    twin = keras.Model(inputs, outputs)
    for layer in twin.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return twin


def test_channels_first_model_computes_what_a_channels_last_one_does(cifar_batch):
    """Same weights, same NHWC images: same outputs and moving statistics (float rounding)."""
    filters, convs_per_block = (8, 16), 1
    model = build_cifar_cnn(
        batch_norm=True, filters=filters, convs_per_block=convs_per_block, dropout=0.0
    )
    twin = _channels_last_twin(model, filters, convs_per_block)
    for training in (True, False, True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(cifar_batch, training=training)),
            keras.ops.convert_to_numpy(twin(cifar_batch, training=training)),
            rtol=1e-4, atol=1e-6,
        )
    for ours, theirs in zip(_moving_statistics(model), _moving_statistics(twin)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
