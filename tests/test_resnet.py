"""Tests for course_lib.resnet: ResNet18, torchvision weight mapping, fine-tuning helpers.

The mapping is checked against `torch_resnet18.py`, a plain-PyTorch ResNet18 with
torchvision's module names: same weights and same input must give the same output.
"""

import copy
import hashlib
import importlib.util
import json
import pathlib

import course_lib  # noqa: F401  (torch backend before keras)
import keras
import numpy as np
import pytest
import torch

from course_lib.augment import GrayscaleToRGB, ImageNetNormalization, build_mnist_augmentation
from course_lib.cnn import batch_norm_layers
from course_lib.data import load_mnist
from course_lib.profiles import PROFILES
from course_lib.resnet import (
    CIFAR10_WEIGHTS,
    build_mnist_resnet18,
    build_resnet18,
    freeze_backbone,
    keep_stages,
    load_torch_state_dict,
    unfreeze_backbone,
)
from torch_resnet18 import ResNet18, randomize_batch_norm

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT_PATH = REPOSITORY_ROOT / "scripts" / "convert_resnet18_weights.py"
RELATIVE_TOLERANCE = 1e-4
# ResNet18: conv1 + 8 blocks x 2 convs + 3 downsample convs; a BN after each.
NUM_CONVS = 1 + 8 * 2 + 3
MNIST_IMAGE_SIZE = 32
MAX_SHIPPED_BYTES = 25_000_000  # what the course accepts in the repository for lab 2's weights


def _torch_reference(seed=0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return randomize_batch_norm(ResNet18(), generator).eval()


def _torch_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(np.transpose(images_nhwc, (0, 3, 1, 2)))).numpy()


def _keras_numpy(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def _relative_error(expected, actual):
    return np.abs(expected - actual).max() / np.abs(expected).max()


def _random_images(size, count=2, seed=0):
    return np.random.default_rng(seed).normal(size=(count, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def torch_model():
    return _torch_reference()


@pytest.fixture(scope="module")
def converted_model(torch_model):
    model = build_resnet18(input_shape=(None, None, 3), verbose=False)
    load_torch_state_dict(model, torch_model.state_dict())
    return model


def test_parameter_counts_equal_torchvision(torch_model):
    model = build_resnet18(verbose=False)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == sum(parameter.numel() for parameter in torch_model.parameters())
    # Keras also counts BN moving mean/variance (torch buffers running_mean/var).
    buffers = sum(
        buffer.numel()
        for name, buffer in torch_model.named_buffers()
        if not name.endswith("num_batches_tracked")
    )
    assert model.count_params() == trainable + buffers


def test_structure_mirrors_torchvision_names(torch_model):
    model = build_resnet18(verbose=False)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == NUM_CONVS and len(batch_norm_layers(model)) == NUM_CONVS
    torch_modules = {name for name, _ in torch_model.named_modules()}
    for layer in convs + batch_norm_layers(model) + [model.get_layer("fc")]:
        assert layer.name.replace("_", ".") in torch_modules
    for layer in batch_norm_layers(model):
        assert layer.epsilon == pytest.approx(1e-5) and layer.momentum == pytest.approx(0.9)
    assert model.output.shape == (None, 1000)


@pytest.mark.parametrize("size", [224, 65])
def test_converted_model_matches_torch(torch_model, converted_model, size):
    images = _random_images(size)
    expected = _torch_logits(torch_model, images)
    actual = _keras_numpy(converted_model, images)
    assert actual.shape == expected.shape
    assert _relative_error(expected, actual) < RELATIVE_TOLERANCE


def _gradient(variable):
    return variable.value.grad.numpy()


def test_training_step_matches_torch(torch_model):
    """Batch statistics, gradients and moving statistics of a training step, as in torch.

    Keras' moving variance takes the biased batch variance (over n values per channel),
    torch's running variance the unbiased one: their updates differ by n / (n - 1).
    """
    threads = torch.get_num_threads()
    # One thread: backward passes with several threads took 10x longer on a busy CPU.
    torch.set_num_threads(1)
    try:
        _check_training_step(torch_model)
    finally:
        torch.set_num_threads(threads)


def _check_training_step(torch_model):
    images = _random_images(MNIST_IMAGE_SIZE)
    reference = copy.deepcopy(torch_model).train()
    model = build_resnet18(input_shape=images.shape[1:], verbose=False)
    load_torch_state_dict(model, reference.state_dict())
    expected = reference(torch.from_numpy(np.transpose(images, (0, 3, 1, 2))))
    torch.square(expected).sum().backward()
    actual = model(images, training=True)
    torch.square(actual).sum().backward()
    assert _relative_error(expected.detach().numpy(), actual.detach().numpy()) < RELATIVE_TOLERANCE
    conv1, bn1 = model.get_layer("conv1"), model.get_layer("bn1")
    torch_kernel_gradient = np.transpose(reference.conv1.weight.grad.numpy(), (2, 3, 1, 0))
    assert _relative_error(torch_kernel_gradient, _gradient(conv1.kernel)) < 1e-3
    assert _relative_error(reference.bn1.weight.grad.numpy(), _gradient(bn1.gamma)) < 1e-3
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn1.moving_mean), reference.bn1.running_mean.numpy(),
        rtol=1e-4, atol=1e-6,
    )
    momentum = reference.bn1.momentum
    values_per_channel = images.shape[0] * (images.shape[1] // 2) * (images.shape[2] // 2)
    start = torch_model.bn1.running_var.numpy()
    torch_unbiased = (reference.bn1.running_var.numpy() - (1 - momentum) * start) / momentum
    keras_biased = (keras.ops.convert_to_numpy(bn1.moving_variance) - (1 - momentum) * start) / momentum
    np.testing.assert_allclose(
        keras_biased, torch_unbiased * (values_per_channel - 1) / values_per_channel, rtol=2e-4
    )


def test_same_padding_would_not_match(torch_model):
    # Why the explicit ZeroPadding2D: Keras "same" with stride 2 pads an even input
    # 2 + 3 rows for a 7x7 kernel, torch 3 + 3: same output size, shifted values.
    torch_conv = torch_model.conv1
    keras_conv = keras.layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False)
    images = _random_images(32)
    keras_conv.build(images.shape)
    keras_conv.kernel.assign(np.transpose(torch_conv.weight.detach().numpy(), (2, 3, 1, 0)))
    with torch.no_grad():
        expected = torch_conv(torch.from_numpy(np.transpose(images, (0, 3, 1, 2)))).numpy()
    same = np.transpose(keras.ops.convert_to_numpy(keras_conv(images)), (0, 3, 1, 2))
    assert same.shape == expected.shape
    assert _relative_error(expected, same) > 0.1


def test_state_dict_of_tensors_or_arrays(torch_model):
    arrays = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    model = build_resnet18(input_shape=(64, 64, 3), verbose=False)
    assert load_torch_state_dict(model, arrays) == len(
        [key for key in arrays if not key.endswith("num_batches_tracked")]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("layer3_0_downsample_1").moving_variance),
        arrays["layer3.0.downsample.1.running_var"],
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("fc").kernel), arrays["fc.weight"].T
    )


def test_state_dict_errors_name_the_problem(torch_model):
    state_dict = dict(torch_model.state_dict())
    model = build_resnet18(input_shape=(64, 64, 3), verbose=False)
    kernel_before = keras.ops.convert_to_numpy(model.get_layer("conv1").kernel)

    missing = {key: value for key, value in state_dict.items() if key != "layer2.1.bn2.bias"}
    with pytest.raises(ValueError, match=r"missing keys: layer2\.1\.bn2\.bias"):
        load_torch_state_dict(model, missing)

    extra = dict(state_dict, **{"layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys: layer5\.0\.conv1\.weight"):
        load_torch_state_dict(model, extra)

    wrong = dict(state_dict, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"shape mismatch for conv1\.weight"):
        load_torch_state_dict(model, wrong)

    headless = build_resnet18(input_shape=(64, 64, 3), include_top=False, verbose=False)
    with pytest.raises(ValueError, match=r"unexpected keys: fc\.bias, fc\.weight"):
        load_torch_state_dict(headless, state_dict)
    load_torch_state_dict(headless, state_dict, skip_classifier=True)

    # Failed loads assign nothing.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("conv1").kernel), kernel_before
    )


def test_random_initialization_says_so(capsys):
    build_resnet18(input_shape=(32, 32, 3))
    assert "random initialization" in capsys.readouterr().out


def test_weights_file_errors(tmp_path):
    missing = tmp_path / "absent.weights.h5"
    with pytest.raises(FileNotFoundError, match="absent.weights.h5"):
        build_resnet18(weights=missing)
    with pytest.raises(ValueError, match="Received: weights="):
        build_resnet18(weights=tmp_path / "weights.pth")

    other = tmp_path / "other.weights.h5"
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    small.save_weights(other)
    with pytest.raises(ValueError, match="other.weights.h5 holds 2 arrays"):
        build_resnet18(input_shape=(32, 32, 3), weights=other, verbose=False)

    # Keras alone would load this one partially (with a warning) and leave the
    # classifier random.
    headless = tmp_path / "headless.weights.h5"
    build_resnet18(input_shape=(32, 32, 3), include_top=False, verbose=False).save_weights(
        headless
    )
    with pytest.raises(ValueError, match="headless.weights.h5 holds 100 arrays"):
        build_resnet18(input_shape=(32, 32, 3), weights=headless, verbose=False)

    not_hdf5 = tmp_path / "text.weights.h5"
    not_hdf5.write_text("not weights")
    with pytest.raises(ValueError, match="text.weights.h5 is not a readable"):
        build_resnet18(input_shape=(32, 32, 3), weights=not_hdf5, verbose=False)

    partial = tmp_path / "partial.npz"
    np.savez(partial, **{"conv1.weight": np.zeros((64, 3, 7, 7), dtype="float32")})
    with pytest.raises(ValueError, match="partial.npz.*missing keys"):
        build_resnet18(input_shape=(32, 32, 3), weights=partial, verbose=False)

    with pytest.raises(ValueError, match="num_classes=10"):
        build_resnet18(num_classes=10, weights=partial)


def _load_conversion_script():
    spec = importlib.util.spec_from_file_location("convert_resnet18_weights", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_conversion_script_round_trip(tmp_path, torch_model, capsys):
    state_dict_path = tmp_path / "resnet18.pth"
    torch.save(torch_model.state_dict(), state_dict_path)
    weights_path = tmp_path / "resnet18_imagenet.weights.h5"
    npz_path = tmp_path / "resnet18.npz"
    script = _load_conversion_script()
    script.main(
        [
            "--state-dict", str(state_dict_path),
            "--output", str(weights_path),
            "--npz", str(npz_path),
        ]
    )
    assert "sha256" in capsys.readouterr().out

    images = _random_images(64)
    expected = _torch_logits(torch_model, images)
    from_h5 = build_resnet18(input_shape=(64, 64, 3), weights=weights_path)
    assert "loaded pretrained weights" in capsys.readouterr().out
    assert _relative_error(expected, _keras_numpy(from_h5, images)) < RELATIVE_TOLERANCE
    from_npz = build_resnet18(input_shape=(64, 64, 3), weights=npz_path, verbose=False)
    assert _relative_error(expected, _keras_numpy(from_npz, images)) < RELATIVE_TOLERANCE

    # Without the top, the weights file gives the features the classifier reads.
    features = build_resnet18(
        input_shape=(64, 64, 3), include_top=False, pooling="avg", weights=weights_path,
        verbose=False,
    )
    pooled = keras.Model(from_h5.input, from_h5.get_layer("avgpool").output)
    np.testing.assert_allclose(
        _keras_numpy(features, images), _keras_numpy(pooled, images), rtol=1e-5, atol=1e-6
    )

    mnist_model = build_mnist_resnet18(MNIST_IMAGE_SIZE, weights=weights_path, verbose=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(mnist_model.get_layer("backbone").get_layer("conv1").kernel),
        np.transpose(torch_model.conv1.weight.detach().numpy(), (2, 3, 1, 0)),
    )


@pytest.fixture(scope="module")
def digits():
    images, _ = load_mnist("test", limit=8)
    return images


def test_mnist_resnet18_shapes_and_structure(digits):
    model = build_mnist_resnet18(MNIST_IMAGE_SIZE, num_classes=10, verbose=False)
    probabilities = keras.ops.convert_to_numpy(model(digits))
    assert probabilities.shape == (len(digits), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    names = [layer.name for layer in model.layers]
    assert names == [
        "image", "grayscale_to_rgb", "resize", "imagenet_normalization",
        "backbone", "avg_pool", "classifier",
    ]
    assert isinstance(model.get_layer("grayscale_to_rgb"), GrayscaleToRGB)
    assert isinstance(model.get_layer("imagenet_normalization"), ImageNetNormalization)
    backbone = model.get_layer("backbone")
    assert backbone.input.shape == (None, MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE, 3)
    assert backbone.output.shape == (None, MNIST_IMAGE_SIZE // 32, MNIST_IMAGE_SIZE // 32, 512)


def test_mnist_resnet18_with_augmentation(digits):
    model = build_mnist_resnet18(
        MNIST_IMAGE_SIZE, augmentation=build_mnist_augmentation(seed=0), verbose=False
    )
    assert model.layers[1].name == "augmentation"
    # Augmentation is off in inference: two calls agree.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(digits)), keras.ops.convert_to_numpy(model(digits))
    )
    with pytest.raises(ValueError, match="image_size"):
        build_mnist_resnet18(16)
    with pytest.raises(ValueError, match="augmentation"):
        build_mnist_resnet18(MNIST_IMAGE_SIZE, augmentation="flip")


def test_freeze_and_unfreeze_trainable_weights():
    model = build_mnist_resnet18(MNIST_IMAGE_SIZE, verbose=False)
    head = 2  # classifier kernel + bias
    convs = NUM_CONVS  # one kernel each, no bias
    batch_norms = 2 * NUM_CONVS  # gamma + beta each
    assert len(model.trainable_weights) == head + convs + batch_norms

    freeze_backbone(model)
    assert len(model.trainable_weights) == head
    trainable_values = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable_values == 512 * 10 + 10

    unfreeze_backbone(model)
    assert len(model.trainable_weights) == head + convs
    assert all(not layer.trainable for layer in batch_norm_layers(model))

    unfreeze_backbone(model, keep_batch_norm_frozen=False)
    assert len(model.trainable_weights) == head + convs + batch_norms

    with pytest.raises(ValueError, match="backbone"):
        freeze_backbone(build_resnet18(input_shape=(32, 32, 3), verbose=False))


def _backbone_moving_means(model):
    return np.concatenate(
        [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batch_norm_layers(model)]
    )


def test_frozen_batch_norm_runs_in_inference_mode(digits):
    model = build_mnist_resnet18(MNIST_IMAGE_SIZE, verbose=False)
    unfreeze_backbone(model)
    before = _backbone_moving_means(model)
    inference = keras.ops.convert_to_numpy(model(digits, training=False))
    training = keras.ops.convert_to_numpy(model(digits, training=True))
    np.testing.assert_array_equal(_backbone_moving_means(model), before)
    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-6)

    unfreeze_backbone(model, keep_batch_norm_frozen=False)
    model(digits, training=True)
    assert np.abs(_backbone_moving_means(model) - before).max() > 1e-4


def test_direct_call_is_inference(digits):
    # Keras' Resizing and random layers default to training=True and would hand it
    # on to the backbone's BN layers; build_mnist_resnet18 keeps model(x) in inference.
    model = build_mnist_resnet18(
        MNIST_IMAGE_SIZE, augmentation=build_mnist_augmentation(seed=0), verbose=False
    )
    before = _backbone_moving_means(model)
    first = keras.ops.convert_to_numpy(model(digits))
    second = keras.ops.convert_to_numpy(model(digits))
    np.testing.assert_array_equal(_backbone_moving_means(model), before)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    model(digits, training=True)
    assert np.abs(_backbone_moving_means(model) - before).max() > 1e-4


@pytest.mark.slow
def test_mnist_resnet18_saves_and_loads(tmp_path, digits):
    model = build_mnist_resnet18(
        MNIST_IMAGE_SIZE, augmentation=build_mnist_augmentation(seed=0), verbose=False
    )
    unfreeze_backbone(model)
    path = tmp_path / "mnist_resnet18.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(digits)),
        keras.ops.convert_to_numpy(model(digits)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert all(not layer.trainable for layer in batch_norm_layers(restored))


# ----------------------------------------------------------------------------------
# Fewer stages (lab 2 keeps 3) and the shipped CIFAR-10 backbone
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stages, channels, side", [(1, 64, 8), (2, 128, 4), (3, 256, 2), (4, 512, 1)])
def test_stages_end_the_network_after_that_stage(stages, channels, side):
    model = build_resnet18((MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE, 3), include_top=False, stages=stages, verbose=False)
    assert model.output.shape == (None, side, side, channels)
    names = {layer.name for layer in model.layers}
    assert f"layer{stages}_1_conv2" in names and f"layer{stages + 1}_0_conv1" not in names


def test_a_truncated_model_matches_the_same_stages_in_torch(torch_model):
    model = build_resnet18((64, 64, 3), include_top=False, stages=3, verbose=False)
    load_torch_state_dict(model, torch_model.state_dict(), skip_classifier=True)  # layer4.* ignored
    images = _random_images(64)
    with torch.no_grad():
        x = torch.from_numpy(np.transpose(images, (0, 3, 1, 2)))
        x = torch_model.maxpool(torch_model.relu(torch_model.bn1(torch_model.conv1(x))))
        expected = torch_model.layer3(torch_model.layer2(torch_model.layer1(x))).numpy()
    actual = np.transpose(_keras_numpy(model, images), (0, 3, 1, 2))
    assert _relative_error(expected, actual) < RELATIVE_TOLERANCE


def test_keep_stages_and_loading_a_truncated_state_dict(torch_model):
    arrays = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    kept = keep_stages(arrays, 3)
    assert not any(key.startswith(("layer4.", "fc.")) for key in kept)
    assert {key for key in arrays if key.startswith("layer3.")} <= set(kept)
    assert keep_stages(arrays, 4) == arrays
    model = build_resnet18((32, 32, 3), include_top=False, stages=3, verbose=False)
    assert load_torch_state_dict(model, kept) > 0
    whole = build_resnet18((32, 32, 3), include_top=False, verbose=False)
    with pytest.raises(ValueError, match=r"stages 1-3 only: build the model with stages=3 \(it has 4\)"):
        load_torch_state_dict(whole, kept)


@pytest.mark.parametrize("stages", [0, 5, 2.0, True, "3"])
def test_invalid_stages_are_refused_with_what_was_received(stages):
    with pytest.raises(ValueError, match=rf"`stages` must be an integer from 1 to 4.*Received: stages={stages!r}"):
        build_resnet18((32, 32, 3), include_top=False, stages=stages)
    with pytest.raises(ValueError, match="`stages` must be an integer"):
        build_mnist_resnet18(MNIST_IMAGE_SIZE, stages=stages)


def test_the_classifier_needs_every_stage():
    with pytest.raises(ValueError, match=r"needs all 4 stages.*Received: stages=3"):
        build_resnet18(stages=3)


def test_the_shipped_cifar10_backbone_is_what_its_record_says():
    record = json.loads(CIFAR10_WEIGHTS.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(CIFAR10_WEIGHTS.read_bytes()).hexdigest()
    assert record["bytes"] == CIFAR10_WEIGHTS.stat().st_size <= MAX_SHIPPED_BYTES
    for profile in PROFILES:
        settings = course_lib.settings("lab2", profile)
        assert settings["backbone_stages"] == record["stages"]
        model = build_mnist_resnet18(settings["image_size"], weights=str(CIFAR10_WEIGHTS),
                                     stages=settings["backbone_stages"], verbose=False)
        with np.load(CIFAR10_WEIGHTS) as arrays:
            expected = arrays["layer3.1.bn2.running_var"]
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model.get_layer("backbone").get_layer("layer3_1_bn2").moving_variance),
            expected)
