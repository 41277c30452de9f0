"""The labs' Keras models, built and compiled the way the notebooks do (fast profile)."""

import course_lib  # first: it selects Keras' torch backend

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from course_lib import vae as vae_lib  # noqa: E402
from course_lib.cnn import build_cifar_cnn  # noqa: E402
from course_lib.resnet import build_mnist_resnet18, unfreeze_backbone  # noqa: E402

MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)
CLASSIFIER_LOSS = "sparse_categorical_crossentropy"
LAB2_FINETUNE_LEARNING_RATE_DIVISOR = 10
LAB3_HIDDEN_UNITS = (512, 256)  # lab 3's HIDDEN_UNITS (encoder; mirrored in the decoder)
LAB3_LATENT_DIM = 2
LAB3_LEARNING_RATE = course_lib.settings("lab3", "fast")["learning_rate"]
LAB4_LATENT_DIM = 32
LAB4_LEARNING_RATE = 1e-3
SEED = 0


def build_lab1_cnn(batch_norm, jit_compile=False):
    """Lab 1's CIFAR CNN with the fast profile's filters, compiled like the notebook."""
    lab1 = course_lib.settings("lab1", "fast")
    model = build_cifar_cnn(batch_norm=batch_norm, filters=lab1["filters"])
    model.compile(
        optimizer=keras.optimizers.SGD(lab1["learning_rate"], momentum=lab1["sgd_momentum"]),
        loss=CLASSIFIER_LOSS,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def build_lab1_student_cnn_bn(jit_compile=False):
    """Lab 1's batch-normalized CNN as the students write it: an experiment, not a course model.

    The reference solution's layers: channels-last throughout and
    `keras.layers.BatchNormalization` (Keras' unfused BN), so that the table shows what
    `course_lib`'s channels-first layout and fused BN (`lab1_cnn_bn`) save.
    """
    lab1 = course_lib.settings("lab1", "fast")
    inputs = keras.Input(shape=CIFAR_SHAPE, name="image")
    x = inputs
    for block_filters in lab1["filters"]:
        for _ in (1, 2):
            x = layers.Conv2D(
                block_filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal"
            )(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu", kernel_initializer="he_normal")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="cnn_with_batch_norm")
    model.compile(
        optimizer=keras.optimizers.SGD(lab1["learning_rate"], momentum=lab1["sgd_momentum"]),
        loss=CLASSIFIER_LOSS,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def build_lab2_resnet(jit_compile=False):
    """Lab 2's MNIST ResNet18 in its fine-tuning phase: backbone trainable, BN frozen.

    No augmentation layers (the torch twin has none either).
    """
    lab2 = course_lib.settings("lab2", "fast")
    model = build_mnist_resnet18(lab2["image_size"], verbose=False, stages=lab2["backbone_stages"])
    unfreeze_backbone(model, keep_batch_norm_frozen=True)
    learning_rate = lab2["frozen_learning_rate"] / LAB2_FINETUNE_LEARNING_RATE_DIVISOR
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=CLASSIFIER_LOSS,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def _dense_encoder(latent_dim):
    images = keras.Input(shape=MNIST_SHAPE, name="image")
    features = layers.Flatten()(images)
    for units in LAB3_HIDDEN_UNITS:
        features = layers.Dense(units, activation="relu")(features)
    z_mean = layers.Dense(latent_dim, name="z_mean")(features)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(features)
    z = vae_lib.Sampling(seed=SEED, name="z")([z_mean, z_log_var])
    return keras.Model(images, [z_mean, z_log_var, z], name="encoder")


def _dense_decoder(latent_dim):
    codes = keras.Input(shape=(latent_dim,), name="z")
    features = codes
    for units in reversed(LAB3_HIDDEN_UNITS):
        features = layers.Dense(units, activation="relu")(features)
    pixels = layers.Dense(int(np.prod(MNIST_SHAPE)), activation="sigmoid")(features)
    images = layers.Reshape(MNIST_SHAPE, name="image")(pixels)
    return keras.Model(codes, images, name="decoder")


def build_lab3_vae(jit_compile=False):
    """Lab 3's dense VAE (784-512-256-2, Bernoulli) as a `course_lib.vae.VAE`."""
    model = vae_lib.VAE(
        _dense_encoder(LAB3_LATENT_DIM), _dense_decoder(LAB3_LATENT_DIM), likelihood="bernoulli"
    )
    model.compile(optimizer=keras.optimizers.Adam(LAB3_LEARNING_RATE), jit_compile=jit_compile)
    return model


def build_lab4_vae(jit_compile=False):
    """Lab 4's CIFAR VAE: `course_lib.vae` conv encoder/decoder, Gaussian likelihood."""
    encoder = vae_lib.build_encoder(CIFAR_SHAPE, LAB4_LATENT_DIM, seed=SEED)
    decoder = vae_lib.build_decoder(CIFAR_SHAPE, LAB4_LATENT_DIM)
    model = vae_lib.VAE(encoder, decoder, likelihood="gaussian")
    model.compile(optimizer=keras.optimizers.Adam(LAB4_LEARNING_RATE), jit_compile=jit_compile)
    return model


def trainable_count(model):
    """Number of scalars in the model's trainable weights."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def batch_norm_statistic_count(model):
    """Number of scalars in the moving means and variances of the BN layers."""
    return int(
        sum(
            np.prod(weight.shape)
            for weight in model.weights
            if weight.path.endswith(("moving_mean", "moving_variance"))
        )
    )
