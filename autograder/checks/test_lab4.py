"""Hidden checks of lab4 (convolutional VAE on CIFAR-10).

Points: decoder output 2, transposed convolutions 2, encoder outputs 1, loss reduction 2,
loss formula 3, prior samples 4, reconstructions 2 (16 in all). Sample-quality and
reconstruction thresholds come from autograder/calibration/lab4.json (measured runs).
"""

import functools
import math

import numpy as np

from autograder import quality
from autograder.checking import CheckFailure, check, require_finite, require_shape

IMAGE_SHAPE = (32, 32, 3)
NUM_PIXEL_VALUES = int(np.prod(IMAGE_SHAPE))
# Must equal course_lib.vae.MIN_PIXEL_VARIANCE, the floor the notebook asks for.
MIN_PIXEL_VARIANCE = 1e-4
TILE_FACTOR = 4  # the loss probe tiles images 2 x 2
RANGE_TOLERANCE = 1e-5
LOSS_RTOL = 1e-3
LOSS_ATOL = 1e-2
PERFECT_TOLERANCE = 1e-3
# The formula check forgives a wrong reduction (graded by the reduction check): a mean
# over all values, over pixels only, or over channels only gives these factors.
REDUCTION_SCALES = {
    1.0: "a sum over pixels and channels",
    1.0 / NUM_PIXEL_VALUES: "a mean over pixels and channels",
    1.0 / (IMAGE_SHAPE[0] * IMAGE_SHAPE[1]): "a mean over pixels",
    1.0 / IMAGE_SHAPE[2]: "a mean over channels",
}
SCALE_RTOL = 1e-3
COURSE_LIB_DECODER_NAMES = ("build_decoder", "decoder_outputs", "build_autoencoder")
COURSE_LIB_LOSS_NAMES = ("gaussian_nll", "bernoulli_nll", "per_image_terms", "_batch_variance")
MAX_BAD_SHOWN = 3


def _squared_error_and_variance(images, reconstructions):
    """(x - x_hat)^2 in float64, and the notebook's variance: its batch mean, floored."""
    squared_error = (np.asarray(images, dtype=np.float64) - np.asarray(reconstructions, dtype=np.float64)) ** 2
    return squared_error, max(float(np.mean(squared_error)), MIN_PIXEL_VARIANCE)


def _gaussian_nll_parts(images, reconstructions):
    """Per image: (0.5 * sum (x - x_hat)^2 / variance, 0.5 * D * log(2 pi variance)), the batch's ML variance."""
    squared_error, variance = _squared_error_and_variance(images, reconstructions)
    per_image = squared_error.reshape(squared_error.shape[0], -1)
    num_values = per_image.shape[1]
    return 0.5 * per_image.sum(axis=1) / variance, np.full(images.shape[0], 0.5 * num_values * math.log(2.0 * math.pi * variance))


def reference_reconstruction_loss(images, reconstructions):
    """The notebook's formula: per-image Gaussian NLL with the batch's ML variance, in nats.

    `variance = max(mean((x - x_hat)^2 over the whole batch), MIN_PIXEL_VARIANCE)`, then
    `sum over pixels and channels of 0.5 * (x - x_hat)^2 / variance + 0.5 * log(2 pi variance)`.
    """
    quadratic, normalizer = _gaussian_nll_parts(images, reconstructions)
    return quadratic + normalizer


def _per_pixel_variance_loss(images, reconstructions):
    """The NLL with one variance per pixel and channel, fitted over the batch (axis 0)."""
    squared_error, _ = _squared_error_and_variance(images, reconstructions)
    variance = np.maximum(squared_error.mean(axis=0, keepdims=True), MIN_PIXEL_VARIANCE)
    per_value = 0.5 * squared_error / variance + 0.5 * np.log(2.0 * math.pi * variance)
    return per_value.reshape(len(per_value), -1).sum(axis=1)


# Mistakes in the formula the formula check names: what it says -> the per-image values, from
# the reference's parts (quadratic, normalizer, variance, number of values) and the arrays.
FORMULA_MISTAKES = {
    "the log term has the wrong sign: add + 0.5 * log(2 pi variance), do not subtract it":
        lambda part, images, reconstructions: part["quadratic"] - part["normalizer"],
    "the factor 0.5 of the squared-error term is missing: 0.5 * (x - x_hat)^2 / variance":
        lambda part, images, reconstructions: 2.0 * part["quadratic"] + part["normalizer"],
    "the 0.5 * log(2 pi variance) term is missing":
        lambda part, images, reconstructions: part["quadratic"],
    "the log term is log(2 pi variance) without its factor 0.5: 0.5 * log(2 pi variance)":
        lambda part, images, reconstructions: part["quadratic"] + 2.0 * part["normalizer"],
    "the 2 pi is missing from the log term: 0.5 * log(2 pi variance), not 0.5 * log(variance)":
        lambda part, images, reconstructions: part["quadratic"] + part["normalizer"]
        - 0.5 * part["num_values"] * math.log(2.0 * math.pi),
    "the variance is fixed at 1 instead of fitted: variance = max(mean squared error over the batch, "
    "MIN_PIXEL_VARIANCE)":
        lambda part, images, reconstructions: part["quadratic"] * part["variance"]
        + 0.5 * part["num_values"] * math.log(2.0 * math.pi),
    "the variance is fitted per pixel over the batch (axis 0) instead of once: the notebook's model has one "
    "variance for all pixels, the mean squared error over the whole batch (ops.mean without an axis)":
        lambda part, images, reconstructions: _per_pixel_variance_loss(images, reconstructions),
}


def _formula_mistake(images, reconstructions, noisy):
    """The name of a known formula mistake that explains the per-image values `noisy`, or None."""
    quadratic, normalizer = _gaussian_nll_parts(images, reconstructions)
    squared_error, variance = _squared_error_and_variance(images, reconstructions)
    part = {"quadratic": quadratic, "normalizer": normalizer, "variance": variance,
            "num_values": int(np.prod(squared_error.shape[1:]))}
    for name, variant in FORMULA_MISTAKES.items():
        values = variant(part, images, reconstructions)
        if noisy.size == quadratic.size and any(_close(noisy, scale * values) for scale in REDUCTION_SCALES):
            return name
    return None


def _delegated(names, forbidden):
    return sorted(set(names) & set(forbidden))


def _require_own_decoder_function(facts):
    if facts.get("function_module") not in (None, "__main__"):
        raise CheckFailure(
            "build_cifar_decoder comes from another module "
            f"({facts.get('function_module')}); write it in the notebook."
        )
    used = _delegated(facts.get("referenced_names", []), COURSE_LIB_DECODER_NAMES)
    if used:
        raise CheckFailure(
            f"build_cifar_decoder calls course_lib's decoder ({', '.join(used)}); "
            "build the transposed-convolution layers yourself."
        )


# ---------------------------------------------------------------- decoder


@check(points=2, probes=("decoder",))
def test_decoder_output_shape_and_range(probe):
    facts = probe.facts("decoder")
    _require_own_decoder_function(facts)
    if facts.get("other_error"):
        raise CheckFailure(
            f"build_cifar_decoder({facts['other_latent_dim']}) failed on {facts['other_latent_dim']}-dimensional "
            f"codes ({facts['other_error']}): the decoder must work for any latent_dim. Use "
            "keras.Input(shape=(latent_dim,)), not LATENT_DIM or a fixed number."
        )
    decoded = [("main", facts["latent_dim"], ""), ("other", facts["other_latent_dim"], "")]
    if "decoder/extreme_images" in probe.arrays:
        decoded.append(("extreme", facts["latent_dim"], " of norm ~1000 (any code must decode to pixels)"))
    for key, size, kind in decoded:
        images = probe.array("decoder", f"{key}_images")
        what = f"build_cifar_decoder({size}) applied to a batch of {size}-dimensional codes{kind}"
        require_shape(images, (None, *IMAGE_SHAPE), what)
        require_finite(images, what)
        low, high = float(images.min()), float(images.max())
        if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
            raise CheckFailure(
                f"{what} gives values in [{low:.3g}, {high:.3g}]; pixels must lie in [0, 1] "
                "(end with a sigmoid)."
            )


@check(points=2, probes=("decoder",))
def test_decoder_uses_transposed_convolutions(probe):
    facts = probe.facts("decoder")
    _require_own_decoder_function(facts)
    transposed = [layer for layer in facts.get("layers", []) if layer.get("transposed")]
    if not transposed:
        raise CheckFailure(
            "The decoder has no Conv2DTranspose layer: upsample with transposed convolutions, "
            "the topic of this lab."
        )
    if not any(max(layer["strides"]) > 1 for layer in transposed):
        raise CheckFailure(
            "No Conv2DTranspose layer of the decoder has strides > 1, so none of them "
            "upsamples: use stride-2 transposed convolutions to grow the image to 32x32."
        )


# ---------------------------------------------------------------- encoder


@check(points=1, probes=("encoder",))
def test_encoder_outputs(probe):
    facts = probe.facts("encoder")
    latent_dim = facts["latent_dim"]
    if facts["num_outputs"] != 3:
        raise CheckFailure(
            f"vae.encoder returns {facts['num_outputs']} output(s); expected 3: "
            "[z_mean, z_log_var, z]."
        )
    for index, name in enumerate(("z_mean", "z_log_var", "z")):
        output = probe.array("encoder", f"output{index}")
        require_shape(output, (None, latent_dim), f"vae.encoder's {name}")
        require_finite(output, f"vae.encoder's {name}")


# ---------------------------------------------------------------- reconstruction loss


def _loss_arrays(probe):
    return (
        probe.array("loss", "images"),
        probe.array("loss", "reconstructions"),
        probe.array("loss", "loss_noisy"),
        probe.array("loss", "loss_perfect"),
    )


def _close(values, expected, rtol=LOSS_RTOL):
    """Whether two vectors agree, relative to the size of `expected` as a whole."""
    values = np.asarray(values, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return bool(np.linalg.norm(values - expected) <= rtol * np.linalg.norm(expected) + LOSS_ATOL)


@check(points=2, probes=("loss",))
def test_reconstruction_loss_sums_over_pixels(probe):
    images, reconstructions, loss_noisy, _ = _loss_arrays(probe)
    batch = images.shape[0]
    shape = tuple(np.shape(loss_noisy))
    if shape == ():
        raise CheckFailure(
            "reconstruction_loss returns one number for the whole batch; return one value "
            f"per image, shape ({batch},) (no mean over the batch)."
        )
    if shape[0] == batch and len(shape) > 1:
        raise CheckFailure(
            f"reconstruction_loss returns shape {shape}: it sums over the wrong axes. Sum over "
            f"height, width and channels (axes 1, 2, 3) to get shape ({batch},)."
        )
    require_shape(loss_noisy, (batch,), "reconstruction_loss(images, reconstructions)")
    require_finite(loss_noisy, "reconstruction_loss(images, reconstructions)")
    facts = probe.facts("loss")
    if facts.get("tiled_error") is None:
        loss_tiled = probe.array("loss", "loss_tiled")
        if np.shape(loss_tiled) == (batch,):
            if _close(loss_tiled, TILE_FACTOR * loss_noisy):
                return
            if _close(loss_tiled, loss_noisy):
                raise CheckFailure(
                    "reconstruction_loss averages over the pixels instead of summing them: the "
                    "same image drawn twice as high and wide gets the same loss, not 4 times it."
                )
    # Fallback (loss written for 32x32 images only, or not of the documented form):
    # compare with the documented formula itself.
    expected = reference_reconstruction_loss(images, reconstructions)
    if _close(loss_noisy, expected):
        return
    for scale, name in REDUCTION_SCALES.items():
        if scale != 1.0 and _close(loss_noisy, scale * expected):
            raise CheckFailure(
                f"reconstruction_loss takes {name} instead of summing over all pixels and "
                "channels of each image."
            )


@check(points=3, probes=("loss",))
def test_reconstruction_loss_formula(probe):
    images, reconstructions, loss_noisy, loss_perfect = _loss_arrays(probe)
    facts = probe.facts("loss")
    if facts.get("function_module") not in (None, "__main__"):
        raise CheckFailure(
            f"reconstruction_loss comes from another module ({facts.get('function_module')}); "
            "write it in the notebook."
        )
    used = _delegated(facts.get("referenced_names", []), COURSE_LIB_LOSS_NAMES)
    if used:
        raise CheckFailure(
            f"reconstruction_loss calls course_lib ({', '.join(used)}); write the formula yourself."
        )
    batch = images.shape[0]
    expected_noisy = reference_reconstruction_loss(images, reconstructions)
    expected_perfect = reference_reconstruction_loss(images, images)
    per_image = []
    for name, values in (("noisy", loss_noisy), ("perfect", loss_perfect)):
        values = np.asarray(values, dtype=np.float64)
        if values.size == 1:
            values = values.reshape(1)  # one number for the batch: graded by the reduction check
        elif values.ndim == 0 or values.shape[0] != batch:
            raise CheckFailure(
                f"reconstruction_loss returns shape {values.shape} for a batch of {batch} images; it needs "
                f"one value per image, shape ({batch},), or one for the batch, to be compared with the formula."
            )
        else:  # a wrong reduction is the other check's business: reduce what is left
            values = values.reshape(batch, -1).sum(axis=1)
        if not np.all(np.isfinite(values)):
            raise CheckFailure(
                f"reconstruction_loss on {name} reconstructions is not finite ({values[:3]}): floor the variance, "
                "variance = ops.maximum(mean squared error over the batch, MIN_PIXEL_VARIANCE), so that a "
                "perfect reconstruction (squared error 0) keeps log(variance) finite."
            )
        per_image.append(values)
    noisy, perfect = per_image
    mistake = _formula_mistake(images, reconstructions, noisy)
    if mistake:
        raise CheckFailure(
            f"reconstruction_loss is not the Gaussian negative log-likelihood of the notebook: {mistake}. For the "
            f"first noisy image it should give {expected_noisy[0]:.1f}; yours gives {noisy[0]:.1f}."
        )
    if noisy.size == 1:  # the batch reduced too: compare with the formula reduced alike
        batch_sum = np.array([expected_noisy.sum(), expected_perfect.sum()])
        candidates = [batch_sum, batch_sum / batch]
        measured = np.concatenate([noisy, perfect])
        if any(_close(measured, scale * candidate) for candidate in candidates for scale in REDUCTION_SCALES):
            return
    slack = PERFECT_TOLERANCE * np.abs(noisy) + PERFECT_TOLERANCE
    if np.any(perfect > noisy + slack):
        raise CheckFailure(
            "reconstruction_loss(images, images) is not the smallest value: a perfect "
            "reconstruction must get a lower loss than a noisy one."
        )
    if noisy.size == batch:
        expected = np.concatenate([expected_noisy, expected_perfect])
        measured = np.concatenate([noisy, perfect])
        for scale in REDUCTION_SCALES:
            if _close(measured, scale * expected):
                return
    raise CheckFailure(
        "reconstruction_loss does not match the Gaussian negative log-likelihood of the notebook: "
        "variance = max(mean squared error over the batch, 1e-4), then per image the sum over "
        "pixels and channels of 0.5 * (x - x_hat)^2 / variance + 0.5 * log(2 pi variance). "
        f"For the first noisy image it should give {expected_noisy[0]:.1f}, for a perfect reconstruction "
        f"{expected_perfect[0]:.1f}; yours gives {noisy[0]:.1f} and {perfect[0]:.1f}."
    )


# ---------------------------------------------------------------- trained model


def _with_decoder_origin(probe, facts):
    """Whether vae.decoder is built by build_cifar_decoder is found by the "encoder" item,
    which runs the notebook's function; the sample items read the saved model only."""
    facts = dict(facts)
    try:
        facts["decoder_from_function"] = probe.facts("encoder").get("decoder_from_function")
    except CheckFailure:
        pass
    return facts


def _require_student_model(facts):
    if facts.get("vae_module") == "course_lib.vae":
        raise CheckFailure(
            f"`vae` is course_lib's {facts.get('vae_class')}, which never calls your "
            "reconstruction_loss: train the notebook's model class instead."
        )
    if facts.get("decoder_from_function") is False:
        raise CheckFailure(
            "vae.decoder is not built by build_cifar_decoder(LATENT_DIM): train your own decoder."
        )


def _require_images(images, expected_count, what):
    require_shape(images, (expected_count, *IMAGE_SHAPE), what)
    require_finite(images, what)
    low, high = float(images.min()), float(images.max())
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise CheckFailure(f"{what} has values in [{low:.3g}, {high:.3g}]; pixels must lie in [0, 1].")
    return np.clip(images, 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _exact_test_images():
    from course_lib.data import load_cifar10

    return load_cifar10("test", exact_only=True)[0]


def reconstruction_mse(reconstructions):
    """Mean squared error per pixel value between `reconstructions` and the exact test images.

    Args:
        reconstructions: float array shaped like the 1,000 exact CIFAR-10 test images, in [0, 1].
    """
    return float(np.mean((reconstructions - _exact_test_images()) ** 2))


@check(points=4, probes=("samples", "encoder"))
def test_prior_sample_quality(probe):
    facts = probe.facts("samples")
    _require_student_model(_with_decoder_origin(probe, facts))
    samples = probe.array("samples", "samples")
    samples = _require_images(samples, None, "vae.decoder's samples from the prior")
    thresholds = probe.thresholds()
    report = quality.prior_sample_quality("lab4", "cifar10", samples, probe.profile)
    problems = []
    if not thresholds.holds("max_copy_fraction", report["copy_fraction"]):
        problems.append(
            f"{report['copy_fraction']:.0%} of the samples are copies of real images (training or test) "
            f"(at most {thresholds['max_copy_fraction']:.0%} allowed)"
        )
    if not thresholds.holds("max_frechet_distance", report["frechet_distance"]):
        problems.append(
            f"the Fréchet distance to real CIFAR-10 images is {report['frechet_distance']:.1f} "
            f"(at most {thresholds['max_frechet_distance']:.1f} needed)"
        )
    if not thresholds.holds("min_classifier_score", report["classifier_score"]):
        problems.append(
            f"the classifier score is {report['classifier_score']:.2f} "
            f"(at least {thresholds['min_classifier_score']:.2f} needed: samples too alike "
            "or unlike any class)"
        )
    if problems:
        raise CheckFailure(
            f"Samples of vae.decoder from N(0, I) ({report['num_samples']} codes): "
            + "; ".join(problems[:MAX_BAD_SHOWN])
            + ". Was the model the notebook's CifarVAE (its KL term with BETA and its feature term), trained "
            "as the notebook says: SETTINGS['epochs'] epochs in batches of SETTINGS['batch_size']?"
        )


@check(points=2, probes=("reconstructions", "encoder"))
def test_reconstructions_of_test_images(probe):
    facts = probe.facts("reconstructions")
    _require_student_model(_with_decoder_origin(probe, facts))
    originals = _exact_test_images()
    reconstructions = _require_images(
        probe.array("reconstructions", "reconstructions"),
        originals.shape[0],
        "the reconstructions of the exact CIFAR-10 test images",
    )
    mse = reconstruction_mse(reconstructions)
    thresholds = probe.thresholds()
    limit = thresholds["max_reconstruction_mse"]
    if not thresholds.holds("max_reconstruction_mse", mse):
        raise CheckFailure(
            f"Reconstructions of the {originals.shape[0]} exact CIFAR-10 test images (through "
            f"z_mean) have a mean squared error of {mse:.4f} per pixel value; at most "
            f"{limit:.4f} is needed. Is the encoder's z_mean used by the decoder, and was the "
            "model trained for SETTINGS['epochs'] epochs in batches of SETTINGS['batch_size']?"
        )
