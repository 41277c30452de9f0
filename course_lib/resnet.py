"""ResNet18 from Keras layers, weight-compatible with torchvision's `resnet18` (lab 2).

Neither `keras.applications` nor the course's allowed packages provide a ResNet18, so
this module builds one layer by layer, the way torchvision does:

    conv1 (7x7, 64, stride 2, pad 3) -> bn1 -> relu -> maxpool (3x3, stride 2, pad 1)
    layer1 .. layer4: two BasicBlocks each, 64/128/256/512 filters; the first block
        of layer2..4 has stride 2 and a shortcut `downsample` = 1x1 conv + BN
    avgpool (global) -> fc (1000 ImageNet classes, logits)

    BasicBlock: conv1 (3x3, stride s) -> bn1 -> relu -> conv2 (3x3) -> bn2,
                + shortcut, -> relu

Exact equivalence with torchvision, so that its ImageNet weights can be used:

- Layer names mirror the state-dict keys with "." replaced by "_": torch's
  `layer2.0.downsample.0.weight` is the kernel of the Keras layer
  `layer2_0_downsample_0` (see `load_torch_state_dict`).
- Padding: torch pads symmetrically (`padding=3` for the 7x7 stem, `padding=1` for
  3x3 convs and the max pooling). Keras' `padding="same"` with stride 2 pads an even
  input with only as much as the output size needs, more at the bottom/right (2 + 3
  rows for the 7x7 stem instead of 3 + 3, 0 + 1 for a 3x3 instead of 1 + 1), which
  shifts every output pixel. So every padded op here is an explicit
  `ZeroPadding2D` followed by a `"valid"` op. Zero padding
  before the max pooling equals torch's -inf padding because its input comes out of a
  ReLU (>= 0) and every window holds at least one real pixel.
- Batch normalization: epsilon 1e-5 (torch's default; Keras' is 1e-3), and
  momentum 0.9 = 1 - torch's 0.1 (Keras weighs the old average, torch the new batch).
  Inference is then identical. (In training, torch updates its running variance
  with the unbiased batch variance, n/(n-1) times Keras', n = batch x height x
  width values per channel: a negligible difference.)
- Convolutions have no bias (BN follows them). Kernels are initialized like
  torchvision's (He normal, fan_out).

Channels-first inside, NHWC outside (see `course_lib.layout`): the model takes
`(batch, height, width, channels)` images; its first layer (`to_channels_first`) moves
the channels to axis 1, every
padding, convolution, BN (`axis=1`, course_lib's fused `BatchNormalization`) and pooling
computes channels-first like torchvision, and 4-D features (`include_top=False`,
`pooling=None`) leave through `to_channels_last` as `(batch, h/32, w/32, 512)`. Why:
Keras' torch backend runs every channels-last convolution and pooling as a copy to
channels-first, torch's op and a copy back, and Keras' own BN as a dozen elementwise
ops instead of torch's fused kernel; together they made a training step of lab 2's model
2.8x slower than the same network in plain PyTorch (BENCHMARKS.md). Keras kernels are
HWIO in both layouts, so the weights, their torchvision mapping and the weight files
are unchanged; only the internal layers' output shapes read channels-first.
"""

import os
import pathlib
import warnings

import h5py
import keras
import numpy as np

from course_lib.batch_norm import BatchNormalization
from course_lib.image_layers import GrayscaleToRGB, ImageNetNormalization
from course_lib.layout import CHANNEL_AXIS, CHANNELS_FIRST, to_channels_first, to_channels_last
from course_lib.cnn import batch_norm_layers

TORCH_BATCH_NORM_MOMENTUM = 0.1
BATCH_NORM_MOMENTUM = 1.0 - TORCH_BATCH_NORM_MOMENTUM
BATCH_NORM_EPSILON = 1e-5
STEM_FILTERS = 64
STEM_KERNEL_SIZE = 7
STEM_PADDING = 3
STRIDE = 2
POOL_SIZE = 3
POOL_PADDING = 1
BLOCK_KERNEL_SIZE = 3
BLOCK_PADDING = 1
STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
NUM_STAGES = len(STAGE_FILTERS)
STAGE_PREFIX = "layer"  # torch keys of stage k start with f"layer{k}."
IMAGENET_CLASSES = 1000
DEFAULT_INPUT_SHAPE = (224, 224, 3)
WEIGHTS_SUFFIXES = (".weights.h5", ".npz")
MNIST_INPUT_SHAPE = (28, 28, 1)
MIN_IMAGE_SIZE = 32
POOLINGS = (None, "avg", "max")
# Torch's BN counts its updates in this buffer; Keras has no counterpart.
IGNORED_TORCH_SUFFIX = ".num_batches_tracked"
# Lab 2's default backbone: stem and stages 1-3 of a ResNet18 pretrained offline on CIFAR-10
# by scripts/pretrain_resnet18_cifar10.py (its record: the .json beside it).
CIFAR10_WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights" / "resnet18_cifar10_stages3.npz"
CLASSIFIER_PREFIX = "fc."

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
# torch's nn.Linear default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
DENSE_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


# ----------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------


def _conv(x, filters, kernel_size, strides, padding, name):
    """Torch-style convolution: symmetric zero padding, then a "valid" bias-free conv."""
    if padding:
        x = keras.layers.ZeroPadding2D(padding, data_format=CHANNELS_FIRST, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        data_format=CHANNELS_FIRST,
        use_bias=False,
        kernel_initializer=keras.initializers.get(CONV_INITIALIZER),
        name=name,
    )(x)


def _batch_norm(x, name):
    return BatchNormalization(
        axis=CHANNEL_AXIS, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=name
    )(x)


def _basic_block(x, filters, strides, name):
    """torchvision's BasicBlock; `name` is the torch module path with "_", e.g. layer2_0."""
    shortcut = x
    if strides != 1 or x.shape[CHANNEL_AXIS] != filters:
        shortcut = _conv(x, filters, 1, strides, 0, name=f"{name}_downsample_0")
        shortcut = _batch_norm(shortcut, name=f"{name}_downsample_1")
    y = _conv(x, filters, BLOCK_KERNEL_SIZE, strides, BLOCK_PADDING, name=f"{name}_conv1")
    y = _batch_norm(y, name=f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, filters, BLOCK_KERNEL_SIZE, 1, BLOCK_PADDING, name=f"{name}_conv2")
    y = _batch_norm(y, name=f"{name}_bn2")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)


def _resnet18_graph(
    input_shape, num_classes, include_top, pooling, classifier_activation, name, stages=NUM_STAGES
):
    """Builds the (randomly initialized) ResNet18 model, its first `stages` stages only."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = to_channels_first(inputs)
    x = _conv(x, STEM_FILTERS, STEM_KERNEL_SIZE, STRIDE, STEM_PADDING, name="conv1")
    x = _batch_norm(x, name="bn1")
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(POOL_PADDING, data_format=CHANNELS_FIRST, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(
        POOL_SIZE, strides=STRIDE, data_format=CHANNELS_FIRST, name="maxpool"
    )(x)
    for stage, filters in enumerate(STAGE_FILTERS[:stages], start=1):
        for block in range(BLOCKS_PER_STAGE):
            strides = STRIDE if (stage > 1 and block == 0) else 1
            x = _basic_block(x, filters, strides, name=f"layer{stage}_{block}")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(data_format=CHANNELS_FIRST, name="avgpool")(x)
        x = keras.layers.Dense(
            num_classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.get(DENSE_INITIALIZER),
            name="fc",
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(data_format=CHANNELS_FIRST, name="avgpool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(data_format=CHANNELS_FIRST, name="global_maxpool")(x)
    else:
        x = to_channels_last(x)
    return keras.Model(inputs, x, name=name)


def _check_resnet_arguments(input_shape, num_classes, include_top, pooling, weights, stages):
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= NUM_STAGES:
        raise ValueError(
            f"`stages` must be an integer from 1 to {NUM_STAGES} (the residual stages "
            f"layer1..layer{NUM_STAGES} kept). Received: stages={stages!r}"
        )
    if include_top and stages != NUM_STAGES:
        raise ValueError(
            f"The ImageNet classifier (`include_top=True`) needs all {NUM_STAGES} stages; "
            f"use include_top=False with fewer. Received: stages={stages}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if weights is not None and input_shape[-1] != 3:
        raise ValueError(
            f"Pretrained ResNet18 weights expect RGB images (3 channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if weights is not None and include_top and num_classes != IMAGENET_CLASSES:
        raise ValueError(
            f"Pretrained weights with `include_top=True` have a {IMAGENET_CLASSES}-class "
            f"classifier; use include_top=False for another head. "
            f"Received: num_classes={num_classes}"
        )


def build_resnet18(
    input_shape=DEFAULT_INPUT_SHAPE,
    num_classes=IMAGENET_CLASSES,
    include_top=True,
    weights=None,
    pooling=None,
    classifier_activation=None,
    name="resnet18",
    verbose=True,
    stages=NUM_STAGES,
):
    """Builds ResNet18 (torchvision's architecture and layer names) from Keras layers.

    Args:
        input_shape: `(height, width, channels)`; height/width may be None.
            Pretrained weights expect RGB images normalized with ImageNet's mean and
            std (see `course_lib.augment.ImageNetNormalization`).
        num_classes: classes of the `fc` layer (only with `include_top=True`).
        include_top: True: end in global average pooling (`avgpool`) and the dense
            classifier `fc`. False: end at the last block (features of shape
            `(h/32, w/32, 512)`), or pooled features, see `pooling`.
        weights: None (random initialization, a message says so), or the path of a
            weights file: a `.weights.h5` file written by
            `scripts/convert_resnet18_weights.py` (the Keras weights of
            `build_resnet18()`), or a `.npz` file of torchvision-named arrays
            (`conv1.weight`, `bn1.running_mean`, ...).
        pooling: with `include_top=False`: None (4-D features), "avg" or "max"
            (global pooling to `(512,)` features).
        classifier_activation: activation of `fc`; None gives logits like torchvision.
        name: model name.
        verbose: print which weights the model got.
        stages: how many residual stages to keep (1-4, all by default): with fewer,
            the network ends after `layer{stages}` (features of
            `STAGE_FILTERS[stages - 1]` channels at 1/(2 ** (stages + 1)) of the input
            side) and a weights file's arrays of the later stages are not needed
            (ignored when present). Needs `include_top=False` unless 4.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: on invalid arguments, or a weights file whose content does not
            match ResNet18.
        FileNotFoundError: if the weights file does not exist.
    """
    input_shape = tuple(input_shape)
    _check_resnet_arguments(input_shape, num_classes, include_top, pooling, weights, stages)
    path = None if weights is None else _check_weights_path(weights)
    model = _resnet18_graph(
        input_shape, num_classes, include_top, pooling, classifier_activation, name, stages
    )
    if path is None:
        if verbose:
            print(f"{name}: weights=None, random initialization (no pretrained weights loaded).")
        return model
    if path.endswith(".npz"):
        _load_npz_weights(model, path, include_top)
    else:
        _load_keras_weights(model, path, input_shape)
    if verbose:
        print(f"{name}: loaded pretrained weights from {path}.")
    return model


# ----------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------


def _check_weights_path(weights):
    """Returns `weights` as a path string, after checking its suffix and existence."""
    if not isinstance(weights, (str, os.PathLike)) or not os.fspath(weights).endswith(
        WEIGHTS_SUFFIXES
    ):
        raise ValueError(
            f"`weights` must be None or the path of a {' or '.join(WEIGHTS_SUFFIXES)} file "
            f"(there is no download here: make the file once with "
            f"scripts/convert_resnet18_weights.py). Received: weights={weights!r}"
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ResNet18 weights file not found: {path}. Expected a .weights.h5 file made "
            f"by scripts/convert_resnet18_weights.py (or a .npz of torchvision-named arrays)."
        )
    return path


def _load_npz_weights(model, path, include_top):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            state_dict = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read {path} as a .npz file of arrays: {error}") from error
    try:
        load_torch_state_dict(model, state_dict, skip_classifier=not include_top)
    except ValueError as error:
        raise ValueError(
            f"{path} does not hold torchvision resnet18 weights: {error}"
        ) from error


def _load_keras_weights(model, path, input_shape):
    """Loads a `build_resnet18()` weights file, then copies it layer by layer by name.

    Keras' weight files follow the layer order of the model that wrote them, so the
    file is loaded into the model the converter saved (ImageNet classifier) and each
    layer of `model` takes the weights of the layer of the same name.
    """
    reference = _resnet18_graph(input_shape, IMAGENET_CLASSES, True, None, None, "reference")
    expected = (
        f"Expected the Keras weights of build_resnet18(include_top=True, "
        f"num_classes={IMAGENET_CLASSES}), as written by scripts/convert_resnet18_weights.py."
    )
    _check_weights_file_shapes(path, reference, expected)
    try:
        with warnings.catch_warnings():
            # Keras only warns when a layer finds no weights in the file (and keeps
            # its random values): make that an error.
            warnings.simplefilter("error")
            reference.load_weights(path)
    except Exception as error:  # h5py/Keras raise several types for a wrong file.
        raise ValueError(
            f"Could not load {path} into ResNet18. {expected} Error: {error}"
        ) from error
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())


def _check_weights_file_shapes(path, reference, expected):
    """Raises ValueError unless the arrays in the file have the reference's shapes."""
    found = []

    def collect(_, item):
        if isinstance(item, h5py.Dataset):
            found.append(tuple(item.shape))

    try:
        with h5py.File(path, "r") as file:
            file.visititems(collect)
    except OSError as error:
        raise ValueError(f"{path} is not a readable .weights.h5 (HDF5) file. {expected}") from error
    needed = sorted(tuple(weight.shape) for weight in reference.weights)
    if sorted(found) != needed:
        raise ValueError(
            f"{path} holds {len(found)} arrays that do not match ResNet18's {len(needed)} "
            f"(shapes differ). {expected}"
        )


def _to_numpy(value):
    """Returns a numpy array from a numpy array or a (CPU or GPU) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype="float32")


def _torch_prefix(layer_name):
    """`layer1_0_downsample_0` -> `layer1.0.downsample.0`."""
    return layer_name.replace("_", ".")


def _expected_arrays(model):
    """Maps each torch key the model needs to `(variable, transpose_axes or None)`."""
    expected = {}
    for layer in model.layers:
        prefix = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            # torch OIHW -> Keras HWIO
            expected[f"{prefix}.weight"] = (layer.kernel, (2, 3, 1, 0))
        elif isinstance(layer, keras.layers.BatchNormalization):
            expected[f"{prefix}.weight"] = (layer.gamma, None)
            expected[f"{prefix}.bias"] = (layer.beta, None)
            expected[f"{prefix}.running_mean"] = (layer.moving_mean, None)
            expected[f"{prefix}.running_var"] = (layer.moving_variance, None)
        elif isinstance(layer, keras.layers.Dense):
            # torch (out, in) -> Keras (in, out)
            expected[f"{prefix}.weight"] = (layer.kernel, (1, 0))
            expected[f"{prefix}.bias"] = (layer.bias, None)
    return expected


def _describe_keys(keys, limit=6):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _built_stages(model):
    """How many residual stages `model` (from `build_resnet18`) has."""
    names = {layer.name for layer in model.layers}
    return sum(f"{STAGE_PREFIX}{stage}_0_conv1" in names for stage in range(1, NUM_STAGES + 1))


def _later_stage(key, stages):
    """True if the torch `key` belongs to a residual stage after the first `stages`."""
    return any(key.startswith(f"{STAGE_PREFIX}{stage}.") for stage in range(stages + 1, NUM_STAGES + 1))


def keep_stages(state_dict, stages):
    """The arrays of a torchvision resnet18 state dict that a `stages`-stage model uses.

    Args:
        state_dict: mapping of torch key -> array.
        stages: residual stages kept (1-4); the classifier `fc.*` is dropped unless 4.

    Returns:
        A new dict without the later stages' arrays (and without `fc.*` if stages < 4).
    """
    return {
        key: value
        for key, value in state_dict.items()
        if not _later_stage(key, stages)
        and not (stages < NUM_STAGES and key.startswith(CLASSIFIER_PREFIX))
    }


def load_torch_state_dict(model, state_dict, skip_classifier=False):
    """Loads a torchvision `resnet18` state dict into a `build_resnet18` model.

    Conversions: convolution weights OIHW -> HWIO; `fc.weight` transposed;
    BN `weight`/`bias`/`running_mean`/`running_var` -> `gamma`/`beta`/`moving_mean`/
    `moving_variance`; `num_batches_tracked` is ignored. Nothing is assigned unless
    every key and shape matches.

    Args:
        model: a model from `build_resnet18` (for `build_mnist_resnet18`, pass
            `model.get_layer("backbone")` with `skip_classifier=True`).
        state_dict: mapping of torch key -> numpy array or torch tensor.
        skip_classifier: ignore the `fc.*` entries (for models without `fc`).
            Arrays of residual stages the model does not have (built with fewer
            `stages`) are ignored too.

    Returns:
        The number of arrays loaded.

    Raises:
        ValueError: on missing keys, unexpected keys or shape mismatches (all listed).
    """
    stages = _built_stages(model)
    arrays = {
        key: value
        for key, value in state_dict.items()
        if not key.endswith(IGNORED_TORCH_SUFFIX)
        and not (skip_classifier and key.startswith(CLASSIFIER_PREFIX))
        and not _later_stage(key, stages)
    }
    expected = _expected_arrays(model)
    missing = set(expected) - set(arrays)
    unexpected = set(arrays) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe_keys(missing)}")
        held = max((stage for stage in range(1, NUM_STAGES + 1)
                    if any(key.startswith(f"{STAGE_PREFIX}{stage}.") for key in arrays)), default=0)
        if 0 < held < stages and all(_later_stage(key, held) for key in missing):
            problems.append(f"the weights hold residual stages 1-{held} only: build the model "
                            f"with stages={held} (it has {stages})")
    if unexpected:
        problems.append(f"unexpected keys: {_describe_keys(unexpected)}")
    converted = {}
    for key in sorted(set(expected) & set(arrays)):
        variable, axes = expected[key]
        array = _to_numpy(arrays[key])
        if axes is not None and array.ndim == len(axes):
            array = np.transpose(array, axes)
        if tuple(array.shape) != tuple(variable.shape):
            problems.append(
                f"shape mismatch for {key}: the model needs {tuple(variable.shape)} "
                f"(Keras layout), the state dict gives {tuple(_to_numpy(arrays[key]).shape)}"
            )
        converted[key] = array
    if problems:
        raise ValueError(
            f"The state dict does not match the model '{model.name}': " + "; ".join(problems)
        )
    for key, array in converted.items():
        expected[key][0].assign(array)
    return len(converted)


# ----------------------------------------------------------------------------------
# MNIST transfer-learning model and fine-tuning helpers
# ----------------------------------------------------------------------------------


def build_mnist_resnet18(
    image_size, num_classes=10, weights=None, augmentation=None, verbose=True, stages=NUM_STAGES
):
    """Builds the lab's MNIST classifier on a ResNet18 backbone.

    image (28, 28, 1) -> [augmentation] -> grayscale_to_rgb -> resize
    (image_size x image_size, bilinear) -> imagenet_normalization -> backbone
    (ResNet18 without top, its first `stages` stages, named "backbone") -> avg_pool ->
    classifier (softmax).

    Args:
        image_size: side the digits are resized to before the backbone (>= 32; the
            backbone divides it by 32).
        num_classes: number of classes.
        weights: backbone weights, see `build_resnet18` (None: random init).
        augmentation: None or a Keras layer applied to the 28x28 images first, e.g.
            `course_lib.augment.build_mnist_augmentation()` (active only in training).
        verbose: print which weights the backbone got.
        stages: residual stages of the backbone (1-4), see `build_resnet18`. Lab 2
            keeps 3 (`course_lib.profiles`): on digits, the last stage of a network
            pretrained on CIFAR-10 transfers no better than random weights.

    Returns:
        A functional `keras.Model` named "mnist_resnet18", inputs in [0, 1].

    Raises:
        ValueError: on an invalid `image_size`, `num_classes`, `augmentation` or
            `stages`.
    """
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size < MIN_IMAGE_SIZE
    ):
        raise ValueError(
            f"`image_size` must be an integer >= {MIN_IMAGE_SIZE}. "
            f"Received: image_size={image_size!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise ValueError(
            f"`augmentation` must be None or a Keras layer. Received: augmentation={augmentation!r}"
        )
    backbone = build_resnet18(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        weights=weights,
        name="backbone",
        verbose=verbose,
        stages=stages,
    )
    inputs = keras.Input(shape=MNIST_INPUT_SHAPE, name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = GrayscaleToRGB(name="grayscale_to_rgb")(x)
    # Keras' image preprocessing layers declare `training=True` as their default, and
    # Keras hands a layer's resolved `training` on to the layers after it: without
    # this explicit False, `model(x)` would run the backbone's BN layers in training
    # mode (batch statistics, moving averages updated). `fit()` still passes
    # training=True, which overrides it.
    x = keras.layers.Resizing(image_size, image_size, name="resize")(x, training=False)
    x = ImageNetNormalization(name="imagenet_normalization")(x)
    # No `training=False` for the backbone: whether its BN layers use batch or moving
    # statistics in `fit()` is decided by their `trainable` flag (see
    # `unfreeze_backbone`).
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet18")


def _backbone(model):
    try:
        return model.get_layer("backbone")
    except ValueError as error:
        raise ValueError(
            f"The model '{model.name}' has no layer named 'backbone' "
            f"(build it with build_mnist_resnet18)."
        ) from error


def freeze_backbone(model):
    """Freezes the whole backbone: only the layers after it (the head) train.

    A frozen backbone's BN layers run in inference mode (moving statistics), which
    is what Keras 3 does for any BN layer with `trainable=False`. Call `compile()`
    after changing what is trainable.

    Args:
        model: a model from `build_mnist_resnet18`.

    Returns:
        The model.
    """
    _backbone(model).trainable = False
    return model


def unfreeze_backbone(model, keep_batch_norm_frozen=True):
    """Makes the backbone trainable for fine-tuning; BN layers stay frozen by default.

    Why keep BN frozen: a BN layer in training mode normalizes with the statistics
    of the current batch and pulls its moving averages towards them. Fine-tuning
    batches are small and come from another domain (a few dozen resized digits), so
    that would replace the ImageNet statistics the pretrained weights rely on with
    noisy estimates, and the features shift under the head. In Keras 3, a
    `BatchNormalization` layer with `trainable=False` both keeps gamma/beta fixed and
    runs in inference mode (moving statistics), even inside `fit()`.

    Call `compile()` again afterwards (with a small learning rate).

    Args:
        model: a model from `build_mnist_resnet18`.
        keep_batch_norm_frozen: leave the backbone's BN layers non-trainable (and in
            inference mode).

    Returns:
        The model.
    """
    backbone = _backbone(model)
    backbone.trainable = True
    if keep_batch_norm_frozen:
        for layer in batch_norm_layers(backbone):
            layer.trainable = False
    return model
