"""A small CIFAR-10 CNN, with or without batch normalization (lab 1).

Both variants share one structure, so that they can be compared layer by layer:

    input (32, 32, 3), pixels in [0, 1]
    block b = 1, 2, 3 (filters 32, 64, 128), each:
        blockb_conv1 -> [blockb_bn1] -> blockb_relu1
        blockb_conv2 -> [blockb_bn2] -> blockb_relu2    (`convs_per_block=2`)
        blockb_pool (2x2 max pooling)
    flatten -> dense (128) -> dense_relu -> dropout -> predictions (softmax)

Where the batch normalization goes, and why:

- After each `Conv2D` and *before* its ReLU, as in the original paper (Ioffe &
  Szegedy, 2015) and in ResNets: the layer standardizes the pre-activations that the
  ReLU then thresholds, so every channel keeps a useful share of positive values
  whatever the scale of the weights.
- The convolution then has no bias (`use_bias=False`): BN subtracts the per-channel
  mean, which would cancel any bias, and its own `beta` plays that role.
- `momentum=0.9` (Keras' default is 0.99): the moving mean/variance used at inference
  are `moving = momentum * moving + (1 - momentum) * batch_statistic`. With 0.9 they
  forget their initial values (mean 0, variance 1) within a few dozen steps, which
  matters for the short runs of the fast profile (~125 steps per epoch); 0.9 is also
  PyTorch's default (its `momentum=0.1` weighs the new batch, Keras' the old average).
- The dense head has no BN: dropout regularizes it.
- Both variants use He-normal initialization (suited to ReLU), so that the
  comparison isolates batch normalization.

In training (`fit()` or `model(x, training=True)`) BN normalizes with the statistics
of the current batch and updates the moving averages; in inference (`predict()`,
`evaluate()`, `model(x)`) it uses the moving averages and changes nothing.

Channels-first inside, NHWC outside (see `course_lib.layout` for why): the model
takes `(batch, height, width, channels)` images, its first layer (`to_channels_first`)
moves the channels to axis 1, the convolutions, BN (`axis=1`) and poolings compute
channels-first, and `to_channels_last` moves them back before `flatten`. The numbers
are those of a channels-last model up to float rounding. The BN layers are course_lib's
`BatchNormalization`, which runs torch's fused kernel (see `course_lib.batch_norm`).
"""

import keras

from course_lib.batch_norm import BatchNormalization
from course_lib.layout import CHANNEL_AXIS, CHANNELS_FIRST, to_channels_first, to_channels_last

DEFAULT_FILTERS = (32, 64, 128)
DEFAULT_CONVS_PER_BLOCK = 2
KERNEL_SIZE = 3
POOL_SIZE = 2
DENSE_UNITS = 128
# He initialization suits ReLU networks (Keras' default, Glorot, shrinks the signal
# layer after layer). With Glorot, 2 of 6 seeds of the plain CNN stayed at chance
# level (loss 2.30) through a first epoch on 2000 images; with He, none did.
KERNEL_INITIALIZER = "he_normal"
DEFAULT_DROPOUT = 0.3
BATCH_NORM_MOMENTUM = 0.9
CIFAR10_INPUT_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = 10


def _check_arguments(num_classes, input_shape, filters, dropout, convs_per_block):
    """Raises ValueError on arguments `build_cifar_cnn` cannot build from."""
    if (
        isinstance(convs_per_block, bool)
        or not isinstance(convs_per_block, int)
        or convs_per_block < 1
    ):
        raise ValueError(
            f"`convs_per_block` must be a positive integer. "
            f"Received: convs_per_block={convs_per_block!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if len(filters) == 0 or any(
        isinstance(count, bool) or not isinstance(count, int) or count < 1 for count in filters
    ):
        raise ValueError(
            f"`filters` must be a non-empty sequence of positive integers (one per block). "
            f"Received: filters={filters!r}"
        )
    smallest_side = min(input_shape[0], input_shape[1])
    if smallest_side < POOL_SIZE ** len(filters):
        raise ValueError(
            f"{len(filters)} blocks halve the image {len(filters)} times, which needs a side "
            f"of at least {POOL_SIZE ** len(filters)} pixels. Received: input_shape={input_shape!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")


def _conv_unit(x, filters, batch_norm, block, index):
    """Conv2D -> (BatchNormalization) -> ReLU, named `block{b}_conv{i}` etc."""
    x = keras.layers.Conv2D(
        filters,
        KERNEL_SIZE,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer=KERNEL_INITIALIZER,
        data_format=CHANNELS_FIRST,
        name=f"block{block}_conv{index}",
    )(x)
    if batch_norm:
        x = BatchNormalization(
            axis=CHANNEL_AXIS, momentum=BATCH_NORM_MOMENTUM, name=f"block{block}_bn{index}"
        )(x)
    return keras.layers.ReLU(name=f"block{block}_relu{index}")(x)


def build_cifar_cnn(
    batch_norm=False,
    num_classes=CIFAR10_CLASSES,
    input_shape=CIFAR10_INPUT_SHAPE,
    filters=DEFAULT_FILTERS,
    dropout=DEFAULT_DROPOUT,
    convs_per_block=DEFAULT_CONVS_PER_BLOCK,
    name=None,
):
    """Builds the lab's CIFAR-10 CNN (see the module docstring for the structure).

    Args:
        batch_norm: if True, a `BatchNormalization` (momentum 0.9; course_lib's fused
            one) follows every `Conv2D`, before its ReLU, and the convolutions have no
            bias.
        num_classes: number of classes of the softmax output.
        input_shape: `(height, width, channels)` of the images (pixels in [0, 1]).
        filters: number of filters of the convolutions of each block; one block per
            entry, each ending in a 2x2 max pooling.
        dropout: dropout rate before the output layer.
        convs_per_block: convolutions per block (2; 1 makes the model about 2x
            cheaper to train on a CPU).
        name: model name; "cifar_cnn_bn" or "cifar_cnn" by default.

    Returns:
        An uncompiled functional `keras.Model` mapping NHWC images to class
        probabilities (channels-first inside, see the module docstring).

    Raises:
        ValueError: on an invalid argument (the message echoes it).
    """
    filters = tuple(filters)
    input_shape = tuple(input_shape)
    _check_arguments(num_classes, input_shape, filters, dropout, convs_per_block)
    inputs = keras.Input(shape=input_shape, name="image")
    x = to_channels_first(inputs)
    for block, block_filters in enumerate(filters, start=1):
        for index in range(1, convs_per_block + 1):
            x = _conv_unit(x, block_filters, batch_norm, block, index)
        x = keras.layers.MaxPooling2D(
            POOL_SIZE, data_format=CHANNELS_FIRST, name=f"block{block}_pool"
        )(x)
    x = keras.layers.Flatten(name="flatten")(to_channels_last(x))
    x = keras.layers.Dense(DENSE_UNITS, kernel_initializer=KERNEL_INITIALIZER, name="dense")(x)
    x = keras.layers.ReLU(name="dense_relu")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    if name is None:
        name = "cifar_cnn_bn" if batch_norm else "cifar_cnn"
    return keras.Model(inputs, outputs, name=name)


def batch_norm_layers(model):
    """Returns the `BatchNormalization` layers of a model, nested models included.

    Args:
        model: a Keras model (or any layer holding sub-layers in `.layers`).

    Returns:
        A list of `keras.layers.BatchNormalization`, in the order of `model.layers`.
    """
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found
