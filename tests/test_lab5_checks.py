"""lab5's hidden checks against a correct submission and against one mistake at a time.

Each wrong namespace differs from the correct one in one object and must lose exactly
the points of the check that grades it, with a message that names the mistake. Probes
run in this process (no notebook, no training): the trained models are stand-ins built
from the ground truth of `course_lib.shapes`, whose codes and reconstructions show (or
fail to show) the trends of a real beta-VAE: a beta=1 model with four informative
dimensions mixing x and y and sharp reconstructions, a large-beta model with two, one
per factor, and blurry reconstructions.
"""

import numpy as np
import pytest

import course_lib
import keras
from keras import ops

from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process
from autograder.probes import lab5 as lab5_probes
from course_lib import shapes

import check_grading  # tests/check_grading.py
from check_grading import failed, grade_lab

ALL_PROBES = ("loss", "traversal", "trained", "origin")
BETAS = sorted(float(beta) for beta in course_lib.settings("lab5", "fast")["betas"])
IMAGE_SIZE = course_lib.settings("lab5", "fast")["image_size"]
LATENT_DIM = 4
EPSILON = 1e-7
# Posterior log-variances of the stand-in encoders: an informative dimension (KL of
# ~1.5 nats + mu^2 / 2), a weakly informative one (~0.2 + mu^2 / 2), a switched-off one.
SHARP_LOG_VAR = -4.0
COARSE_LOG_VAR = -1.0
BLUR_WEIGHT = 0.6


# ------------------------------------------------------------- a correct submission


def reconstruction_term(images, reconstructions):
    probabilities = ops.clip(ops.convert_to_tensor(reconstructions), EPSILON, 1.0 - EPSILON)
    images = ops.convert_to_tensor(images)
    pixel_losses = -(images * ops.log(probabilities) + (1.0 - images) * ops.log(1.0 - probabilities))
    return ops.sum(ops.reshape(pixel_losses, (ops.shape(images)[0], -1)), axis=1)


def kl_term(z_mean, z_log_var):
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return 0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=1)


def beta_vae_loss(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = ops.mean(kl_term(z_mean, z_log_var))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def latent_traversal(decoder, z, dimension, values):
    codes = np.repeat(np.asarray(z, dtype="float32")[np.newaxis], len(values), axis=0)
    codes[:, dimension] = values
    return np.asarray(decoder.predict(codes, verbose=0))


class BetaVAE:
    """Stands for the notebook's class (only its module is inspected)."""


# ------------------------------------------------------------- stand-in trained models


def positions(images):
    """Standardized (x, y) of the square in each image, from its centre of mass."""
    pixels = np.asarray(images, dtype=np.float64)[..., 0]
    grid = np.arange(pixels.shape[1]) + 0.5
    mass = pixels.sum(axis=(1, 2))
    x = (pixels.sum(axis=1) * grid).sum(axis=1) / mass
    y = (pixels.sum(axis=2) * grid).sum(axis=1) / mass
    centre = pixels.shape[1] / 2.0
    return np.stack([x - centre, y - centre], axis=1) / (0.18 * pixels.shape[1])


class StandInEncoder:
    """Codes from the true position.

    `mixed` spreads x and y over all four dimensions; otherwise two dimensions are used,
    one per factor, or, with `rotated`, each mixing x and y (entangled). `sharp` keeps
    every posterior narrow, so that all four dimensions pay KL (are active).
    """

    def __init__(self, mixed, rotated=False, sharp=False):
        self.mixed = mixed
        self.rotated = rotated
        self.sharp = sharp

    def predict(self, images, batch_size=None, verbose=0):
        x, y = positions(images).T
        if self.mixed:
            z_mean = np.stack([x + y, x - y, 0.8 * x + 0.6 * y, 0.6 * x - 0.8 * y], axis=1) / np.sqrt(2.0)
            z_log_var = np.full_like(z_mean, SHARP_LOG_VAR)
        else:
            if self.rotated:
                x, y = (x + y) / np.sqrt(2.0), (x - y) / np.sqrt(2.0)
            z_mean = np.stack([x, np.zeros_like(x), y, np.zeros_like(x)], axis=1)
            z_log_var = np.tile([COARSE_LOG_VAR, 0.0, COARSE_LOG_VAR, 0.0], (len(x), 1))
            if self.sharp:
                z_log_var = np.full_like(z_mean, SHARP_LOG_VAR)
        z = z_mean + np.exp(0.5 * z_log_var) * np.random.default_rng(0).standard_normal(z_mean.shape)
        return [z_mean.astype("float32"), z_log_var.astype("float32"), z.astype("float32")]


class StandInDecoder:
    """Renders the images the probe encoded (it remembers them by their codes' order)."""

    def __init__(self, encoder_images, kind):
        self.encoder_images = encoder_images
        self.kind = kind

    def predict(self, codes, batch_size=None, verbose=0):
        images = self.encoder_images["last"]
        if len(images) != len(codes):
            raise ValueError("stand-in decoder: codes do not match the last encoded images")
        if self.kind == "sharp":
            return images.copy()
        if self.kind == "blurry":
            return BLUR_WEIGHT * images + (1.0 - BLUR_WEIGHT) * images.mean(axis=0, keepdims=True)
        if self.kind == "untrained":
            return np.full_like(images, 0.5)
        if self.kind == "inverted":
            return np.clip(1.0 - images, EPSILON, 1.0 - EPSILON)
        raise ValueError(self.kind)


class RememberingEncoder:
    def __init__(self, encoder, memory):
        self.encoder, self.memory = encoder, memory

    def predict(self, images, batch_size=None, verbose=0):
        self.memory["last"] = np.asarray(images, dtype="float32")
        return self.encoder.predict(images)


class StandInModel:
    def __init__(self, mixed, decoder_kind, rotated=False, sharp=False):
        memory = {}
        self.encoder = RememberingEncoder(StandInEncoder(mixed, rotated, sharp), memory)
        self.decoder = StandInDecoder(memory, decoder_kind)


def small_beta_model():
    return StandInModel(mixed=True, decoder_kind="sharp")


def large_beta_model():
    return StandInModel(mixed=False, decoder_kind="blurry")


def correct_namespace():
    return {
        "beta_vae_loss": beta_vae_loss,
        "latent_traversal": latent_traversal,
        "BetaVAE": BetaVAE,
        "models": {BETAS[0]: small_beta_model(), BETAS[-1]: large_beta_model()},
        "LATENT_DIM": LATENT_DIM,
    }


# ------------------------------------------------------------- one mistake at a time


def loss_beta_ignored(images, reconstructions, z_mean, z_log_var, beta):
    return beta_vae_loss(images, reconstructions, z_mean, z_log_var, 1.0)


def loss_beta_on_reconstruction(images, reconstructions, z_mean, z_log_var, beta):
    _, reconstruction_loss, kl_loss = beta_vae_loss(images, reconstructions, z_mean, z_log_var, beta)
    return beta * reconstruction_loss + kl_loss, reconstruction_loss, kl_loss


def loss_reports_weighted_kl(images, reconstructions, z_mean, z_log_var, beta):
    loss, reconstruction_loss, kl_loss = beta_vae_loss(images, reconstructions, z_mean, z_log_var, beta)
    return loss, reconstruction_loss, beta * kl_loss


def loss_mean_over_pixels(images, reconstructions, z_mean, z_log_var, beta):
    num_pixels = int(np.prod(np.shape(images)[1:]))
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions)) / num_pixels
    kl_loss = ops.mean(kl_term(z_mean, z_log_var))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_kl_sign_flipped(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = -ops.mean(kl_term(z_mean, z_log_var))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_kl_mean_over_dims(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = ops.mean(kl_term(z_mean, z_log_var)) / ops.shape(z_mean)[1]
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_per_example(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = reconstruction_term(images, reconstructions)
    kl_loss = kl_term(z_mean, z_log_var)
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def traversal_adds_values(decoder, z, dimension, values):
    codes = np.repeat(np.asarray(z, dtype="float32")[np.newaxis], len(values), axis=0)
    codes[:, dimension] += values
    return np.asarray(decoder.predict(codes, verbose=0))


def traversal_moves_every_dimension(decoder, z, dimension, values):
    codes = np.repeat(np.asarray(z, dtype="float32")[np.newaxis], len(values), axis=0)
    codes[:] = np.asarray(values, dtype="float32")[:, np.newaxis]
    return np.asarray(decoder.predict(codes, verbose=0))


def traversal_modifies_z(decoder, z, dimension, values):
    images = latent_traversal(decoder, z, dimension, values)
    z[dimension] = values[-1]
    return images


def traversal_returns_codes(decoder, z, dimension, values):
    codes = np.repeat(np.asarray(z, dtype="float32")[np.newaxis], len(values), axis=0)
    codes[:, dimension] = values
    return codes


def loss_kl_without_minus_one(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = ops.mean(0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - z_log_var, axis=1))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_kl_always_zero(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = 0.0 * ops.mean(z_mean)
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_kl_without_half(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = 2.0 * ops.mean(kl_term(z_mean, z_log_var))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_kl_stop_gradient(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    kl_loss = ops.stop_gradient(ops.mean(kl_term(z_mean, z_log_var)))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_through_numpy(images, reconstructions, z_mean, z_log_var, beta):
    values = [ops.convert_to_numpy(value) for value in (images, reconstructions, z_mean, z_log_var)]
    reconstruction_loss = ops.convert_to_tensor(float(ops.convert_to_numpy(ops.mean(reconstruction_term(*values[:2])))))
    kl_loss = ops.convert_to_tensor(float(ops.convert_to_numpy(ops.mean(kl_term(*values[2:])))))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_beta_squared(images, reconstructions, z_mean, z_log_var, beta):
    _, reconstruction_loss, kl_loss = beta_vae_loss(images, reconstructions, z_mean, z_log_var, beta)
    return reconstruction_loss + beta**2 * kl_loss, reconstruction_loss, kl_loss


def loss_reconstruction_summed_over_batch(images, reconstructions, z_mean, z_log_var, beta):
    reconstruction_loss = ops.sum(reconstruction_term(images, reconstructions))
    kl_loss = ops.mean(kl_term(z_mean, z_log_var))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def traversal_always_dimension_zero(decoder, z, dimension, values):
    return latent_traversal(decoder, z, 0, values)


# ------------------------------------------------------------- correct variants


def loss_keras_crossentropy(images, reconstructions, z_mean, z_log_var, beta):
    """Keras' binary cross-entropy per pixel, the KL as -0.5 * (1 + log var - mu^2 - var)."""
    pixel_losses = keras.losses.binary_crossentropy(images[..., None], reconstructions[..., None])
    reconstruction_loss = ops.mean(ops.sum(pixel_losses, axis=(1, 2, 3)))
    kl_loss = ops.mean(-0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_torch_ops(images, reconstructions, z_mean, z_log_var, beta):
    """Written with torch directly (the course's backend), sums in another order."""
    import torch

    probabilities = torch.clamp(reconstructions, EPSILON, 1.0 - EPSILON)
    pixel_losses = -(images * torch.log(probabilities) + (1.0 - images) * torch.log1p(-probabilities))
    reconstruction_loss = pixel_losses.sum() / images.shape[0]
    kl_loss = 0.5 * (torch.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var).sum(dim=1).mean()
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def loss_variance_form(images, reconstructions, z_mean, z_log_var, beta):
    """The KL from the variance and the standard deviation (sqrt(exp)), per-image sums."""
    variance = ops.square(ops.sqrt(ops.exp(z_log_var)))
    kl_loss = ops.mean(ops.sum(0.5 * (variance + ops.square(z_mean) - 1.0) - 0.5 * z_log_var, axis=1))
    reconstruction_loss = ops.mean(reconstruction_term(images, reconstructions))
    return reconstruction_loss + beta * kl_loss, reconstruction_loss, kl_loss


def traversal_one_code_at_a_time(decoder, z, dimension, values):
    """A loop that decodes one code per value, stacked."""
    images = []
    for value in values:
        code = np.array(z, dtype="float32", copy=True)
        code[dimension] = value
        images.append(ops.convert_to_numpy(decoder(code[np.newaxis]))[0])
    return np.stack(images)


def traversal_tiled(decoder, z, dimension, values):
    """np.tile of the code, a one-hot mask, decoder.predict_on_batch."""
    codes = np.tile(np.asarray(z, dtype="float32"), (len(values), 1))
    mask = np.eye(len(z), dtype="float32")[dimension]
    codes = codes * (1.0 - mask) + np.asarray(values, dtype="float32")[:, np.newaxis] * mask
    return np.asarray(decoder.predict_on_batch(codes))


LOSS, TERMS, TRAVERSAL = "test_beta_weights_the_kl", "test_loss_terms", "test_latent_traversal"
# The planted bugs of the graded definitions, as students write them: (name, function, the
# one check that loses all its points, words of its message). The trained-model bugs (a
# loss without beta, a model that did not train, ...) are in test_trend_mistakes and the
# tests after it, with stand-in models.
PLANTED_BUGS = [
    ("beta_ignored", "beta_vae_loss", loss_beta_ignored, LOSS, ("beta is ignored",)),
    ("beta_on_reconstruction", "beta_vae_loss", loss_beta_on_reconstruction, LOSS, ("multiplies the reconstruction term",)),
    ("weighted_kl_reported", "beta_vae_loss", loss_reports_weighted_kl, LOSS, ("unweighted",)),
    ("beta_squared", "beta_vae_loss", loss_beta_squared, LOSS, ("not reconstruction_loss + beta * kl_loss", "16.0")),
    ("reconstruction_mean_over_pixels", "beta_vae_loss", loss_mean_over_pixels, TERMS, ("averaged over the 256 pixels",)),
    ("reconstruction_summed_over_batch", "beta_vae_loss", loss_reconstruction_summed_over_batch, TERMS,
     ("summed over the batch; average it",)),
    ("kl_sign_flipped", "beta_vae_loss", loss_kl_sign_flipped, TERMS, ("sign is flipped",)),
    ("kl_mean_over_dimensions", "beta_vae_loss", loss_kl_mean_over_dims, TERMS, ("averages over the latent dimensions",)),
    ("kl_without_minus_one", "beta_vae_loss", loss_kl_without_minus_one, TERMS, ("the -1 term is missing",)),
    ("kl_always_zero", "beta_vae_loss", loss_kl_always_zero, TERMS, ("kl_loss is 0", "always 0")),
    ("kl_without_half", "beta_vae_loss", loss_kl_without_half, TERMS, ("factor 0.5 is missing",)),
    ("kl_stop_gradient", "beta_vae_loss", loss_kl_stop_gradient, TERMS, ("no gradient to z_mean, z_log_var", "KL term")),
    ("loss_through_numpy", "beta_vae_loss", loss_through_numpy, TERMS, ("no gradient flows back", "no numpy conversion")),
    ("terms_per_example", "beta_vae_loss", loss_per_example, TERMS, ("three scalars", "[16]")),
    ("traversal_adds_values", "latent_traversal", traversal_adds_values, TRAVERSAL, ("added to z's value",)),
    ("traversal_moves_every_dimension", "latent_traversal", traversal_moves_every_dimension, TRAVERSAL, ("other than",)),
    ("traversal_ignores_dimension", "latent_traversal", traversal_always_dimension_zero, TRAVERSAL, ("other than 2",)),
    ("traversal_modifies_z", "latent_traversal", traversal_modifies_z, TRAVERSAL, ("modified the z",)),
    ("traversal_returns_codes", "latent_traversal", traversal_returns_codes, TRAVERSAL, ("wrong shape",)),
]
CORRECT_VARIANTS = [
    ("keras_crossentropy_and_keras_io_kl", "beta_vae_loss", loss_keras_crossentropy),
    ("torch_ops_other_sum_order", "beta_vae_loss", loss_torch_ops),
    ("kl_from_variance_and_sqrt", "beta_vae_loss", loss_variance_form),
    ("traversal_one_code_at_a_time", "latent_traversal", traversal_one_code_at_a_time),
    ("traversal_tiled_with_mask", "latent_traversal", traversal_tiled),
]
PROBE_OF = {"beta_vae_loss": "loss", "latent_traversal": "traversal"}


# ------------------------------------------------------------- running probes and checks


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab5_baseline")
    run_probes_in_process("lab5", correct_namespace(), folder, seed=0)
    return folder


def grade(namespace, tmp_path, baseline_dir, probes=ALL_PROBES, imports=()):
    return grade_lab("lab5", namespace, tmp_path, baseline_dir, ALL_PROBES, probes, imports)


def assert_loses_exactly(results, check_name, *words):
    check_grading.assert_loses_exactly("lab5", results, check_name, *words)


# ------------------------------------------------------------- the tests


def test_points_of_checks():
    points = check_points("lab5")
    assert points["test_beta_weights_the_kl"] == 3
    assert points["test_mig_rises_with_beta"] == 2
    assert sum(points.values()) == 14


def test_stand_in_positions_follow_the_factors():
    images, factors, _ = shapes.generate_shapes(200, IMAGE_SIZE, seed=3, fixed_factors=lab5_probes.FIXED_FACTORS)
    x, y = positions(images).T
    assert np.corrcoef(x, factors[:, shapes.POSITION_X_AXIS])[0, 1] > 0.99
    assert np.corrcoef(y, factors[:, shapes.POSITION_Y_AXIS])[0, 1] > 0.99


def test_correct_submission_gets_full_marks(baseline_dir):
    results = {
        result.name: result
        for result in run_checks("lab5", baseline_dir, profile="fast", context={"imports": ["course_lib", "course_lib.vae.Sampling"]})
    }
    assert failed(results) == set(), {name: results[name].message for name in failed(results)}
    assert sum(result.points for result in results.values()) == sum(check_points("lab5").values())


@pytest.mark.parametrize(
    ("name", "function", "check_name", "words"), [case[1:] for case in PLANTED_BUGS], ids=[case[0] for case in PLANTED_BUGS]
)
def test_planted_bug_loses_exactly_its_check(name, function, check_name, words, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(), **{name: function})
    results = grade(namespace, tmp_path, baseline_dir, probes=[PROBE_OF[name], "origin"])
    assert_loses_exactly(results, check_name, *words)


@pytest.mark.parametrize(
    ("name", "function"), [case[1:] for case in CORRECT_VARIANTS], ids=[case[0] for case in CORRECT_VARIANTS]
)
def test_correct_variant_keeps_full_marks(name, function, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(), **{name: function})
    results = grade(namespace, tmp_path, baseline_dir, probes=[PROBE_OF[name], "origin"])
    assert failed(results) == set(), {result: results[result].message for result in failed(results)}


@pytest.mark.parametrize(
    ("models", "check_name", "words"),
    [
        # A large-beta code (two coarse dimensions) decoded as sharply as with beta=1.
        (lambda: {BETAS[0]: small_beta_model(), BETAS[-1]: StandInModel(False, "sharp")},
         "test_reconstruction_rises_with_beta", ("reconstruction error should grow",)),
        # Reconstructions get worse, one dimension per factor, but all four pay KL.
        (lambda: {BETAS[0]: small_beta_model(), BETAS[-1]: StandInModel(False, "blurry", sharp=True)},
         "test_kl_falls_with_beta", ("less information in the code",)),
        # Less information, blurrier, but each of the two dimensions mixes x and y.
        (lambda: {BETAS[0]: small_beta_model(), BETAS[-1]: StandInModel(False, "blurry", rotated=True)},
         "test_mig_rises_with_beta", ("higher mig",)),
        # Neither model reconstructs: the beta=1 one outputs 0.5 everywhere.
        (lambda: {BETAS[0]: StandInModel(True, "untrained"), BETAS[-1]: StandInModel(False, "inverted")},
         "test_trained_models", ("was it trained",)),
    ],
)
def test_trend_mistakes(models, check_name, words, tmp_path, baseline_dir):
    namespace = dict(correct_namespace(), models=models())
    results = grade(namespace, tmp_path, baseline_dir, probes=["trained", "origin"])
    assert_loses_exactly(results, check_name, *words)


def test_beta_ignored_in_training_fails_every_trend(tmp_path, baseline_dir):
    # What a loss without beta gives: every model is the beta=1 model.
    same = small_beta_model()
    namespace = dict(correct_namespace(), models={beta: same for beta in BETAS})
    results = grade(namespace, tmp_path, baseline_dir, probes=["trained", "origin"])
    assert failed(results) == {"test_reconstruction_rises_with_beta", "test_kl_falls_with_beta", "test_mig_rises_with_beta"}


def test_missing_beta(tmp_path, baseline_dir):
    namespace = dict(correct_namespace(), models={BETAS[0]: small_beta_model()})
    results = grade(namespace, tmp_path, baseline_dir, probes=["trained", "origin"])
    assert failed(results) == {
        "test_trained_models", "test_reconstruction_rises_with_beta", "test_kl_falls_with_beta", "test_mig_rises_with_beta"
    }
    assert "no entry for" in results["test_trained_models"].message


def test_importing_the_reference_vae(tmp_path, baseline_dir):
    imports = ["course_lib", "course_lib.vae", "course_lib.vae.VAE"]
    results = grade(correct_namespace(), tmp_path, baseline_dir, probes=["origin"], imports=imports)
    assert_loses_exactly(results, "test_own_implementation", "course_lib.vae.vae")


def test_models_of_the_reference_class(tmp_path, baseline_dir):
    from course_lib import vae as vae_lib

    reference = vae_lib.VAE(vae_lib.build_encoder((16, 16, 1), LATENT_DIM), vae_lib.build_decoder((16, 16, 1), LATENT_DIM))
    namespace = dict(correct_namespace())
    namespace["models"] = dict(namespace["models"])
    namespace["models"]["extra"] = reference
    results = grade(namespace, tmp_path, baseline_dir, probes=["origin"])
    assert_loses_exactly(results, "test_own_implementation", "course_lib.vae")


def test_nothing_trained_earns_no_own_implementation_point(tmp_path, baseline_dir):
    # The student version: the functions exist (as stubs) but no model was trained.
    namespace = dict(correct_namespace(), models={})
    results = grade(namespace, tmp_path, baseline_dir, probes=["origin"])
    assert_loses_exactly(results, "test_own_implementation", "no trained model")


def test_empty_notebook_scores_zero_without_crashing(tmp_path):
    folder = tmp_path / "probe"
    folder.mkdir()
    run_probes_in_process("lab5", {}, folder, seed=0)
    results = {result.name: result for result in run_checks("lab5", folder, profile="fast", context={"imports": []})}
    assert set(results) == set(check_points("lab5"))
    assert all(not result.passed for result in results.values())
    assert "defines no" in results["test_beta_weights_the_kl"].message


def test_keras_decoder_output_is_accepted_by_the_traversal_probe():
    # The probe's decoder is a real Keras model: a correct traversal reads the code back.
    decoder = lab5_probes._linear_decoder()
    z = np.arange(lab5_probes.TRAVERSAL_LATENT_DIM, dtype="float32")
    images = latent_traversal(decoder, z, 1, np.array([-1.0, 7.0], dtype="float32"))
    codes = images.reshape(2, -1)[:, : lab5_probes.TRAVERSAL_LATENT_DIM]
    np.testing.assert_allclose(codes, [[0, -1, 2, 3, 4], [0, 7, 2, 3, 4]])
    assert keras.ops.convert_to_numpy(decoder(z[None])).shape == (1,) + lab5_probes.TRAVERSAL_IMAGE_SHAPE
