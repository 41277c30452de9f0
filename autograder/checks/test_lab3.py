"""Hidden checks of lab3 (VAE on MNIST).

Every check grades one property, so that one mistake costs the points of the check
that names it (e.g. averaging the KL over latent dimensions costs
`test_kl_sums_over_latent_dims`, not `test_kl_closed_form`). Sample-quality thresholds
come from `autograder/calibration/lab3.json` (see `scripts/calibrate_lab3.py`).
"""

import hashlib
import math

import numpy as np

from autograder import quality
from autograder.checking import CheckFailure, check, require_finite, require_shape
from autograder.formulas import gaussian_kl, gaussian_kl_terms

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
PIXELS = int(np.prod(IMAGE_SHAPE))
# One SGD step's update, fitted as a * d(reconstruction)/dw + b * d(KL)/dw: a correct step
# gives a = b = 1 to float32 precision (~1e-5) and no residual; a wrong weight of a term
# (x 1/784, x batch, x 0, ...) is far outside these.
STEP_FACTOR_RTOL = 0.02
STEP_RESIDUAL = 0.02
STEP_LOG_RTOL = 1e-3
MAX_LOSS_RATIO = 0.9


def _std_for_variance_kl(z_mean, z_log_var):
    """The slide's `sigma` read as the standard deviation: sigma + mu^2 - 1 - log(sigma)."""
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * (np.exp(0.5 * z_log_var) + z_mean**2 - 1.0 - 0.5 * z_log_var)


def _log_sigma_kl(z_mean, z_log_var):
    """z_log_var read as log(sigma): the variance exp(2 * z_log_var), its log 2 * z_log_var."""
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * (np.exp(2.0 * z_log_var) + z_mean**2 - 1.0 - 2.0 * z_log_var)


# Per-dimension forms of the KL that students write by mistake -> what the message says.
# Each is tested, like the correct form, on every row (moderate and extreme log-variances).
KL_MISTAKES = (
    (lambda mu, log_var: -gaussian_kl_terms(mu, log_var),
     "kl_divergence has its sign flipped: the KL divergence is never negative. "
     "Return +0.5 * sum(exp(log_var) + mu^2 - 1 - log_var)."),
    (_std_for_variance_kl,
     "kl_divergence uses the standard deviation sigma = exp(0.5 * log_var) where the "
     "formula needs the variance sigma^2 = exp(log_var) (the slide writes sigma for the "
     "variance): KL = 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var)."),
    (lambda mu, log_var: -_std_for_variance_kl(mu, log_var),
     "kl_divergence uses the standard deviation sigma = exp(0.5 * log_var) where the "
     "formula needs the variance sigma^2 = exp(log_var), and its sign is flipped: "
     "KL = 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var) >= 0."),
    (lambda mu, log_var: 2.0 * gaussian_kl_terms(mu, log_var),
     "kl_divergence is twice the KL divergence: the factor 0.5 is missing."),
    (lambda mu, log_var: gaussian_kl_terms(mu, log_var) + 0.5,
     "kl_divergence is 0.5 too large in every latent dimension: the -1 term is missing "
     "(at mu = 0, log_var = 0 the posterior equals the prior and the KL must be 0): "
     "KL = 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var)."),
    (_log_sigma_kl,
     "kl_divergence treats z_log_var as log(sigma) (variance exp(2 * z_log_var)): the encoder's "
     "second output is the log-variance log(sigma^2), so the variance is exp(z_log_var): "
     "KL = 0.5 * sum(exp(z_log_var) + mu^2 - 1 - z_log_var)."),
    (lambda mu, log_var: gaussian_kl_terms(np.zeros_like(mu), log_var),
     "kl_divergence ignores z_mean: the mu^2 term is missing (a posterior away from the prior's "
     "mean 0 must cost nats): KL = 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var)."),
)


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


def _shape_text(shape):
    shape = tuple(shape)
    return "a scalar, shape ()" if shape == () else f"shape {shape}"


def _single_dimension_values(probe):
    """The notebook's KL of each latent dimension alone, and how to reduce the closed form alike.

    A KL that reduces the batch too (one number per call) is graded here on its per-example
    formula, reduced the same way: the reduction is `test_kl_sums_over_latent_dims`' business.

    Returns:
        (values, reduce): `values` of shape (batch, latent_dim), or (latent_dim,) for a KL
        that returns one number per call; `reduce(terms)` maps the closed-form per-dimension
        terms (batch, latent_dim) to the same shape.
    """
    shapes = [tuple(shape) for shape in probe.facts("kl").get("single_dimension_shapes", [])]
    batch = probe.array("kl", "z_mean").shape[0]
    if len(shapes) == 1 and shapes[0] in ((batch,), (batch, 1)):
        return probe.array("kl", "kl_single_dimension").reshape(batch, -1), lambda terms: terms
    if len(shapes) == 1 and shapes[0] in ((), (1,)):
        values = probe.array("kl", "kl_single_dimension").reshape(-1)
        expected = gaussian_kl_terms(probe.array("kl", "z_mean"), probe.array("kl", "z_log_var"))
        if _close(values, expected.mean(axis=0)):
            return values, lambda terms: terms.mean(axis=0)
        return values, lambda terms: terms.sum(axis=0)
    received = " and ".join(_shape_text(shape) for shape in shapes) or "nothing"
    raise CheckFailure(
        f"kl_divergence(z_mean, z_log_var) must return one value per example, shape (batch,). For "
        f"inputs of shape ({batch}, 1) it returned {received}: reduce with ops.sum(..., axis=-1) only."
    )


@check(points=3, probes=("kl", "origin"))
def test_kl_closed_form(probe):
    _require_own(probe, "kl_divergence")
    z_mean, z_log_var = probe.array("kl", "z_mean"), probe.array("kl", "z_log_var")
    kl, reduce = _single_dimension_values(probe)
    require_finite(kl, "kl_divergence (log-variances between -30 and 30)")
    expected = reduce(gaussian_kl_terms(z_mean, z_log_var))
    if _close(kl, expected):
        return
    for mistake, message in KL_MISTAKES:
        if _close(kl, reduce(mistake(z_mean, z_log_var))):
            raise CheckFailure(message)
    if np.any(kl < -KL_ATOL):
        raise CheckFailure(
            f"kl_divergence returned negative values (min {kl.min():.4g}); the KL divergence is never negative."
        )
    raise CheckFailure(
        "kl_divergence does not match the closed form 0.5 * sum(exp(log_var) + mu^2 - 1 - log_var). "
        f"{_kl_example(probe, kl, expected)}"
    )


def _kl_example(probe, kl, expected):
    """One input where `kl` is off, as a sentence: the largest relative error, moderate rows first."""
    z_mean, z_log_var = probe.array("kl", "z_mean"), probe.array("kl", "z_log_var")
    error = np.abs(kl - expected) / np.maximum(np.abs(expected), 1.0)
    if kl.ndim == 2:
        moderate = int(probe.facts("kl").get("moderate_rows", 0))
        off = error > KL_RTOL
        rows = slice(0, moderate) if moderate and np.any(off[:moderate]) else slice(None)
        where = np.unravel_index(np.argmax(error[rows]), error[rows].shape)
        mu, log_var = z_mean[rows][where], z_log_var[rows][where]
        return (f"For one latent dimension with mu={mu:.4g}, log_var={log_var:.4g}: expected "
                f"{expected[rows][where]:.6g}, received {kl[rows][where]:.6g}.")
    worst = int(np.argmax(error))
    return (f"For latent dimension {worst} of a batch: expected {expected[worst]:.6g}, "
            f"received {kl[worst]:.6g}.")


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
            f"kl_divergence returns a single number for the whole batch (received {_shape_text(kl.shape)}, "
            f"value {float(kl.ravel()[0]):.4g}, for inputs of shape ({batch}, {latent_dim})): return one KL per "
            "example, shape (batch,), summing over axis=-1 only (the training step averages it over the batch)."
        )
    if kl.shape in ((latent_dim,), (1, latent_dim)):
        raise CheckFailure(
            f"kl_divergence returns {_shape_text(kl.shape)} for inputs of shape ({batch}, {latent_dim}): it "
            "reduces over the batch (axis 0) instead of the latent dimensions: use ops.sum(..., axis=-1)."
        )
    require_shape(kl, (batch,), "kl_divergence(z_mean, z_log_var)")
    require_finite(kl, "kl_divergence (log-variances between -30 and 30)")
    reference_per_dimension = gaussian_kl_terms(z_mean, z_log_var)
    if _close(kl, reference_per_dimension.sum(axis=-1)):
        return
    own_per_dimension, _ = _single_dimension_values(probe)
    if own_per_dimension.shape == reference_per_dimension.shape and _close(kl, own_per_dimension.sum(axis=-1)):
        return  # the per-dimension formula is graded by test_kl_closed_form
    if (own_per_dimension.shape == reference_per_dimension.shape and _close(kl, own_per_dimension.mean(axis=-1))) or _close(kl, reference_per_dimension.mean(axis=-1)):
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
#
# Every Sampling probe tests a fresh `Sampling()` and the layers as the notebook built them
# (rebuilt from their saved configs with the notebook's class): each check grades them all.
# A layer that adds no noise at all fails `test_sampling_normal_noise` only; the other
# checks grade the noise a layer does draw.


def _layers(probe, item):
    """[(index, label)] of the Sampling layers `item` tested (the fresh one first).

    A notebook layer that could not be rebuilt from its saved config is left out: the
    fresh one is still graded, and a layer that cannot be saved fails the model checks.
    """
    facts = probe.facts(item)
    labels = facts.get("layers") or ["Sampling(), a fresh layer"]
    errors = facts.get("layer_errors", {})
    return [(index, label) for index, label in enumerate(labels) if str(index) not in errors]


def _noise_free(z, z_mean):
    """Whether z - z_mean is the same in every row (no noise drawn)."""
    offset = np.asarray(z, dtype=np.float64) - np.asarray(z_mean, dtype=np.float64)
    return bool(np.all(np.std(offset, axis=0) <= 1e-6 * (1.0 + np.abs(offset).max())))


def _sampled_draws(probe, index, label):
    """{mode: z} of one layer's draws (outside training and with training=True), shape-checked."""
    mean_row = probe.array("sampling_statistics", "mean_row")
    draws = {}
    for key, mode in (("z", "called without training"), ("z_training", "called with training=True")):
        z = probe.array("sampling_statistics", f"{key}_{index}")
        what = f"{label}: Sampling()([z_mean, z_log_var]) {mode}"
        require_shape(z, (None, mean_row.size), what)
        require_finite(z, what)
        draws[mode] = z
    return draws


def _check_statistics(label, mode, z, mean_row, log_var_row):
    draws = z.shape[0]
    sample_mean = z.mean(axis=0, dtype=np.float64)
    sample_variance = z.var(axis=0, dtype=np.float64)
    mean_tolerance = STANDARD_ERRORS * np.sqrt(sample_variance / draws) + 1e-3
    if np.any(np.abs(sample_mean - mean_row) > mean_tolerance):
        raise CheckFailure(
            f"{label}, {mode}: the mean of z over {draws} draws is not z_mean: expected "
            f"{np.round(mean_row, 3)}, received {np.round(sample_mean, 3)}. The noise must have mean 0 "
            "(a standard normal) and be added to z_mean."
        )
    expected_variance = np.exp(log_var_row.astype(np.float64))
    ratio = sample_variance / expected_variance
    tolerance = STANDARD_ERRORS * math.sqrt(2.0 / draws)
    if np.all(np.abs(ratio - 1.0) <= tolerance):
        return
    if np.allclose(sample_variance, expected_variance**2, rtol=5 * tolerance):
        raise CheckFailure(
            f"{label}, {mode}: z has variance exp(z_log_var)^2: you used exp(z_log_var), the variance, "
            "as the standard deviation. The standard deviation is exp(0.5 * z_log_var)."
        )
    raise CheckFailure(
        f"{label}, {mode}: the variance of z is not exp(z_log_var): for log_var={np.round(log_var_row, 3)} "
        f"expected {np.round(expected_variance, 3)}, received {np.round(sample_variance, 3)}. "
        "Use z = z_mean + exp(0.5 * z_log_var) * epsilon with epsilon ~ N(0, I)."
    )


@check(points=2, probes=("sampling_statistics", "origin"))
def test_sampling_statistics(probe):
    _require_own(probe, "Sampling")
    mean_row = probe.array("sampling_statistics", "mean_row")
    log_var_row = probe.array("sampling_statistics", "log_var_row")
    for index, label in _layers(probe, "sampling_statistics"):
        for mode, z in _sampled_draws(probe, index, label).items():
            if not _noise_free(z, np.broadcast_to(mean_row, z.shape)):  # no noise: test_sampling_normal_noise
                _check_statistics(label, mode, z, mean_row, log_var_row)


def _ks_distance_to_normal(values):
    values = np.sort(values)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(values / math.sqrt(2.0)))
    positions = np.arange(1, values.size + 1) / values.size
    return float(max(np.max(positions - cdf), np.max(cdf - (positions - 1.0 / values.size))))


def _no_noise_failure(label, mode, z, mean_row):
    offset = z.mean(axis=0, dtype=np.float64) - mean_row
    if np.allclose(offset, 0.0, atol=1e-5):
        what = "z equals z_mean"
    else:
        what = f"z is z_mean + the same {np.round(offset, 3)} in every draw"
    return CheckFailure(
        f"{label}, {mode}: Sampling adds no random noise ({what}). Draw epsilon = "
        "keras.random.normal(ops.shape(z_mean), seed=self.seed_generator) in every call, whatever "
        "`training` is, and return z_mean + exp(0.5 * z_log_var) * epsilon."
    )


@check(points=1, probes=("sampling_statistics", "origin"))
def test_sampling_normal_noise(probe):
    _require_own(probe, "Sampling")
    mean_row = probe.array("sampling_statistics", "mean_row")
    for index, label in _layers(probe, "sampling_statistics"):
        for mode, z in _sampled_draws(probe, index, label).items():
            if _noise_free(z, np.broadcast_to(mean_row, z.shape)):
                raise _no_noise_failure(label, mode, z, mean_row)
            spread = z.std(axis=0, dtype=np.float64)
            standardized = ((z - z.mean(axis=0, dtype=np.float64)) / spread).ravel()
            distance = _ks_distance_to_normal(standardized)
            excess_kurtosis = float(np.mean(standardized**4) - 3.0)
            if distance > MAX_KS_DISTANCE or abs(excess_kurtosis) > MAX_ABS_EXCESS_KURTOSIS:
                kind = " (a uniform distribution has -1.2)" if excess_kurtosis < 0 else ""
                raise CheckFailure(
                    f"{label}, {mode}: the noise epsilon is not normally distributed: its standardized "
                    f"values are {distance:.3f} from the normal CDF (KS distance; a normal sample: < "
                    f"{MAX_KS_DISTANCE}) and have excess kurtosis {excess_kurtosis:.2f} (normal: 0{kind}). "
                    "Draw epsilon with keras.random.normal."
                )


@check(points=1, probes=("sampling_fresh_noise", "origin"))
def test_sampling_fresh_noise(probe):
    _require_own(probe, "Sampling")
    z_mean = probe.array("sampling_fresh_noise", "z_mean")
    for index, label in _layers(probe, "sampling_fresh_noise"):
        first = probe.array("sampling_fresh_noise", f"first_call_{index}")
        second = probe.array("sampling_fresh_noise", f"second_call_{index}")
        require_shape(first, z_mean.shape, f"{label}: Sampling()([z_mean, z_log_var])")
        require_shape(second, z_mean.shape, f"{label}: Sampling()([z_mean, z_log_var])")
        if _noise_free(first, z_mean):
            continue  # no noise at all: test_sampling_normal_noise
        difference = float(np.mean(np.abs(first - second)))
        if difference < MIN_NOISE_DIFFERENCE:
            raise CheckFailure(
                f"{label}: two calls of this layer on the same inputs gave the same z (mean absolute "
                f"difference {difference:.3g}; fresh N(0, 1) noise gives ~1.1): every call must draw fresh "
                "noise. Create keras.random.SeedGenerator(seed) once in __init__ and pass it as seed= to "
                "keras.random.normal: an int seed (or a seed fixed at construction) repeats the same draw."
            )


def _check_gradients(probe, index, label):
    facts = probe.facts("sampling_gradients")
    z_mean = probe.array("sampling_gradients", "z_mean")
    z = probe.array("sampling_gradients", f"z_{index}")
    require_shape(z, z_mean.shape, f"{label}: Sampling()([z_mean, z_log_var])")
    if _noise_free(z, z_mean):
        return  # no noise at all: test_sampling_normal_noise
    if not facts.get(f"is_torch_tensor_{index}") or not facts.get(f"requires_grad_{index}"):
        raise CheckFailure(
            f"{label}: Sampling returns z without a gradient path to z_mean and z_log_var (was it computed "
            "in numpy, or under stop_gradient?). Compute it with keras.ops so training can "
            "back-propagate through it."
        )
    for name in ("z_mean", "z_log_var"):
        if facts.get(f"grad_{name}_missing_{index}"):
            raise CheckFailure(
                f"{label}: no gradient reaches {name} through z (expected dz/dz_mean = 1 and dz/dz_log_var = "
                f"0.5 * sigma * epsilon): z must be computed from {name} with keras.ops, not detached."
            )
    grad_mean = probe.array("sampling_gradients", f"grad_z_mean_{index}")
    grad_log_var = probe.array("sampling_gradients", f"grad_z_log_var_{index}")
    if not np.allclose(grad_mean, 1.0, atol=GRADIENT_ATOL):
        raise CheckFailure(
            f"{label}: dz/dz_mean should be 1 everywhere (z = z_mean + noise); received values in "
            f"[{grad_mean.min():.3g}, {grad_mean.max():.3g}]. Add z_mean itself, not a detached copy."
        )
    noise_part = (z - z_mean).astype(np.float64)
    # dz/dlog_var = 0.5 * sigma * epsilon = 0.5 * (z - z_mean) for the correct layer.
    if np.allclose(grad_log_var, 0.5 * noise_part, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL):
        return
    detached = np.all(np.abs(grad_log_var) <= GRADIENT_ATOL)
    if not detached and not _is_sigma_times_normal(noise_part, probe.array("sampling_gradients", "z_log_var")):
        # Another formula for z (a wrong sigma, noise added instead of multiplied):
        # test_sampling_statistics names it; the gradients do reach z_log_var.
        return
    raise CheckFailure(
        f"{label}: dz/dz_log_var should be 0.5 * sigma * epsilon = 0.5 * (z - z_mean); received "
        + ("0 everywhere" if detached else f"values in [{grad_log_var.min():.3g}, {grad_log_var.max():.3g}]")
        + ". Was the noise or sigma detached from z_log_var (stop_gradient, .detach(), numpy)?"
    )


def _is_sigma_times_normal(noise_part, z_log_var):
    """Whether z - z_mean, divided by exp(0.5 * z_log_var), has a standard normal's mean and variance."""
    epsilon = (noise_part / np.exp(0.5 * np.asarray(z_log_var, dtype=np.float64))).ravel()
    count = epsilon.size
    return bool(abs(epsilon.mean()) <= STANDARD_ERRORS / math.sqrt(count)
                and abs(epsilon.var() - 1.0) <= STANDARD_ERRORS * math.sqrt(2.0 / count))


@check(points=2, probes=("sampling_gradients", "origin"))
def test_sampling_gradients(probe):
    _require_own(probe, "Sampling")
    for index, label in _layers(probe, "sampling_gradients"):
        _check_gradients(probe, index, label)


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


def _step_weights(probe, reconstruction="grad_reconstruction"):
    """(a, b, relative residual) of the step's gradient fitted as a * d(reconstruction) + b * d(KL).

    `reconstruction`: the probe's gradient of the reconstruction term to fit (the correct one,
    or a known mistake's).
    """
    step = probe.array("train_step", "step_gradient").astype(np.float64)
    basis = np.stack([probe.array("train_step", reconstruction), probe.array("train_step", "grad_kl")], axis=1)
    return _fit(step, basis.astype(np.float64))


def _total_gradient(probe, prefix=""):
    """The probe's gradient of reconstruction + KL at the start of the first (or `prefix` "second_") step."""
    return (probe.array("train_step", f"{prefix}grad_reconstruction")
            + probe.array("train_step", f"{prefix}grad_kl")).astype(np.float64)


def _fit(step, basis):
    coefficients, *_ = np.linalg.lstsq(basis, step, rcond=None)
    residual = float(np.linalg.norm(step - basis @ coefficients) / max(np.linalg.norm(step), 1e-30))
    return float(coefficients[0]), float(coefficients[1]), residual


def _fits_mistake(probe, mistake, exactly=False):
    """Whether the step's update is the gradient of a known wrong reconstruction term + KL.

    With `exactly`, both terms must also have weight 1 (a factor alone would fit otherwise).
    """
    a, b, residual = _step_weights(probe, mistake)
    if residual > STEP_RESIDUAL:
        return False
    return not exactly or (math.isclose(a, 1.0, rel_tol=STEP_FACTOR_RTOL)
                           and math.isclose(b, 1.0, rel_tol=STEP_FACTOR_RTOL))


def _check_every_weight_moved(probe, step):
    """Fails when one step left the encoder's (or the decoder's) weights as they were."""
    encoder_size = int(probe.facts("train_step").get("step_encoder_size", 0))
    gradient = _total_gradient(probe)
    for part, still, moved in ((slice(0, encoder_size), "encoder", "decoder"),
                               (slice(encoder_size, None), "decoder", "encoder")):
        if encoder_size and not np.any(step[part]) and np.any(gradient[part]):
            raise CheckFailure(
                f"One training step did not change the {still}'s weights (their gradient is not 0): apply the "
                f"gradients to every trainable weight of the VAE, self.trainable_weights (encoder and decoder), "
                f"not only to those of self.{moved}."
            )


def _factor_name(factor, batch):
    """What a wrong weight of a loss term usually means."""
    for value, meaning in ((1.0 / PIXELS, "averaged over the 784 pixels"), (float(batch), "summed over the batch"),
                           (0.5, "halved"), (2.0, "doubled"), (1.0 / batch, "divided by the batch size twice")):
        if math.isclose(factor, value, rel_tol=STEP_FACTOR_RTOL):
            return meaning
    return None


def _check_step_gradient(probe):
    """The update train_step made in one SGD step is the gradient of reconstruction + KL."""
    facts = probe.facts("train_step")
    step = probe.array("train_step", "step_gradient")
    if not np.any(step):
        raise CheckFailure(
            "One training step did not change the weights: call loss.backward() and "
            "self.optimizer.apply(gradients, trainable_weights) in train_step."
        )
    batch = facts.get("step_batch_size", 0)
    a, b, residual = _step_weights(probe)
    if residual > STEP_RESIDUAL:
        if _fits_mistake(probe, "grad_reconstruction_from_z_mean"):
            raise CheckFailure(
                "train_step decodes z_mean instead of the sampled z: the reconstruction term must use "
                "reconstructions = self.decoder(z), with z the encoder's third output."
            )
        _check_every_weight_moved(probe, step)
        raise CheckFailure(
            "The update of one training step is not the gradient of reconstruction_loss + kl_loss "
            f"(best fit: {a:.3g} x reconstruction + {b:.3g} x KL, {100 * residual:.0f}% unexplained). "
            "Compute loss = mean over the batch of (summed binary cross-entropy + KL), call "
            "loss.backward() once, then self.optimizer.apply."
        )
    if not math.isclose(a, 1.0, rel_tol=STEP_FACTOR_RTOL):
        if _fits_mistake(probe, "grad_reconstruction_squared_error", exactly=True):
            raise CheckFailure(
                "train_step's reconstruction term is the squared error (x - x_hat)^2: the decoder outputs "
                "pixel probabilities (a Bernoulli likelihood), whose negative log-likelihood is the binary "
                "cross-entropy: keras.losses.binary_crossentropy(images, reconstructions), summed over the "
                "pixels of each image, then averaged over the batch."
            )
        meaning = _factor_name(a, batch)
        if meaning == "averaged over the 784 pixels":
            raise CheckFailure(
                f"The reconstruction term of train_step's loss is averaged over pixels (weight {a:.3g} = 1/784): "
                "the binary cross-entropy must be summed over the 784 pixels (nats per image), not averaged, "
                "or the KL term dominates."
            )
        raise CheckFailure(
            f"The reconstruction term enters train_step's loss with weight {a:.3g}"
            + (f" ({meaning})" if meaning else "")
            + ", not 1: sum the binary cross-entropy over the pixels of each image, then average over the batch."
        )
    if abs(b) < STEP_FACTOR_RTOL:
        logged = (facts.get("step_history") or {}).get("kl_loss") or [float("nan")]
        reference = facts.get("reference_kl", float("nan"))
        if math.isclose(logged[0], 0.0, abs_tol=1e-6):
            cause = f"kl_loss is always 0 (logged {logged[0]:.3g}; the batch's mean KL is {reference:.4g})"
        elif math.isclose(logged[0], reference, rel_tol=STEP_FACTOR_RTOL):
            cause = "the KL term is missing from `loss`, or detached (stop_gradient, .detach(), float(), numpy)"
        else:
            cause = f"the KL term is a constant (logged kl_loss {logged[0]:.4g}; the batch's mean KL is {reference:.4g})"
        raise CheckFailure(
            f"train_step's update has no KL gradient: {cause}. Use kl_loss = "
            "ops.mean(kl_divergence(z_mean, z_log_var)) and loss = reconstruction_loss + kl_loss."
        )
    if not math.isclose(b, 1.0, rel_tol=STEP_FACTOR_RTOL):
        meaning = _factor_name(b, batch)
        latent_dim = facts.get("step_latent_dim")
        if latent_dim and math.isclose(b, 1.0 / latent_dim, rel_tol=STEP_FACTOR_RTOL):
            meaning = (f"{meaning}, or " if meaning else "") + (
                f"averaged over the probe's {latent_dim} latent dimensions instead of summed")
        raise CheckFailure(
            f"The KL term enters train_step's loss with weight {b:.3g}" + (f" ({meaning})" if meaning else "")
            + ", not 1: loss = reconstruction_loss + kl_loss, with kl_loss = ops.mean(kl_divergence(z_mean, "
            "z_log_var)), the mean over the batch of the per-example KL."
        )
    _check_second_step(probe)


def _check_second_step(probe):
    """The next step's update is the gradient at the new weights alone (gradients are cleared)."""
    second = probe.array("train_step", "second_step_gradient").astype(np.float64)
    gradient = _total_gradient(probe, "second_")
    scale = max(np.linalg.norm(gradient), 1e-30)
    if np.linalg.norm(second - gradient) / scale <= STEP_RESIDUAL:
        return
    if np.linalg.norm(second - gradient - _total_gradient(probe)) / scale <= STEP_RESIDUAL:
        raise CheckFailure(
            "train_step adds the previous step's gradients to this step's (the second of two steps moved the "
            "weights by the sum of both gradients): with the torch backend, a custom train_step must clear "
            "them itself; call self.zero_grad() at its start, before the forward pass."
        )
    raise CheckFailure(
        "The first training step used the gradient of reconstruction_loss + kl_loss, but the second did not "
        f"(its update is {np.linalg.norm(second) / scale:.3g} x as long as the gradient at the new weights, "
        f"{100 * np.linalg.norm(second - gradient) / scale:.0f}% off): every step must compute its loss on "
        "the current weights, clear the old gradients (self.zero_grad()) and apply the new ones once."
    )


def _check_step_logs(probe):
    """The trackers log the step's own reconstruction and KL values."""
    facts = probe.facts("train_step")
    logged = facts.get("step_history") or {}
    for name, reference in (("reconstruction_loss", facts.get("reference_reconstruction")),
                            ("kl_loss", facts.get("reference_kl"))):
        values = logged.get(name) or [None]
        if values[0] is None or reference is None:
            continue  # no such tracker: the metrics check says so
        if not math.isclose(values[0], reference, rel_tol=STEP_LOG_RTOL, abs_tol=1e-3):
            raise CheckFailure(
                f"After one training step on a batch, '{name}' logged {values[0]:.5g}, but that batch's "
                f"{name} (averaged over the batch) is {reference:.5g}: update the tracker with the value that "
                "went into the loss (self.kl_loss_tracker.update_state(kl_loss), ...)."
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
    _check_step_gradient(probe)
    _check_step_logs(probe)
    if not np.allclose(loss, reconstruction + kl, rtol=1e-3, atol=1e-2):
        raise CheckFailure(
            f"'loss' should be reconstruction_loss + kl_loss; received loss={loss[0]:.4g}, "
            f"reconstruction_loss={reconstruction[0]:.4g}, kl_loss={kl[0]:.4g} (first epoch)."
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
    images = probe.array("samples", "images")
    require_shape(images, (None,) + IMAGE_SHAPE, "vae.decoder(z) for z ~ N(0, I)")
    try:
        return quality.prior_sample_quality("lab3", "mnist", images, probe.profile)
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
