"""lab3's hidden checks against a correct submission and against one mistake at a time.

Each wrong namespace differs from the correct one in one object and must lose exactly
the points of the check that grades it, with a message that names the mistake. Probes
run in this process (no notebook); the "vae" of the namespaces is untrained, and its
decoder is replaced by stand-ins (real held-out digits for a good generator, noise,
training copies, an untrained network) to exercise the sample-quality checks.
"""

import math

import numpy as np
import pytest
import torch

import course_lib
import keras
from keras import layers, ops

from autograder.checks import test_lab3 as lab3_checks
from autograder.formulas import gaussian_kl
from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process
from course_lib.data import load_mnist

import check_grading  # tests/check_grading.py
from check_grading import failed, grade_lab

LATENT_DIM = 2
IMAGE_SHAPE = (28, 28, 1)
HIDDEN_UNITS = 32
# Real digits that stand in for a good generator's samples: training images far beyond the
# profile's training subset (test images, like the training subset, count as copies).
HELD_OUT_START = 50_000
ALL_PROBES = (
    "kl",
    "sampling_statistics",
    "sampling_fresh_noise",
    "sampling_gradients",
    "model_shapes",
    "train_step",
    "origin",
    "samples",
)
SAMPLING_PROBES = ["sampling_statistics", "sampling_fresh_noise", "sampling_gradients", "origin"]


# ------------------------------------------------------------- a correct submission


def kl_divergence(z_mean, z_log_var):
    return 0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


class Sampling(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def noise(self, z_mean):
        return keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)

    def standard_deviation(self, z_log_var):
        return ops.exp(0.5 * z_log_var)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + self.standard_deviation(z_log_var) * self.noise(z_mean)


def pixel_cross_entropy(images, reconstructions):
    """Binary cross-entropy summed over the pixels of each image, shape (batch,)."""
    return ops.sum(keras.losses.binary_crossentropy(images, reconstructions), axis=(1, 2))


class VAE(keras.Model):
    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def call(self, images):
        return self.decoder(self.encoder(images)[2])

    def reconstruction_loss(self, images, reconstructions):
        return ops.mean(pixel_cross_entropy(images, reconstructions))

    def apply_gradients(self, loss):
        loss.backward()
        trainable_weights = list(self.trainable_weights)
        gradients = [weight.value.grad for weight in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self.zero_grad()
        z_mean, z_log_var, z = self.encoder(images, training=True)
        reconstructions = self.decoder(z, training=True)
        reconstruction_loss = self.reconstruction_loss(images, reconstructions)
        kl_loss = ops.mean(kl_divergence(z_mean, z_log_var))
        loss = reconstruction_loss + kl_loss
        self.apply_gradients(loss)
        self.loss_tracker.update_state(loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {metric.name: metric.result() for metric in self.metrics}


def build_encoder(sampling_class=Sampling, num_outputs=3):
    images = keras.Input(shape=IMAGE_SHAPE)
    hidden = layers.Dense(HIDDEN_UNITS, activation="relu")(layers.Flatten()(images))
    z_mean = layers.Dense(LATENT_DIM)(hidden)
    z_log_var = layers.Dense(LATENT_DIM)(hidden)
    z = sampling_class()([z_mean, z_log_var])
    return keras.Model(images, [z_mean, z_log_var, z][:num_outputs])


def build_dense_decoder():
    codes = keras.Input(shape=(LATENT_DIM,))
    hidden = layers.Dense(HIDDEN_UNITS, activation="relu")(codes)
    pixels = layers.Dense(int(np.prod(IMAGE_SHAPE)), activation="sigmoid")(hidden)
    return keras.Model(codes, layers.Reshape(IMAGE_SHAPE)(pixels))


class ImagesDecoder:
    """A stand-in decoder: `predict(codes)` returns the next len(codes) of fixed images."""

    def __init__(self, images):
        self.images = np.asarray(images, dtype="float32")

    def predict(self, codes, batch_size=None, verbose=0):
        return self.images[: len(codes)]


# ------------------------------------------------------------- one mistake at a time


def kl_sign_flipped(z_mean, z_log_var):
    return -0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


def kl_slide_sigma_as_std(z_mean, z_log_var):
    sigma = ops.exp(0.5 * z_log_var)
    return 0.5 * ops.sum(sigma + ops.square(z_mean) - 1.0 - ops.log(sigma), axis=-1)


def kl_mean_over_dims(z_mean, z_log_var):
    return 0.5 * ops.mean(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


class SamplingVarianceAsStd(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.exp(z_log_var)


class SamplingUniformNoise(Sampling):
    def noise(self, z_mean):
        bound = math.sqrt(3.0)  # mean 0, variance 1: only the shape is wrong
        return keras.random.uniform(ops.shape(z_mean), -bound, bound, seed=self.seed_generator)


class SamplingFixedSeed(Sampling):
    def noise(self, z_mean):
        return keras.random.normal(ops.shape(z_mean), seed=42)


class SamplingDetachedSigma(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.stop_gradient(ops.exp(0.5 * z_log_var))


class VAEWithoutUpdate(VAE):
    def apply_gradients(self, loss):
        loss.backward()


class VAEMeanOverPixels(VAE):
    def reconstruction_loss(self, images, reconstructions):
        return ops.mean(keras.losses.binary_crossentropy(images, reconstructions))


# ------------------------------------------------------------- running probes and checks


@pytest.fixture(scope="module")
def digits():
    num_samples = course_lib.settings("grading", "fast")["num_samples"]
    all_train_images, _ = load_mnist("train")
    train_examples = course_lib.settings("lab3", "fast")["train_examples"]
    train_images = all_train_images[:train_examples]
    test_images, _ = load_mnist("test", limit=num_samples)
    return {
        "held_out": all_train_images[HELD_OUT_START:HELD_OUT_START + num_samples],
        "test": test_images,
        "training": train_images[np.random.default_rng(0).permutation(train_examples)[:num_samples]],
    }


def correct_namespace(digits):
    encoder = build_encoder()
    return {
        "kl_divergence": kl_divergence,
        "Sampling": Sampling,
        "VAE": VAE,
        "vae": VAE(encoder, ImagesDecoder(digits["held_out"])),
        "LATENT_DIM": LATENT_DIM,
    }


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("lab3_baseline")
    run_probes_in_process("lab3", correct_namespace(digits), folder, seed=0)
    return folder


def grade(namespace, tmp_path, baseline_dir, probes=ALL_PROBES, imports=()):
    return grade_lab("lab3", namespace, tmp_path, baseline_dir, ALL_PROBES, probes, imports)


def assert_loses_exactly(results, check_name, *words):
    check_grading.assert_loses_exactly("lab3", results, check_name, *words)


# ------------------------------------------------------------- the tests


def test_points_of_checks():
    points = check_points("lab3")
    assert points["test_kl_closed_form"] == 3
    assert sum(points.values()) == 20


def test_reference_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    z_mean = rng.normal(0.0, 2.0, size=(6, 5))
    z_log_var = rng.uniform(-3.0, 3.0, size=(6, 5))
    estimate, error = lab3_checks.monte_carlo_kl(z_mean, z_log_var)
    closed_form = gaussian_kl(z_mean, z_log_var)
    assert np.all(np.abs(estimate - closed_form) < 5.0 * error)
    assert np.all(closed_form >= 0.0)


@pytest.mark.slow
def test_correct_submission_gets_full_marks(baseline_dir):
    results = {
        result.name: result
        for result in run_checks("lab3", baseline_dir, profile="fast", context={"imports": ["course_lib", "keras"]})
    }
    assert failed(results) == set(), {name: results[name].message for name in failed(results)}
    assert sum(result.points for result in results.values()) == sum(check_points("lab3").values())


@pytest.mark.parametrize(
    ("wrong_kl", "words"),
    [(kl_sign_flipped, ("sign",)), (kl_slide_sigma_as_std, ("standard deviation", "variance"))],
)
def test_kl_formula_mistakes(wrong_kl, words, digits, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(digits), kl_divergence=wrong_kl)
    results = grade(namespace, tmp_path, baseline_dir, probes=["kl", "origin"])
    assert_loses_exactly(results, "test_kl_closed_form", *words)


def test_kl_mean_over_latent_dims(digits, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(digits), kl_divergence=kl_mean_over_dims)
    results = grade(namespace, tmp_path, baseline_dir, probes=["kl", "origin"])
    assert_loses_exactly(results, "test_kl_sums_over_latent_dims", "averages over the latent dimensions")


@pytest.mark.parametrize(
    ("wrong_sampling", "check_name", "words"),
    [
        (SamplingVarianceAsStd, "test_sampling_statistics", ("variance", "exp(0.5 * z_log_var)")),
        (SamplingUniformNoise, "test_sampling_normal_noise", ("not normally distributed",)),
        (SamplingFixedSeed, "test_sampling_fresh_noise", ("fresh noise",)),
        (SamplingDetachedSigma, "test_sampling_gradients", ("dz/dz_log_var",)),
    ],
)
def test_sampling_mistakes(wrong_sampling, check_name, words, digits, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(digits), Sampling=wrong_sampling)
    results = grade(namespace, tmp_path, baseline_dir, probes=SAMPLING_PROBES)
    assert_loses_exactly(results, check_name, *words)


def test_encoder_without_z(digits, tmp_path, baseline_dir):
    namespace = correct_namespace(digits)
    namespace["vae"] = VAE(build_encoder(num_outputs=2), ImagesDecoder(digits["held_out"]))
    results = grade(namespace, tmp_path, baseline_dir, probes=["model_shapes", "origin"])
    assert_loses_exactly(results, "test_model_shapes", "[z_mean, z_log_var, z]")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wrong_vae", "words"),
    [(VAEWithoutUpdate, ("optimizer.apply",)), (VAEMeanOverPixels, ("summed over the 784 pixels",))],
)
def test_train_step_mistakes(wrong_vae, words, digits, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(digits), VAE=wrong_vae)
    results = grade(namespace, tmp_path, baseline_dir, probes=["train_step", "origin"])
    assert_loses_exactly(results, "test_train_step", *words)


def test_train_step_is_graded_with_a_correct_kl(digits, tmp_path, baseline_dir):
    # The probe swaps in a correct kl_divergence while it trains, so a wrong KL costs
    # only the KL check's points; the notebook's own function is put back afterwards.
    namespace = dict(correct_namespace(digits), kl_divergence=kl_sign_flipped)
    results = grade(namespace, tmp_path, baseline_dir, probes=["kl", "train_step", "origin"])
    assert_loses_exactly(results, "test_kl_closed_form", "sign")
    assert namespace["kl_divergence"] is kl_sign_flipped


def test_importing_the_reference_module(digits, tmp_path, baseline_dir):
    imports = ["course_lib", "course_lib.vae", "course_lib.vae.kl_divergence"]
    results = grade(correct_namespace(digits), tmp_path, baseline_dir, probes=["origin"], imports=imports)
    assert_loses_exactly(results, "test_own_implementation", "course_lib.vae")


def test_using_the_reference_kl_fails_the_kl_checks(digits, tmp_path, baseline_dir):
    from course_lib import vae as vae_lib

    namespace = dict(correct_namespace(digits), kl_divergence=vae_lib.kl_divergence)
    results = grade(namespace, tmp_path, baseline_dir, probes=["kl", "origin"])
    assert failed(results) == {"test_kl_closed_form", "test_kl_sums_over_latent_dims", "test_own_implementation"}
    assert "reference implementation" in results["test_kl_closed_form"].message


@pytest.mark.slow
def test_using_the_reference_vae_fails_the_train_step_check(digits, tmp_path, baseline_dir):
    from course_lib import vae as vae_lib

    namespace = dict(correct_namespace(digits), VAE=vae_lib.VAE)
    results = grade(namespace, tmp_path, baseline_dir, probes=["train_step", "origin"])
    assert failed(results) == {"test_train_step", "test_own_implementation"}
    assert "course_lib.vae" in results["test_train_step"].message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("generator", "check_name", "words"),
    [
        ("untrained", "test_sample_quality", ("fréchet distance",)),
        ("noise", "test_sample_quality", ("fréchet distance",)),
        ("training_copies", "test_samples_are_not_copies", ("copies of real mnist images",)),
        ("test_copies", "test_samples_are_not_copies", ("copies of real mnist images",)),
    ],
)
def test_bad_generators(generator, check_name, words, digits, tmp_path, baseline_dir):
    num_samples = len(digits["held_out"])
    if generator == "untrained":
        decoder = build_dense_decoder()
    elif generator == "noise":
        decoder = ImagesDecoder(np.random.default_rng(0).random((num_samples,) + IMAGE_SHAPE, dtype=np.float32))
    elif generator == "test_copies":
        decoder = ImagesDecoder(digits["test"])
    else:
        decoder = ImagesDecoder(digits["training"])
    namespace = correct_namespace(digits)
    namespace["vae"] = VAE(build_encoder(), decoder)
    results = grade(namespace, tmp_path, baseline_dir, probes=["model_shapes", "samples", "origin"])
    assert_loses_exactly(results, check_name, *words)


def test_empty_notebook_scores_zero_without_crashing(tmp_path, baseline_dir):
    folder = tmp_path / "probe"
    folder.mkdir()
    run_probes_in_process("lab3", {}, folder, seed=0)
    results = {result.name: result for result in run_checks("lab3", folder, profile="fast", context={"imports": []})}
    assert set(results) == set(check_points("lab3"))
    assert all(not result.passed for result in results.values())
    assert "defines no" in results["test_kl_closed_form"].message
