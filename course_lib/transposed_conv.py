"""Transposed convolution, from scratch in numpy and through `keras.layers.Conv2DTranspose`.

A transposed convolution "paints" the output: every input value scales a copy of the
kernel, and that copy is added into the output at a position that moves by `strides`
pixels per input pixel (a scatter-add). The lecture slide draws exactly this for a
2x2 input and a 2x2 kernel with stride 1 (`LECTURE_INPUT`, `LECTURE_KERNEL`,
`LECTURE_OUTPUT`).

Conventions used by both functions of this module:

- `inputs` is one image, `(height, width)` (one channel) or `(height, width, channels)`,
  or a batch `(batch, height, width, channels)`.
- `kernel` is `(kernel_height, kernel_width)` (one input and one output channel) or
  `(kernel_height, kernel_width, in_channels, out_channels)`, like the kernel of a
  `Conv2D` layer. Keras stores the kernel of `Conv2DTranspose` as
  `(kernel_height, kernel_width, out_channels, in_channels)` (the two channel axes
  swapped); `keras_transposed_conv` does that swap. The kernel is *not* flipped: Keras'
  transposed convolution is the same scatter-add as the slide.
- The output has the rank of `inputs`, except that a 2-D image with a 4-D kernel
  gets a channel axis: `(out_height, out_width[, out_channels])`.

Output size along one axis, with input size `n`, kernel size `k` and stride `s`:

- "valid": `(n - 1) * s + max(k, s)`. The full scatter-add covers `(n - 1) * s + k`
  pixels; when `s > k` Keras appends `s - k` zeros so that every input pixel owns a
  block of `s` output pixels.
- "same": `n * s`. The full scatter-add is cropped by `k - s` pixels in total,
  `max((k - s) // 2, 0)` at the start and the rest at the end (a negative crop at the
  end appends zeros). This is Keras' (and TensorFlow's) choice.
"""

import numpy as np

LECTURE_INPUT = [[0, 1], [2, 3]]
LECTURE_KERNEL = [[0, 1], [2, 3]]
LECTURE_OUTPUT = [[0, 0, 1], [0, 4, 6], [4, 12, 9]]

PADDINGS = ("valid", "same")
SINGLE_IMAGE_RANK = 3
BATCH_RANK = 4


def _standardize_strides(strides):
    """Returns `(stride_height, stride_width)` from an int or a pair of positive ints."""
    if isinstance(strides, (int, np.integer)) and not isinstance(strides, bool):
        pair = (int(strides), int(strides))
    elif isinstance(strides, (tuple, list)) and len(strides) == 2:
        pair = tuple(int(value) for value in strides)
    else:
        raise ValueError(
            f"`strides` must be a positive int or a pair of positive ints. "
            f"Received: strides={strides!r}"
        )
    if min(pair) < 1:
        raise ValueError(
            f"`strides` must be a positive int or a pair of positive ints. "
            f"Received: strides={strides!r}"
        )
    return pair


def _standardize_padding(padding):
    """Returns "valid" or "same" (case-insensitive input)."""
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}. Received: padding={padding!r}")
    return padding.lower()


def _standardize_operands(inputs, kernel):
    """Brings `inputs` to `(batch, height, width, in_channels)` and `kernel` to
    `(kernel_height, kernel_width, in_channels, out_channels)`.

    Returns:
        `(batch_inputs, kernel_4d, output_rank)`, where `output_rank` is the rank the
        result must be given back in (2, 3 or 4).
    """
    inputs = np.asarray(inputs, dtype="float64")
    kernel = np.asarray(kernel, dtype="float64")
    if kernel.ndim == 2:
        kernel = kernel[:, :, np.newaxis, np.newaxis]
    elif kernel.ndim != 4:
        raise ValueError(
            "`kernel` must have shape (kernel_height, kernel_width) or "
            "(kernel_height, kernel_width, in_channels, out_channels). "
            f"Received: kernel.shape={kernel.shape}"
        )
    if min(kernel.shape) < 1:
        raise ValueError(f"`kernel` must not be empty. Received: kernel.shape={kernel.shape}")

    if inputs.ndim == 2:
        batch_inputs = inputs[np.newaxis, :, :, np.newaxis]
        output_rank = 2 if kernel.shape[3] == 1 else SINGLE_IMAGE_RANK
    elif inputs.ndim == SINGLE_IMAGE_RANK:
        batch_inputs = inputs[np.newaxis]
        output_rank = SINGLE_IMAGE_RANK
    elif inputs.ndim == BATCH_RANK:
        batch_inputs = inputs
        output_rank = BATCH_RANK
    else:
        raise ValueError(
            "`inputs` must have shape (height, width), (height, width, channels) or "
            f"(batch, height, width, channels). Received: inputs.shape={inputs.shape}"
        )
    if min(batch_inputs.shape) < 1:
        raise ValueError(f"`inputs` must not be empty. Received: inputs.shape={inputs.shape}")
    if batch_inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            "The number of input channels must equal the kernel's `in_channels` "
            f"(axis 2). Received: inputs.shape={inputs.shape}, kernel.shape={kernel.shape}"
        )
    return batch_inputs, kernel, output_rank


def _crop_or_pad(full_size, input_size, kernel_size, stride, padding):
    """Returns `(start_crop, end_crop)` for one axis of the full scatter-add.

    A negative `end_crop` means that many zeros are appended instead.
    """
    if padding == "valid":
        return 0, -max(stride - kernel_size, 0)
    total_crop = full_size - input_size * stride  # equals kernel_size - stride
    start_crop = max(total_crop // 2, 0)
    return start_crop, total_crop - start_crop


def _apply_crop(outputs, axis, start_crop, end_crop):
    """Crops (or, for a negative `end_crop`, zero-pads) `outputs` along `axis`."""
    size = outputs.shape[axis]
    outputs = np.take(outputs, np.arange(start_crop, size - max(end_crop, 0)), axis=axis)
    if end_crop < 0:
        pad_width = [(0, 0)] * outputs.ndim
        pad_width[axis] = (0, -end_crop)
        outputs = np.pad(outputs, pad_width)
    return outputs


def transposed_conv2d_numpy(inputs, kernel, strides=1, padding="valid"):
    """Transposed 2-D convolution as a scatter-add of scaled kernel copies (no bias).

    For every input pixel `(i, j)` and input channel `c`, the kernel slice
    `kernel[:, :, c, :]` times `inputs[i, j, c]` is added into the output window whose
    top-left corner is `(i * stride_height, j * stride_width)`. The result is then
    cropped (or zero-padded) as `padding` asks; see the module docstring.

    Args:
        inputs: array-like, `(height, width)`, `(height, width, in_channels)` or
            `(batch, height, width, in_channels)`.
        kernel: array-like, `(kernel_height, kernel_width)` or
            `(kernel_height, kernel_width, in_channels, out_channels)`.
        strides: int or pair of ints, the step between two kernel copies.
        padding: "valid" or "same", as in `keras.layers.Conv2DTranspose`.

    Returns:
        A float64 numpy array: `(out_height, out_width)` for a 2-D input and a 2-D
        kernel, `(out_height, out_width, out_channels)` for one image, or
        `(batch, out_height, out_width, out_channels)` for a batch.

    Raises:
        ValueError: on shapes, strides or padding that do not fit the conventions.
    """
    stride_height, stride_width = _standardize_strides(strides)
    padding = _standardize_padding(padding)
    batch_inputs, kernel, output_rank = _standardize_operands(inputs, kernel)
    batch, height, width, _ = batch_inputs.shape
    kernel_height, kernel_width, _, out_channels = kernel.shape

    full_height = (height - 1) * stride_height + kernel_height
    full_width = (width - 1) * stride_width + kernel_width
    outputs = np.zeros((batch, full_height, full_width, out_channels))
    for row in range(height):
        for column in range(width):
            top = row * stride_height
            left = column * stride_width
            # (batch, in) x (kh, kw, in, out) -> (batch, kh, kw, out)
            copies = np.einsum("bc,hwco->bhwo", batch_inputs[:, row, column, :], kernel)
            outputs[:, top : top + kernel_height, left : left + kernel_width, :] += copies

    crops = (
        _crop_or_pad(full_height, height, kernel_height, stride_height, padding),
        _crop_or_pad(full_width, width, kernel_width, stride_width, padding),
    )
    for axis, (start_crop, end_crop) in zip((1, 2), crops):
        outputs = _apply_crop(outputs, axis, start_crop, end_crop)

    if output_rank == BATCH_RANK:
        return outputs
    if output_rank == SINGLE_IMAGE_RANK:
        return outputs[0]
    return outputs[0, :, :, 0]


def keras_transposed_conv(inputs, kernel, strides=1, padding="valid"):
    """Runs a `keras.layers.Conv2DTranspose(use_bias=False)` that holds `kernel`.

    Same arguments, conventions and output shapes as `transposed_conv2d_numpy`, so the
    two can be compared directly. The kernel's channel axes are swapped into Keras'
    layout `(kernel_height, kernel_width, out_channels, in_channels)`; nothing is flipped.

    Args:
        inputs: array-like, `(height, width)`, `(height, width, in_channels)` or
            `(batch, height, width, in_channels)`.
        kernel: array-like, `(kernel_height, kernel_width)` or
            `(kernel_height, kernel_width, in_channels, out_channels)`.
        strides: int or pair of ints.
        padding: "valid" or "same".

    Returns:
        A float32 numpy array shaped like the result of `transposed_conv2d_numpy`.

    Raises:
        ValueError: on shapes, strides or padding that do not fit the conventions.
    """
    import keras

    strides = _standardize_strides(strides)
    padding = _standardize_padding(padding)
    batch_inputs, kernel, output_rank = _standardize_operands(inputs, kernel)
    kernel_height, kernel_width, _, out_channels = kernel.shape

    layer = keras.layers.Conv2DTranspose(
        filters=out_channels,
        kernel_size=(kernel_height, kernel_width),
        strides=strides,
        padding=padding,
        use_bias=False,
    )
    layer.build(batch_inputs.shape)
    layer.set_weights([np.transpose(kernel, (0, 1, 3, 2)).astype("float32")])
    outputs = keras.ops.convert_to_numpy(layer(batch_inputs.astype("float32")))

    if output_rank == BATCH_RANK:
        return outputs
    if output_rank == SINGLE_IMAGE_RANK:
        return outputs[0]
    return outputs[0, :, :, 0]
