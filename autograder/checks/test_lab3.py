"""Hidden checks of lab3 (VAE on MNIST).

Every check grades one property, so that one mistake costs the points of the check
that names it (e.g. averaging the KL over latent dimensions costs
`test_kl_sums_over_latent_dims`, not `test_kl_closed_form`). Sample-quality thresholds
come from `autograder/calibration/lab3.json` (see `scripts/calibrate_lab3.py`).
"""

import hashlib
import math

import numpy as np

from autograder.checking import CheckFailure, check, require_finite, require_shape

GRADED_NAMES = ("kl_divergence", "Sampling", "VAE", "vae")
REFERENCE_MODULE = "course_lib.vae"
EXPECTED_LATENT_DIM = 2
IMAGE_SHAPE = (28, 28, 1)

KL_RTOL = 1e-3
KL_ATOL = 1e-3
MONTE_CARLO_SAMPLES = 200_000
MONTE_CARLO_SEED = 0

# Sampling statistics: z has SAMPLING_DRAWS rows, so the sample mean has a standard
# error of std / sqrt(N) and the sample variance a relative one of sqrt(2 / N).
STANDARD_ERRORS = 6.0
# Normality of the standardized noise (pooled over columns, N = 80,000): a normal sample
# gives a Lilliefors/KS distance of ~0.003 and an excess kurtosis within +-0.05; a uniform
# sample gives 0.06 and -1.2.
MAX_KS_DISTANCE = 0.015
MAX_ABS_EXCESS_KURTOSIS = 0.25
MIN_NOISE_DIFFERENCE = 0.1

GRADIENT_ATOL = 1e-4
GRADIENT_RTOL = 1e-3

TRAIN_STEP_METRICS = ("loss", "reconstruction_loss", "kl_loss")
# Binary cross-entropy summed over 784 pixels is ~543 nats for an untrained decoder and
# ~150-250 after a few epochs; averaged over pixels it is < 1, summed over a batch of 64
# it is > 10,000.
MIN_SUMMED_RECONSTRUCTION = 50.0
MAX_SUMMED_RECONSTRUCTION = 2000.0
MAX_LOSS_RATIO = 0.9


def _reference_kl(z_mean, z_log_var):
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * np.sum(np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var, axis=-1)


def _per_dimension_kl(z_mean, z_log_var):
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * (np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var)


def _std_for_variance_kl(z_mean, z_log_var):
    """The slide's `sigma` read as the standard deviation: sigma + mu^2 - 1 - log(sigma)."""
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * (np.exp(0.5 * z_log_var) + z_mean**2 - 1.0 - 0.5 * z_log_var)


def monte_carlo_kl(z_mean, z_log_var, num_samples=MONTE_CARLO_SAMPLES, seed=MONTE_CARLO_SEED):
    """Monte-Carlo estimate of KL(q || p) = E_q[log q(z) - log p(z)] for each row.

    Returns:
        (estimates, standard_errors), each of shape (rows,).
    """
    generator = np.random.default_rng(seed)
    estimates, errors = [], []
    for mean_row, log_var_row in zip(np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)):
        noise = generator.standard_normal((num_samples, mean_row.size))
        z = mean_row + np.exp(0.5 * log_var_row) * noise
        # log q(z) - log p(z); the 0.5*log(2*pi) terms cancel.
        log_ratio = np.sum(-0.5 * log_var_row - 0.5 * noise**2 + 0.5 * z**2, axis=1)
        estimates.append(log_ratio.mean())
        errors.append(log_ratio.std() / math.sqrt(num_samples))
    return np.asarray(estimates), np.asarray(errors)


def _close(actual, expected):
    return actual.shape == expected.shape and bool(
        np.all(np.isfinite(actual)) and np.allclose(actual, expected, rtol=KL_RTOL, atol=KL_ATOL)
    )


def _require_own(probe, name):
    """Fails when the graded object `name` is the course's reference implementation."""
    module = probe.facts("origin").get("modules", {}).get(name, "")
    if module.startswith("course_lib"):
        raise CheckFailure(
            f"`{name}` comes from {module}, the course's reference implementation; "
            f"this step grades your own `{name}`, written in the notebook."
        )





# --- kl_divergence -------------------------------------------------------------------


def _single_dimension_values(probe):
    shapes = probe.facts("kl").get("single_dimension_shapes", [])
    batch = probe.array("kl", "z_mean").shape[0]
    if len(shapes) != 1 or tuple(shapes[0]) not in ((batch,), (batch, 1)):
        raise CheckFailure(
            f"kl_divergence(z_mean, z_log_var) must return one value per example, shape "
            f"(batch,). For inputs of shape ({batch}, 1) it returned shape(s) {shapes}."
        )
    return probe.array("kl", "kl_single_dimension").reshape(batch, -1)


@check(points=3, probes=("kl", "origin"))
def test_kl_closed_form(probe):
    _require_own(probe, "kl_divergence")
    z_mean, z_log_var = probe.array("kl", "z_mean"), probe.array("kl", "z_log_var")
    kl = _single_dimension_values(probe)
    require_finite(kl, "kl_divergence (log-variances between -30 and 30)")
    expected = _per_dimension_kl(z_mean, z_log_var)
    if _close(kl, -expected):
        raise CheckFailure("kl_divergence has its sign flipped: the KL divergence is never negative.")
    if _close(kl, _std_for_variance_kl(z_mean, z_log_var)) or _close(kl, -_std_for_variance_kl(z_mean, z_log_var)):
        raise CheckFailure(
            "kl_divergence uses the standard deviation sigma = exp(0.5 * log_var) where the "
            "formula needs the variance sigma^2 = exp(log_var) (the slide writes sigma for the "
            "variance): KL = 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var)."
        )
    if _close(kl, 2.0 * expected):
        raise CheckFailure("kl_divergence is twice the KL divergence: the factor 0.5 is missing.")
    if np.any(kl < -KL_ATOL):
        raise CheckFailure(
            f"kl_divergence returned negative values (min {kl.min():.4g}); the KL divergence is never negative."
        )
    if not _close(kl, expected):
        worst = np.unravel_index(np.argmax(np.abs(kl - expected)), kl.shape)
        raise CheckFailure(
            "kl_divergence does not match the closed form 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var). "
            f"For mu={z_mean[worst]:.3g}, log_var={z_log_var[worst]:.3g}: expected "
            f"{expected[worst]:.6g}, received {kl[worst]:.6g}."
        )


@check(points=2, probes=("kl", "origin"))
def test_kl_sums_over_latent_dims(probe):
    _require_own(probe, "kl_divergence")
    z_mean, z_log_var = probe.array("kl", "z_mean"), probe.array("kl", "z_log_var")
    kl = probe.array("kl", "kl")
    batch, latent_dim = z_mean.shape
    if kl.shape == (batch, latent_dim):
        raise CheckFailure(
            "kl_divergence returns one value per latent dimension, shape (batch, latent_dim): "
            "sum over the latent dimensions to get one KL per example, shape (batch,)."
        )
    if kl.size == 1:
        raise CheckFailure(
            "kl_divergence returns a single number for the whole batch: return one KL per "
            "example, shape (batch,) (the training step averages it over the batch)."
        )
    require_shape(kl, (batch,), "kl_divergence(z_mean, z_log_var)")
    require_finite(kl, "kl_divergence (log-variances between -30 and 30)")
    reference_per_dimension = _per_dimension_kl(z_mean, z_log_var)
    if _close(kl, reference_per_dimension.sum(axis=-1)):
        return
    own_per_dimension = _single_dimension_values(probe)
    if _close(kl, own_per_dimension.sum(axis=-1)):
        return  # the per-dimension formula is graded by test_kl_closed_form
    if _close(kl, own_per_dimension.mean(axis=-1)) or _close(kl, reference_per_dimension.mean(axis=-1)):
        raise CheckFailure(
            "kl_divergence averages over the latent dimensions: the KL of a diagonal Gaussian "
            "is the SUM of the KLs of its dimensions (use ops.sum(..., axis=-1), not ops.mean)."
        )
    rows = probe.facts("kl").get("moderate_rows", 1)
    estimate, error = monte_carlo_kl(z_mean[:rows], z_log_var[:rows])
    raise CheckFailure(
        f"kl_divergence of a {latent_dim}-dimensional latent vector is not the sum over its "
        f"dimensions. Example 0: Monte-Carlo estimate of E_q[log q(z) - log p(z)] = "
        f"{estimate[0]:.4g} +- {error[0]:.2g}; closed form {reference_per_dimension[0].sum():.4g}; "
        f"yours {kl[0]:.4g}."
    )


# --- Sampling ------------------------------------------------------------------------


def _sampled_z(probe):
    z = probe.array("sampling_statistics", "z")
    mean_row = probe.array("sampling_statistics", "mean_row")
    require_shape(z, (None, mean_row.size), "Sampling()([z_mean, z_log_var])")
    require_finite(z, "Sampling()([z_mean, z_log_var])")
    return z, mean_row, probe.array("sampling_statistics", "log_var_row")


@check(points=2, probes=("sampling_statistics", "origin"))
def test_sampling_statistics(probe):
    _require_own(probe, "Sampling")
    z, mean_row, log_var_row = _sampled_z(probe)
    draws = z.shape[0]
    sample_mean = z.mean(axis=0, dtype=np.float64)
    sample_variance = z.var(axis=0, dtype=np.float64)
    mean_tolerance = STANDARD_ERRORS * np.sqrt(sample_variance / draws) + 1e-3
    if np.any(np.abs(sample_mean - mean_row) > mean_tolerance):
        raise CheckFailure(
            f"The mean of z over {draws} draws is not z_mean: expected {np.round(mean_row, 3)}, "
            f"received {np.round(sample_mean, 3)}. The noise must have mean 0 (a standard normal)."
        )
    expected_variance = np.exp(log_var_row.astype(np.float64))
    ratio = sample_variance / expected_variance
    tolerance = STANDARD_ERRORS * math.sqrt(2.0 / draws)
    if np.all(np.abs(ratio - 1.0) <= tolerance):
        return
    if np.allclose(sample_variance, expected_variance**2, rtol=5 * tolerance):
        raise CheckFailure(
            "z has variance exp(z_log_var)^2: you used exp(z_log_var), the variance, as the "
            "standard deviation. The standard deviation is exp(0.5 * z_log_var)."
        )
    raise CheckFailure(
        f"The variance of z is not exp(z_log_var): for log_var={np.round(log_var_row, 3)} expected "
        f"{np.round(expected_variance, 3)}, received {np.round(sample_variance, 3)}. "
        "Use z = z_mean + exp(0.5 * z_log_var) * epsilon with epsilon ~ N(0, I)."
    )


def _ks_distance_to_normal(values):
    values = np.sort(values)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(values / math.sqrt(2.0)))
    positions = np.arange(1, values.size + 1) / values.size
    return float(max(np.max(positions - cdf), np.max(cdf - (positions - 1.0 / values.size))))


@check(points=1, probes=("sampling_statistics", "origin"))
def test_sampling_normal_noise(probe):
    _require_own(probe, "Sampling")
    z, _, _ = _sampled_z(probe)
    spread = z.std(axis=0, dtype=np.float64)
    if np.any(spread <= 0):
        raise CheckFailure("Sampling adds no noise: z equals z_mean. Add exp(0.5 * z_log_var) * epsilon.")
    standardized = ((z - z.mean(axis=0, dtype=np.float64)) / spread).ravel()
    distance = _ks_distance_to_normal(standardized)
    excess_kurtosis = float(np.mean(standardized**4) - 3.0)
    if distance > MAX_KS_DISTANCE or abs(excess_kurtosis) > MAX_ABS_EXCESS_KURTOSIS:
        kind = " (a uniform distribution has -1.2)" if excess_kurtosis < 0 else ""
        raise CheckFailure(
            "The noise epsilon is not normally distributed: its standardized values are "
            f"{distance:.3f} from the normal CDF (KS distance; a normal sample: < {MAX_KS_DISTANCE}) "
            f"and have excess kurtosis {excess_kurtosis:.2f} (normal: 0{kind}). "
            "Draw epsilon with keras.random.normal."
        )


@check(points=1, probes=("sampling_fresh_noise", "origin"))
def test_sampling_fresh_noise(probe):
    _require_own(probe, "Sampling")
    first = probe.array("sampling_fresh_noise", "first_call")
    second = probe.array("sampling_fresh_noise", "second_call")
    require_shape(first, probe.array("sampling_fresh_noise", "z_mean").shape, "Sampling()([z_mean, z_log_var])")
    if np.mean(np.abs(first - second)) < MIN_NOISE_DIFFERENCE:
        raise CheckFailure(
            "Two calls of the same Sampling layer on the same inputs gave the same z: every call "
            "must draw fresh noise. Create the SeedGenerator once in __init__ and pass it as "
            "seed= to keras.random.normal (an int seed repeats the same draw)."
        )


@check(points=2, probes=("sampling_gradients", "origin"))
def test_sampling_gradients(probe):
    _require_own(probe, "Sampling")
    facts = probe.facts("sampling_gradients")
    if not facts.get("is_torch_tensor") or not facts.get("requires_grad"):
        raise CheckFailure(
            "Sampling returns z without a gradient path to z_mean and z_log_var (was it computed "
            "in numpy, or under stop_gradient?). Compute it with keras.ops so training can "
            "back-propagate through it."
        )
    for name in ("z_mean", "z_log_var"):
        if facts.get(f"grad_{name}_missing"):
            raise CheckFailure(
                f"No gradient reaches {name} through z (expected dz/dz_mean = 1 and dz/dz_log_var = "
                f"0.5 * sigma * epsilon): z must be computed from {name} with keras.ops, not detached."
            )
    z_mean = probe.array("sampling_gradients", "z_mean")
    z = probe.array("sampling_gradients", "z")
    grad_mean = probe.array("sampling_gradients", "grad_z_mean")
    grad_log_var = probe.array("sampling_gradients", "grad_z_log_var")
    if not np.allclose(grad_mean, 1.0, atol=GRADIENT_ATOL):
        raise CheckFailure(
            f"dz/dz_mean should be 1 everywhere (z = z_mean + noise); received values in "
            f"[{grad_mean.min():.3g}, {grad_mean.max():.3g}]."
        )
    noise_part = (z - z_mean).astype(np.float64)
    # dz/dlog_var = 0.5 * sigma * epsilon = 0.5 * (z - z_mean) for the correct layer; a
    # different standard-deviation formula changes the factor (test_sampling_statistics
    # grades that), but it must stay proportional to the noise that was drawn.
    factor = float(np.sum(grad_log_var * noise_part) / max(np.sum(noise_part**2), 1e-12))
    proportional = np.allclose(grad_log_var, factor * noise_part, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL)
    if factor <= 0 or not proportional:
        raise CheckFailure(
            "dz/dz_log_var should be 0.5 * sigma * epsilon = 0.5 * (z - z_mean); received "
            f"values in [{grad_log_var.min():.3g}, {grad_log_var.max():.3g}]. Was the noise or "
            "sigma detached from z_log_var?"
        )


# --- the model -------------------------------------------------------------------------


@check(points=1, probes=("model_shapes",))
def test_model_shapes(probe):
    facts = probe.facts("model_shapes")
    latent_dim = facts.get("latent_dim")
    if latent_dim != EXPECTED_LATENT_DIM:
        raise CheckFailure(
            f"LATENT_DIM should be {EXPECTED_LATENT_DIM} (a plane we can plot). Received: {latent_dim!r}"
        )
    if facts.get("num_encoder_outputs") != 3:
        raise CheckFailure(
            "vae.encoder should output [z_mean, z_log_var, z]. Received "
            f"{facts.get('num_encoder_outputs')} output(s) of shapes {facts.get('encoder_output_shapes')}."
        )
    outputs = {name: probe.array("model_shapes", name) for name in ("z_mean", "z_log_var", "z")}
    num_images = outputs["z_mean"].shape[0] if outputs["z_mean"].ndim else 0
    for name, value in outputs.items():
        require_shape(value, (num_images, latent_dim), f"vae.encoder's {name}")
        require_finite(value, f"vae.encoder's {name}")
    exported = facts.get("encoder_layer_classes")
    if exported is not None:
        # The grader loads the saved encoder with a placeholder for the notebook's Sampling
        # (graded on its own definition); what the notebook built is in the export.
        if not any(name.endswith(".Sampling") for name in exported):
            raise CheckFailure(
                "vae.encoder has no Sampling layer (its layers: "
                f"{', '.join(name.rsplit('.', 1)[-1] for name in exported) or 'none'}): z must be sampled "
                "with your Sampling layer."
            )
    elif np.allclose(outputs["z"], outputs["z_mean"]):
        raise CheckFailure("vae.encoder's z equals z_mean: z must be sampled with your Sampling layer.")
    decoded = probe.array("model_shapes", "decoded")
    require_shape(decoded, (None,) + IMAGE_SHAPE, "vae.decoder(z)")
    require_finite(decoded, "vae.decoder(z)")
    if decoded.min() < 0.0 or decoded.max() > 1.0:
        raise CheckFailure(
            f"vae.decoder should output pixel probabilities in [0, 1] (a sigmoid); received "
            f"values in [{decoded.min():.3g}, {decoded.max():.3g}]."
        )


@check(points=3, probes=("train_step", "origin"))
def test_train_step(probe):
    _require_own(probe, "VAE")
    facts = probe.facts("train_step")
    history = facts.get("history", {})
    missing = [name for name in TRAIN_STEP_METRICS if name not in history]
    if missing:
        raise CheckFailure(
            f"fit() logged {facts.get('metric_names')}, without {missing}: train_step must update "
            "and return the trackers 'loss', 'reconstruction_loss' and 'kl_loss'."
        )
    series = {}
    for name in TRAIN_STEP_METRICS:
        values = history[name]
        if not values or any(value is None or not math.isfinite(value) for value in values):
            raise CheckFailure(f"The logged '{name}' is not a finite number per epoch: {values}")
        series[name] = np.asarray(values, dtype=np.float64)
    loss, reconstruction, kl = (series[name] for name in TRAIN_STEP_METRICS)
    if not np.allclose(loss, reconstruction + kl, rtol=1e-3, atol=1e-2):
        raise CheckFailure(
            f"'loss' should be reconstruction_loss + kl_loss; received loss={loss[0]:.4g}, "
            f"reconstruction_loss={reconstruction[0]:.4g}, kl_loss={kl[0]:.4g} (first epoch)."
        )
    if reconstruction[0] < MIN_SUMMED_RECONSTRUCTION:
        raise CheckFailure(
            f"reconstruction_loss is {reconstruction[0]:.3g}: the binary cross-entropy must be "
            "summed over the 784 pixels (nats per image), not averaged, or the KL term dominates."
        )
    if reconstruction[0] > MAX_SUMMED_RECONSTRUCTION:
        raise CheckFailure(
            f"reconstruction_loss is {reconstruction[0]:.3g}: sum the binary cross-entropy over "
            "the pixels of each image, then average over the batch (not sum)."
        )
    if facts.get("decoder_weight_change", 0.0) <= 0.0:
        raise CheckFailure(
            "Training did not change the decoder's weights: call loss.backward() and "
            "self.optimizer.apply(gradients, trainable_weights) in train_step."
        )
    if not loss[-1] <= MAX_LOSS_RATIO * loss[0]:
        raise CheckFailure(
            f"The loss did not decrease over {len(loss)} epochs of a small VAE ({np.round(loss, 1)}). "
            "Call self.zero_grad(), loss.backward() and self.optimizer.apply(...) every step."
        )


@check(points=1, probes=("origin",))
def test_own_implementation(probe):
    facts = probe.facts("origin")
    borrowed = [
        f"{name} (from {module})"
        for name, module in facts.get("modules", {}).items()
        if module.startswith("course_lib")
    ]
    imports = probe.context.get("imports", [])
    borrowed += [
        f"import of {name}" for name in imports if name == REFERENCE_MODULE or name.startswith(REFERENCE_MODULE + ".")
    ]
    borrowed += [f"the encoder's {name} layer" for name in facts.get("encoder_layer_classes", []) if name.startswith("course_lib")]
    if borrowed:
        raise CheckFailure(
            "The graded pieces (kl_divergence, Sampling, VAE) must be your own, not "
            f"{REFERENCE_MODULE}'s reference: found {', '.join(sorted(set(borrowed)))}."
        )
    missing = [name for name in GRADED_NAMES if name not in facts.get("modules", {})]
    if missing:
        raise CheckFailure(f"The notebook defines no {', '.join(missing)}.")


# --- samples from the prior -------------------------------------------------------------


_QUALITY_REPORTS = {}


def _quality_report(probe):
    """Scores the decoded prior samples once per set of samples (two checks read it)."""
    images = probe.array("samples", "images")
    key = (hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(), images.shape, probe.profile)
    if key not in _QUALITY_REPORTS:
        _QUALITY_REPORTS.clear()
        _QUALITY_REPORTS[key] = _measure_quality(probe)
    return _QUALITY_REPORTS[key]


def _measure_quality(probe):
    import course_lib

    from autograder.quality import real_images, sample_quality_report

    images = probe.array("samples", "images")
    require_shape(images, (None,) + IMAGE_SHAPE, "vae.decoder(z) for z ~ N(0, I)")
    reference = real_images("mnist", course_lib.settings("lab3", probe.profile)["train_examples"])
    try:
        return sample_quality_report("mnist", images, reference, max_training_images=None)
    except ValueError as error:
        raise CheckFailure(f"The decoded prior samples cannot be scored: {error}") from None


@check(points=3, probes=("samples",))
def test_sample_quality(probe):
    thresholds = probe.thresholds()
    report = _quality_report(probe)
    distance, score = report["frechet_distance"], report["classifier_score"]
    problems = []
    if not thresholds.holds("max_frechet_distance", distance):
        problems.append(
            f"their Fréchet distance to real digits (evaluator features) is {distance:.3g}, "
            f"above {thresholds['max_frechet_distance']:.3g}"
        )
    if not thresholds.holds("min_classifier_score", score):
        problems.append(
            f"their classifier score is {score:.3g} (1 = all alike, 10 = ten clear, equally "
            f"frequent digits), below {thresholds['min_classifier_score']:.3g}"
        )
    if problems:
        raise CheckFailure(
            "Images decoded from z ~ N(0, I) do not look like MNIST digits: "
            + "; ".join(problems)
            + ". Is the VAE trained (loss going down) and LATENT_DIM the size it was trained with?"
        )


@check(points=1, probes=("samples",))
def test_samples_are_not_copies(probe):
    thresholds = probe.thresholds()
    report = _quality_report(probe)
    if not thresholds.holds("max_copy_fraction", report["copy_fraction"]):
        raise CheckFailure(
            f"{100 * report['copy_fraction']:.1f}% of the decoded prior samples are (near) copies "
            f"of real MNIST images, training or test (allowed: {100 * thresholds['max_copy_fraction']:.1f}%): "
            "the decoder should generate new digits, not return real ones."
        )
