"""lab4: planted bugs written as students err, and correct variants written as students write them.

The student writes `build_cifar_decoder`, `reconstruction_loss` and the cell that builds and
trains `vae`. Each planted bug below is real Keras code; it must lose exactly the points of
the check named (every other check keeps its points), with words of its message:

| planted bug                                           | kind          | check that loses                           |
|-------------------------------------------------------|---------------|--------------------------------------------|
| loss: ops.mean over pixels and channels               | reduction     | test_reconstruction_loss_sums_over_pixels  |
| loss: ops.mean over the batch too (a scalar)          | reduction     | test_reconstruction_loss_sums_over_pixels  |
| loss: sum over axes (1, 2) only                       | wrong axis    | test_reconstruction_loss_sums_over_pixels  |
| loss: no 0.5 on the squared error                     | factor        | test_reconstruction_loss_formula           |
| loss: - 0.5 * log(2 pi variance)                      | sign          | test_reconstruction_loss_formula           |
| loss: no log-normalizer                               | missing term  | test_reconstruction_loss_formula           |
| loss: divides by the standard deviation               | wrong formula | test_reconstruction_loss_formula           |
| loss: one variance per image, not per batch           | reduction     | test_reconstruction_loss_formula           |
| loss: no variance floor (log 0 for a perfect image)   | missing term  | test_reconstruction_loss_formula           |
| loss: Bernoulli cross-entropy                         | wrong formula | test_reconstruction_loss_formula           |
| loss: 0.5 * log(variance), the 2 pi left out          | missing term  | test_reconstruction_loss_formula           |
| loss: log(2 pi variance) without its 0.5              | factor        | test_reconstruction_loss_formula           |
| loss: variance fixed at 1                             | missing term  | test_reconstruction_loss_formula           |
| loss: one variance per pixel (mean over axis 0)       | wrong axis    | test_reconstruction_loss_formula           |
| loss: a Laplace likelihood (absolute error)           | wrong formula | test_reconstruction_loss_formula           |
| decoder: relu output                                  | wrong layer   | test_decoder_output_shape_and_range        |
| decoder: no output activation                         | missing layer | test_decoder_output_shape_and_range        |
| decoder: keras.Input(shape=(LATENT_DIM,))             | shape         | test_decoder_output_shape_and_range        |
| decoder: one upsampling step too few (16x16)          | shape         | test_decoder_output_shape_and_range        |
| decoder: UpSampling2D + Conv2D                        | wrong layer   | test_decoder_uses_transposed_convolutions  |
| decoder: Conv2DTranspose with strides 1 only          | wrong stride  | test_decoder_uses_transposed_convolutions  |
| encoder: outputs [z_mean, z_log_var] only             | shape         | test_encoder_outputs                       |
| decoder: tanh output                                  | wrong layer   | test_decoder_output_shape_and_range        |
| decoder: 1 output channel                             | shape         | test_decoder_output_shape_and_range        |
| decoder: Dense layers only                            | wrong layer   | test_decoder_uses_transposed_convolutions  |

Correct variants (full marks): the solution, no stop_gradient on the variance (the same value
and, at the batch's ML variance, the same gradient), a flattened loss, the closed form
sum/(2 var) + D/2 log(2 pi var), log(2 pi) + log(var) split, the floor inside the
stop_gradient, (x_hat - x) ** 2, a decoder of other widths with 4x4 kernels, one ending with a
separate sigmoid Activation layer, one ending with a Conv2D, and one with batch normalization.

The trained-model checks read the probes of the correct stand-in model (test_lab4_checks.py:
nothing trains here): a bug in a definition costs the model checks points only through
training, which the calibration runs measure, not this suite.
"""

import numpy as np
import pytest

import keras
from keras import layers, ops

import check_grading
from autograder.probes.assemble import run_probes_in_process
from course_lib import vae as vae_lib
from test_lab4_checks import (  # noqa: F401  (cached_quality is an autouse fixture)
    LAB,
    LATENT_DIM,
    bernoulli_loss,
    cached_quality,
    correct_reconstruction_loss,
    make_namespace,
)

ALL_PROBES = ("decoder", "loss", "encoder", "samples", "reconstructions")
MIN_PIXEL_VARIANCE = vae_lib.MIN_PIXEL_VARIANCE


# ------------------------------------------------------------------ reconstruction_loss


def _gaussian_terms(images, reconstructions, log_sign=1.0, half=0.5, use_std=False, per_image=False, floor=True):
    squared_error = ops.square(images - reconstructions)
    variance = ops.mean(squared_error, axis=(1, 2, 3), keepdims=True) if per_image else ops.mean(squared_error)
    variance = ops.stop_gradient(variance)
    if floor:
        variance = ops.maximum(variance, MIN_PIXEL_VARIANCE)
    scale = ops.sqrt(variance) if use_std else variance
    return half * squared_error / scale + log_sign * 0.5 * ops.log(2.0 * np.pi * variance)


def loss_mean(images, reconstructions):
    return ops.mean(_gaussian_terms(images, reconstructions), axis=(1, 2, 3))


def loss_scalar(images, reconstructions):
    return ops.mean(ops.sum(_gaussian_terms(images, reconstructions), axis=(1, 2, 3)))


def loss_axes_1_2(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions), axis=(1, 2))


def loss_no_half(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions, half=1.0), axis=(1, 2, 3))


def loss_log_sign(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions, log_sign=-1.0), axis=(1, 2, 3))


def loss_no_normalizer(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance, axis=(1, 2, 3))


def loss_std(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions, use_std=True), axis=(1, 2, 3))


def loss_variance_per_image(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions, per_image=True), axis=(1, 2, 3))


def loss_no_floor(images, reconstructions):
    return ops.sum(_gaussian_terms(images, reconstructions, floor=False), axis=(1, 2, 3))


def loss_without_stop_gradient(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.mean(squared_error), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance), axis=(1, 2, 3))


def loss_flattened(images, reconstructions):
    flat_error = ops.reshape(ops.square(images - reconstructions), (ops.shape(images)[0], -1))
    variance = ops.maximum(ops.stop_gradient(ops.mean(flat_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * flat_error / variance + 0.5 * ops.log(2.0 * np.pi * variance), axis=1)


def loss_closed_form(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    num_values = ops.cast(ops.prod(ops.shape(images)[1:]), "float32")
    summed = ops.sum(squared_error, axis=(1, 2, 3))
    return summed / (2.0 * variance) + 0.5 * num_values * ops.log(2.0 * np.pi * variance)


def loss_split_log(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    per_value = 0.5 * (squared_error / variance + np.log(2.0 * np.pi) + ops.log(variance))
    return ops.sum(per_value, axis=(1, 2, 3))


def loss_no_two_pi(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance + 0.5 * ops.log(variance), axis=(1, 2, 3))


def loss_log_without_half(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance + ops.log(2.0 * np.pi * variance), axis=(1, 2, 3))


def loss_variance_one(images, reconstructions):
    return ops.sum(0.5 * ops.square(images - reconstructions) + 0.5 * np.log(2.0 * np.pi), axis=(1, 2, 3))


def loss_variance_per_pixel(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error, axis=0, keepdims=True)), MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance), axis=(1, 2, 3))


def loss_laplace(images, reconstructions):
    absolute_error = ops.abs(images - reconstructions)
    scale = ops.maximum(ops.stop_gradient(ops.mean(absolute_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(absolute_error / scale + ops.log(2.0 * scale), axis=(1, 2, 3))


def loss_floor_inside_stop_gradient(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.stop_gradient(ops.maximum(ops.mean(squared_error), MIN_PIXEL_VARIANCE))
    return ops.sum(0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance), axis=(1, 2, 3))


def loss_reversed_difference(images, reconstructions):
    squared_error = (reconstructions - images) ** 2
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), MIN_PIXEL_VARIANCE)
    return ops.sum(squared_error / (2.0 * variance) + 0.5 * ops.log(2.0 * np.pi * variance), axis=(1, 2, 3))


# ------------------------------------------------------------------ build_cifar_decoder


def _decoder(latent_dim, activation="sigmoid", input_dim=None, filters=(64, 32, 16), kernel=3, strides=2,
             upsampling="transposed", separate_sigmoid=False):
    codes = keras.Input(shape=(input_dim or latent_dim,))
    start = 32 // strides ** len(filters) if upsampling == "transposed" else 32 // 2 ** len(filters)
    features = layers.Reshape((start, start, 64))(layers.Dense(start * start * 64, activation="relu")(codes))
    for width in filters:
        if upsampling == "transposed":
            features = layers.Conv2DTranspose(width, kernel, strides=strides, padding="same", activation="relu")(features)
        else:
            features = layers.Conv2D(width, 3, padding="same", activation="relu")(layers.UpSampling2D(2)(features))
    last_activation = None if separate_sigmoid else activation
    images = layers.Conv2DTranspose(3, 3, padding="same", activation=last_activation)(features)
    if separate_sigmoid:
        images = layers.Activation("sigmoid")(images)
    return keras.Model(codes, images)


def decoder_relu(latent_dim):
    return _decoder(latent_dim, activation="relu")


def decoder_linear(latent_dim):
    return _decoder(latent_dim, activation=None)


def decoder_fixed_latent_dim(latent_dim):
    return _decoder(latent_dim, input_dim=LATENT_DIM)


def decoder_too_small(latent_dim):
    codes = keras.Input(shape=(latent_dim,))
    features = layers.Reshape((4, 4, 64))(layers.Dense(4 * 4 * 64, activation="relu")(codes))
    for width in (64, 32):
        features = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(features)
    return keras.Model(codes, layers.Conv2DTranspose(3, 3, padding="same", activation="sigmoid")(features))


def decoder_upsampling(latent_dim):
    return _decoder(latent_dim, upsampling="upsampling")


def decoder_strides_1(latent_dim):
    return _decoder(latent_dim, strides=1, filters=(32, 16))


def decoder_wide(latent_dim):
    return _decoder(latent_dim, filters=(128, 64, 32), kernel=4)


def decoder_separate_sigmoid(latent_dim):
    return _decoder(latent_dim, separate_sigmoid=True)


def decoder_tanh(latent_dim):
    return _decoder(latent_dim, activation="tanh")


def _with_last_layer(latent_dim, last_layer):
    """The solution's upsampling (4x4 -> 32x32), then `last_layer` makes the image."""
    codes = keras.Input(shape=(latent_dim,))
    features = layers.Reshape((4, 4, 64))(layers.Dense(4 * 4 * 64, activation="relu")(codes))
    for width in (64, 32, 16):
        features = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(features)
    return keras.Model(codes, last_layer(features))


def decoder_one_channel(latent_dim):
    return _with_last_layer(latent_dim, layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid"))


def decoder_dense_only(latent_dim):
    codes = keras.Input(shape=(latent_dim,))
    hidden = layers.Dense(256, activation="relu")(codes)
    pixels = layers.Dense(32 * 32 * 3, activation="sigmoid")(hidden)
    return keras.Model(codes, layers.Reshape((32, 32, 3))(pixels))


def decoder_conv2d_last(latent_dim):
    return _with_last_layer(latent_dim, layers.Conv2D(3, 3, padding="same", activation="sigmoid"))


def decoder_batch_norm(latent_dim):
    codes = keras.Input(shape=(latent_dim,))
    features = layers.Reshape((4, 4, 64))(layers.Dense(4 * 4 * 64, activation="relu")(codes))
    for width in (64, 32, 16):
        features = layers.Conv2DTranspose(width, 3, strides=2, padding="same")(features)
        features = layers.ReLU()(layers.BatchNormalization()(features))
    return keras.Model(codes, layers.Conv2DTranspose(3, 3, padding="same", activation="sigmoid")(features))


def solution_decoder(latent_dim):
    return _decoder(latent_dim)


for _function in list(globals().values()):
    if callable(_function) and getattr(_function, "__name__", "").startswith(("loss_", "decoder_", "solution_")):
        _function.__module__ = "__main__"


# ------------------------------------------------------------------ the tables

DECODER, LOSS, ENCODER = ("decoder",), ("loss",), ("encoder",)
SUMS, FORMULA = "test_reconstruction_loss_sums_over_pixels", "test_reconstruction_loss_formula"
RANGE, TRANSPOSED = "test_decoder_output_shape_and_range", "test_decoder_uses_transposed_convolutions"

# name -> (namespace changes, probes run, check that loses, words of its message)
PLANTED_BUGS = {
    "loss mean over pixels": ({"reconstruction_loss": loss_mean}, LOSS, SUMS, ("averages over the pixels",)),
    "loss a scalar": ({"reconstruction_loss": loss_scalar}, LOSS, SUMS, ("one number for the whole batch",)),
    "loss over axes (1, 2)": ({"reconstruction_loss": loss_axes_1_2}, LOSS, SUMS, ("wrong axes", "(12, 3)")),
    "loss without the 0.5": ({"reconstruction_loss": loss_no_half}, LOSS, FORMULA, ("factor 0.5", "yours gives")),
    "loss log term sign": ({"reconstruction_loss": loss_log_sign}, LOSS, FORMULA, ("wrong sign", "+ 0.5 * log(2 pi variance)")),
    "loss no normalizer": ({"reconstruction_loss": loss_no_normalizer}, LOSS, FORMULA,
                           ("log(2 pi variance) term is missing",)),
    "loss divides by the std": ({"reconstruction_loss": loss_std}, LOSS, FORMULA, ("Gaussian negative",)),
    "loss variance per image": ({"reconstruction_loss": loss_variance_per_image}, LOSS, FORMULA,
                                ("mean squared error over the batch",)),
    "loss no variance floor": ({"reconstruction_loss": loss_no_floor}, LOSS, FORMULA,
                               ("not finite", "MIN_PIXEL_VARIANCE")),
    "loss Bernoulli": ({"reconstruction_loss": bernoulli_loss}, LOSS, FORMULA, ("Gaussian negative",)),
    "loss without 2 pi": ({"reconstruction_loss": loss_no_two_pi}, LOSS, FORMULA, ("2 pi is missing",)),
    "loss log term without 0.5": ({"reconstruction_loss": loss_log_without_half}, LOSS, FORMULA,
                                  ("without its factor 0.5",)),
    "loss variance fixed at 1": ({"reconstruction_loss": loss_variance_one}, LOSS, FORMULA,
                                 ("fixed at 1 instead of fitted",)),
    "loss variance per pixel": ({"reconstruction_loss": loss_variance_per_pixel}, LOSS, FORMULA,
                                ("per pixel over the batch (axis 0)", "one variance for all pixels")),
    "loss Laplace": ({"reconstruction_loss": loss_laplace}, LOSS, FORMULA, ("does not match the Gaussian",)),
    "decoder tanh output": ({"build_cifar_decoder": decoder_tanh}, DECODER, RANGE, ("[0, 1]", "sigmoid")),
    "decoder one channel": ({"build_cifar_decoder": decoder_one_channel}, DECODER, RANGE,
                            ("wrong shape", "(16, 32, 32, 1)")),
    "decoder Dense only": ({"build_cifar_decoder": decoder_dense_only}, DECODER, TRANSPOSED, ("no Conv2DTranspose",)),
    "decoder relu output": ({"build_cifar_decoder": decoder_relu}, DECODER, RANGE, ("[0, 1]", "sigmoid")),
    "decoder linear output": ({"build_cifar_decoder": decoder_linear}, DECODER, RANGE, ("[0, 1]",)),
    "decoder fixed latent dim": ({"build_cifar_decoder": decoder_fixed_latent_dim}, DECODER, RANGE,
                                 ("any latent_dim", "keras.Input(shape=(latent_dim,))")),
    "decoder 16x16": ({"build_cifar_decoder": decoder_too_small}, DECODER, RANGE, ("wrong shape", "(16, 16, 16, 3)")),
    "decoder UpSampling2D": ({"build_cifar_decoder": decoder_upsampling}, DECODER, TRANSPOSED, ("no Conv2DTranspose",)),
    "decoder strides 1": ({"build_cifar_decoder": decoder_strides_1}, DECODER, TRANSPOSED, ("strides > 1",)),
    "encoder without z": ({"encoder_outputs": 2}, ENCODER, "test_encoder_outputs", ("expected 3", "2 output")),
}

# name -> (namespace changes, probes run)
CORRECT_VARIANTS = {
    "loss solution": ({"reconstruction_loss": correct_reconstruction_loss}, LOSS),
    "loss without stop_gradient": ({"reconstruction_loss": loss_without_stop_gradient}, LOSS),
    "loss flattened": ({"reconstruction_loss": loss_flattened}, LOSS),
    "loss closed form": ({"reconstruction_loss": loss_closed_form}, LOSS),
    "loss log split": ({"reconstruction_loss": loss_split_log}, LOSS),
    "loss floor inside stop_gradient": ({"reconstruction_loss": loss_floor_inside_stop_gradient}, LOSS),
    "loss (x_hat - x) ** 2": ({"reconstruction_loss": loss_reversed_difference}, LOSS),
    "decoder solution": ({"build_cifar_decoder": solution_decoder}, DECODER),
    "decoder ending with a Conv2D": ({"build_cifar_decoder": decoder_conv2d_last}, DECODER),
    "decoder with batch normalization": ({"build_cifar_decoder": decoder_batch_norm}, DECODER),
    "decoder wider, 4x4 kernels": ({"build_cifar_decoder": decoder_wide}, DECODER),
    "decoder separate sigmoid": ({"build_cifar_decoder": decoder_separate_sigmoid}, DECODER),
}

NAMESPACE_ARGUMENTS = ("encoder_outputs",)


def _namespace(changes):
    arguments = {key: value for key, value in changes.items() if key in NAMESPACE_ARGUMENTS}
    namespace = make_namespace(**arguments)
    namespace.update({key: value for key, value in changes.items() if key not in NAMESPACE_ARGUMENTS})
    return namespace


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab4_baseline")
    run_probes_in_process(LAB, make_namespace(), folder, seed=0)
    return folder


def grade(changes, probes, tmp_path, baseline_dir):
    return check_grading.grade_lab(LAB, _namespace(changes), tmp_path, baseline_dir, ALL_PROBES, probes)


def test_the_tables_cover_the_checks_of_the_definitions():
    assert len(PLANTED_BUGS) >= 10 and len(CORRECT_VARIANTS) >= 6
    graded = {check for _, _, check, _ in PLANTED_BUGS.values()}
    assert graded == {SUMS, FORMULA, RANGE, TRANSPOSED, "test_encoder_outputs"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLANTED_BUGS))
def test_planted_bug_loses_exactly_its_check(name, tmp_path, baseline_dir):
    changes, probes, check_name, words = PLANTED_BUGS[name]
    results = grade(changes, probes, tmp_path, baseline_dir)
    check_grading.assert_loses_exactly(LAB, results, check_name, *words)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORRECT_VARIANTS))
def test_correct_variant_keeps_full_marks(name, tmp_path, baseline_dir):
    changes, probes = CORRECT_VARIANTS[name]
    check_grading.assert_full_marks(LAB, grade(changes, probes, tmp_path, baseline_dir))
