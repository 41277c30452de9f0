"""Channels-first computation inside course_lib's models, channels-last at their boundary.

Images enter and leave the course's models as `(batch, height, width, channels)`
(NHWC), as the notebooks, probes and plots expect. Inside, the convolutional layers
compute channels-first (`data_format="channels_first"`, BN with `axis=1`), between one
`Permute` in (`to_channels_first`) and one out (`to_channels_last`). Why: Keras' torch
backend runs every channels-last convolution and pooling as a copy of its input to
channels-first, torch's op, and a copy of the result back; one transpose at each end of
the model replaces all of them (BENCHMARKS.md: lab 1's CNN went from 1.38x to 1.03x the
step time of its plain-PyTorch twin). Keras stores convolution kernels in the same
layout (HWIO) for both data formats, so weights, initialization and weight files are
unchanged; features are moved back to channels-last before any `Flatten`, so dense
weights see the same order. Only the internal layers' output shapes (e.g. in
`model.summary()`) read `(batch, channels, height, width)`.
"""

import keras

CHANNELS_FIRST = "channels_first"
CHANNEL_AXIS = 1
NHWC_TO_NCHW = (3, 1, 2)
NCHW_TO_NHWC = (2, 3, 1)


def to_channels_first(images, name="to_channels_first"):
    """`(batch, height, width, channels)` -> `(batch, channels, height, width)` (a `Permute`)."""
    return keras.layers.Permute(NHWC_TO_NCHW, name=name)(images)


def to_channels_last(features, name="to_channels_last"):
    """`(batch, channels, height, width)` -> `(batch, height, width, channels)` (a `Permute`)."""
    return keras.layers.Permute(NCHW_TO_NHWC, name=name)(features)
