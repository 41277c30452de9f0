"""The hidden checks of lab4 against a correct submission and deliberately wrong ones.

No notebook runs and nothing trains here. The "trained VAE" is a stand-in with the
interface of the lab's model: its decoder picks one of the exact CIFAR-10 test images
(stored at 16x16) by the direction of the code and upsamples it with a stride-2
`Conv2DTranspose` holding a bilinear kernel; its encoder finds the stored image closest
to its input and returns that image's code. So it reconstructs the exact test images
well and its prior samples are blurred real images (not training images): it must pass
every check, while each wrong variant below breaks one thing and must lose exactly the
points of the check that grades it.
"""

import hashlib
import pathlib

import nbformat

import numpy as np
import pytest

import course_lib  # noqa: F401  (selects the torch backend before keras)
import keras
from keras import layers, ops

from autograder import quality
from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process
from course_lib import vae as vae_lib
from course_lib.data import load_cifar10

LAB = "lab4"
SOURCE_NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "source" / LAB / f"{LAB}.ipynb"
LATENT_DIM = 16
CODE_SCALE = 3.0
# Codes pushed this far from the prior (norm) make prior samples collapse onto one image.
OFF_PRIOR_OFFSET = 50.0
DIRECTIONS_SEED = 0


def _bank():
    """The exact CIFAR-10 test images, averaged down to 16x16 (float32)."""
    images, _ = load_cifar10("test", exact_only=True)
    return images.reshape(-1, 16, 2, 16, 2, 3).mean(axis=(2, 4)).astype("float32")


def _directions(latent_dim, bank_size):
    """One unit-norm code direction per stored image, shape (latent_dim, bank_size)."""
    directions = np.random.default_rng(DIRECTIONS_SEED).standard_normal((latent_dim, bank_size))
    return (directions / np.linalg.norm(directions, axis=0, keepdims=True)).astype("float32")


def _offset(latent_dim, off_prior):
    return np.full((latent_dim,), OFF_PRIOR_OFFSET / np.sqrt(latent_dim) if off_prior else 0.0, "float32")


class BankLookup(layers.Layer):
    """Code -> the stored 16x16 image whose direction is closest to `code - offset`."""

    def __init__(self, bank, directions, offset, **kwargs):
        super().__init__(**kwargs)
        self.bank = ops.convert_to_tensor(bank)
        self.directions = ops.convert_to_tensor(directions)
        self.offset = ops.convert_to_tensor(offset)

    def call(self, codes):
        indices = ops.argmax(ops.matmul(codes - self.offset, self.directions), axis=1)
        return ops.take(self.bank, indices, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.bank.shape[1:])


class NearestCode(layers.Layer):
    """Image -> the code of the closest stored image (or always the first one)."""

    def __init__(self, bank, directions, offset, ignore_input=False, **kwargs):
        super().__init__(**kwargs)
        self.flat_bank = ops.convert_to_tensor(bank.reshape(bank.shape[0], -1))
        self.codes = ops.convert_to_tensor(offset[None, :] + CODE_SCALE * directions.T)
        self.ignore_input = ignore_input

    def call(self, images):
        small = ops.reshape(ops.average_pool(images, 2, strides=2), (ops.shape(images)[0], -1))
        distances = (
            ops.sum(small**2, axis=1, keepdims=True)
            - 2.0 * ops.matmul(small, ops.transpose(self.flat_bank))
            + ops.sum(self.flat_bank**2, axis=1)[None, :]
        )
        indices = ops.argmin(distances, axis=1)
        if self.ignore_input:
            indices = ops.zeros_like(indices)
        return ops.take(self.codes, indices, axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.codes.shape[1])


def _bilinear_kernel(channels):
    """A 4x4 stride-2 bilinear upsampling kernel, channel by channel (Keras layout)."""
    weights_1d = np.array([0.25, 0.75, 0.75, 0.25], dtype="float32")
    kernel = np.zeros((4, 4, channels, channels), dtype="float32")
    for channel in range(channels):
        kernel[:, :, channel, channel] = np.outer(weights_1d, weights_1d)
    return kernel


def make_decoder_builder(off_prior=False, output_scale=1.0, upsampling="transposed"):
    """A `build_cifar_decoder` of the stand-in: lookup, stride-2 upsampling, range cap."""
    bank = _bank()

    def build_cifar_decoder(latent_dim):
        codes = keras.Input(shape=(latent_dim,))
        small = BankLookup(bank, _directions(latent_dim, len(bank)), _offset(latent_dim, off_prior))(codes)
        if upsampling == "transposed":
            upsample = layers.Conv2DTranspose(3, 4, strides=2, padding="same", use_bias=False)
            images = upsample(small)
            upsample.set_weights([_bilinear_kernel(3)])
        else:
            images = layers.UpSampling2D(2, interpolation="bilinear")(small)
        images = layers.ReLU(max_value=1.0)(images)
        images = layers.Rescaling(output_scale)(images)
        return keras.Model(codes, images)

    build_cifar_decoder.__module__ = "__main__"
    return build_cifar_decoder


def make_encoder(latent_dim, off_prior=False, ignore_input=False, num_outputs=3):
    bank = _bank()
    images = keras.Input(shape=(32, 32, 3))
    z_mean = NearestCode(
        bank, _directions(latent_dim, len(bank)), _offset(latent_dim, off_prior), ignore_input
    )(images)
    z_log_var = layers.Lambda(lambda codes: ops.zeros_like(codes) - 10.0)(z_mean)
    outputs = [z_mean, z_log_var, layers.Identity()(z_mean)][:num_outputs]
    return keras.Model(images, outputs)


class StandInVAE(keras.Model):
    """Holds an encoder and a decoder, like the notebook's trained `vae`."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder

    def call(self, images):
        return self.decoder(self.encoder(images)[0])


StandInVAE.__module__ = "__main__"


def correct_reconstruction_loss(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), vae_lib.MIN_PIXEL_VARIANCE)
    per_value = 0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance)
    return ops.sum(per_value, axis=(1, 2, 3))


def mean_instead_of_sum_loss(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), vae_lib.MIN_PIXEL_VARIANCE)
    per_value = 0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance)
    return ops.mean(per_value, axis=(1, 2, 3))


def wrong_axis_loss(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), vae_lib.MIN_PIXEL_VARIANCE)
    per_value = 0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance)
    return ops.sum(per_value, axis=(1, 2))  # forgets the channels


def fixed_size_loss(images, reconstructions, mean=False):
    """The right formula, written for 32x32x3 images only (the tiling probe cannot run)."""
    squared_error = ops.reshape(ops.square(images - reconstructions), (ops.shape(images)[0], 32 * 32 * 3))
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), vae_lib.MIN_PIXEL_VARIANCE)
    per_value = 0.5 * squared_error / variance + 0.5 * ops.log(2.0 * np.pi * variance)
    return ops.mean(per_value, axis=1) if mean else ops.sum(per_value, axis=1)


def fixed_size_mean_loss(images, reconstructions):
    return fixed_size_loss(images, reconstructions, mean=True)


def no_normalizer_loss(images, reconstructions):
    squared_error = ops.square(images - reconstructions)
    variance = ops.maximum(ops.stop_gradient(ops.mean(squared_error)), vae_lib.MIN_PIXEL_VARIANCE)
    return ops.sum(0.5 * squared_error / variance, axis=(1, 2, 3))


def bernoulli_loss(images, reconstructions):
    probabilities = ops.clip(reconstructions, 1e-7, 1.0 - 1e-7)
    per_value = -(images * ops.log(probabilities) + (1.0 - images) * ops.log(1.0 - probabilities))
    return ops.sum(per_value, axis=(1, 2, 3))


def delegating_loss(images, reconstructions):
    variance = ops.maximum(ops.mean(ops.square(images - reconstructions)), vae_lib.MIN_PIXEL_VARIANCE)
    return vae_lib.gaussian_nll(images, reconstructions, variance)


def delegating_decoder(latent_dim):
    return vae_lib.build_decoder((32, 32, 3), latent_dim)


for _function in (
    correct_reconstruction_loss,
    mean_instead_of_sum_loss,
    wrong_axis_loss,
    fixed_size_loss,
    fixed_size_mean_loss,
    no_normalizer_loss,
    bernoulli_loss,
    delegating_loss,
    delegating_decoder,
):
    _function.__module__ = "__main__"


def make_namespace(
    decoder_builder=None,
    loss=correct_reconstruction_loss,
    off_prior=False,
    ignore_input=False,
    encoder_outputs=3,
    vae_class=StandInVAE,
):
    """The notebook's globals after a run; every argument breaks one part."""
    builder = decoder_builder or make_decoder_builder(off_prior=off_prior)
    # The trained model always uses a correct-range stand-in decoder of the same layers.
    model_builder = make_decoder_builder(off_prior=off_prior, upsampling=_upsampling_of(builder))
    encoder = make_encoder(LATENT_DIM, off_prior, ignore_input, encoder_outputs)
    if vae_class is StandInVAE:
        vae = StandInVAE(encoder, model_builder(LATENT_DIM))
    else:
        vae = vae_class(encoder, model_builder(LATENT_DIM), likelihood="gaussian")
    return {
        "LATENT_DIM": LATENT_DIM,
        "build_cifar_decoder": builder,
        "reconstruction_loss": loss,
        "vae": vae,
    }


def _upsampling_of(builder):
    model = builder(LATENT_DIM)
    if any(isinstance(layer, layers.UpSampling2D) for layer in model.layers):
        return "upsampling"
    return "transposed"


@pytest.fixture(autouse=True)
def cached_quality(monkeypatch):
    """Measures the quality of one set of samples once for the whole module (same samples,
    same numbers): the evaluator is the slow part of these tests."""
    original = quality.sample_quality_report
    cache = _QUALITY_CACHE

    def cached(dataset, images, training_images, *args, **kwargs):
        key = (
            hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest(),
            np.shape(training_images),
        )
        if key not in cache:
            cache[key] = original(dataset, images, training_images, *args, **kwargs)
        return cache[key]

    monkeypatch.setattr(quality, "sample_quality_report", cached)


_QUALITY_CACHE = {}


def grade(namespace, tmp_path):
    statuses = run_probes_in_process(LAB, namespace, tmp_path, seed=0)
    return statuses, {result.name: result for result in run_checks(LAB, tmp_path, profile="fast")}


@pytest.fixture(scope="module")
def correct_results(tmp_path_factory):
    namespace = make_namespace()
    _, results = grade(namespace, tmp_path_factory.mktemp("correct"))
    return results


def _lost(correct_results, results):
    return {name for name, result in results.items() if correct_results[name].passed and not result.passed}


POINTS = check_points(LAB)


@pytest.mark.slow
def test_correct_submission_gets_full_marks(correct_results):
    failed = {name: result.message for name, result in correct_results.items() if not result.passed}
    assert not failed
    assert sum(result.points for result in correct_results.values()) == sum(POINTS.values())


WRONG_VARIANTS = {
    "decoder outputs 0..255": (
        dict(decoder_builder=make_decoder_builder(output_scale=255.0)),
        "test_decoder_output_shape_and_range",
        "[0, 1]",
    ),
    "decoder upsamples with UpSampling2D": (
        dict(decoder_builder=make_decoder_builder(upsampling="upsampling")),
        "test_decoder_uses_transposed_convolutions",
        "Conv2DTranspose",
    ),
    "encoder without z": (
        dict(encoder_outputs=2),
        "test_encoder_outputs",
        "expected 3",
    ),
    "loss: mean instead of sum": (
        dict(loss=mean_instead_of_sum_loss),
        "test_reconstruction_loss_sums_over_pixels",
        "averages over the pixels",
    ),
    "loss: sum over the wrong axes": (
        dict(loss=wrong_axis_loss),
        "test_reconstruction_loss_sums_over_pixels",
        "wrong axes",
    ),
    "loss for 32x32 only: mean instead of sum": (
        dict(loss=fixed_size_mean_loss),
        "test_reconstruction_loss_sums_over_pixels",
        "mean over pixels and channels",
    ),
    "loss: no log-normalizer": (
        dict(loss=no_normalizer_loss),
        "test_reconstruction_loss_formula",
        "Gaussian negative log-likelihood",
    ),
    "loss: Bernoulli cross-entropy": (
        dict(loss=bernoulli_loss),
        "test_reconstruction_loss_formula",
        "Gaussian negative log-likelihood",
    ),
    "loss: calls course_lib": (
        dict(loss=delegating_loss),
        "test_reconstruction_loss_formula",
        "calls course_lib",
    ),
    "codes far from the prior": (
        dict(off_prior=True),
        "test_prior_sample_quality",
        ("Samples of vae.decoder", "in batches of SETTINGS['batch_size']"),
    ),
    "encoder ignores its input": (
        dict(ignore_input=True),
        "test_reconstructions_of_test_images",
        ("mean squared error", "in batches of SETTINGS['batch_size']"),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(WRONG_VARIANTS))
def test_wrong_variant_loses_exactly_its_check(variant, correct_results, tmp_path):
    arguments, check_name, message_part = WRONG_VARIANTS[variant]
    _, results = grade(make_namespace(**arguments), tmp_path)
    assert _lost(correct_results, results) == {check_name}
    for part in message_part if isinstance(message_part, tuple) else (message_part,):
        assert part in results[check_name].message
    lost_points = sum(correct_results[name].points - results[name].points for name in results)
    assert lost_points == POINTS[check_name]


@pytest.mark.slow
def test_loss_written_for_32x32_images_only_passes(tmp_path):
    statuses = run_probes_in_process(LAB, make_namespace(loss=fixed_size_loss), tmp_path, seed=0, only=["loss"])
    assert statuses["loss"]["facts"]["tiled_error"] is not None
    names = ["test_reconstruction_loss_sums_over_pixels", "test_reconstruction_loss_formula"]
    assert all(result.passed for result in run_checks(LAB, tmp_path, profile="fast", only=names))


@pytest.mark.slow
def test_decoder_from_course_lib_fails_both_decoder_checks(tmp_path):
    namespace = make_namespace()
    namespace["build_cifar_decoder"] = delegating_decoder
    run_probes_in_process(LAB, namespace, tmp_path, seed=0, only=["decoder"])
    names = ["test_decoder_output_shape_and_range", "test_decoder_uses_transposed_convolutions"]
    for result in run_checks(LAB, tmp_path, profile="fast", only=names):
        assert not result.passed
        assert "course_lib" in result.message


@pytest.mark.slow
def test_course_lib_vae_fails_the_trained_model_checks(correct_results, tmp_path):
    _, results = grade(make_namespace(vae_class=vae_lib.VAE), tmp_path)
    assert _lost(correct_results, results) == {
        "test_prior_sample_quality",
        "test_reconstructions_of_test_images",
    }
    assert "course_lib" in results["test_prior_sample_quality"].message


def test_empty_notebook_scores_zero_without_crashing(tmp_path):
    statuses = run_probes_in_process(LAB, {}, tmp_path, seed=0)
    assert not any(status["ok"] for status in statuses.values())
    results = run_checks(LAB, tmp_path, profile="fast")
    assert len(results) == len(POINTS)
    assert sum(result.points for result in results) == 0
    assert all("defines no" in result.message for result in results)


def test_notebook_check_cells_match_the_check_points():
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    cell_points = {
        cell.metadata["nbgrader"]["grade_id"]: cell.metadata["nbgrader"]["points"]
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    }
    assert cell_points == POINTS
