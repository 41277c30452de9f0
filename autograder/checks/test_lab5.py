"""Hidden checks of lab5 (beta-VAE, latent traversals, measured disentanglement).

Every check grades one property, so that one mistake costs the points of the check that
names it. The trend thresholds come from `autograder/calibration/lab5.json` (see
`scripts/calibrate_lab5.py`), calibrated over training seeds against "beta ignored"
submissions: the reconstruction error grows with beta, the code keeps less information
(total KL, active dimensions), and the MIG of `z_mean` against the position factors rises
from the smallest to the largest beta.
"""

import math

import numpy as np

from autograder.checking import CheckFailure, check, require_finite, require_shape
from autograder.formulas import bernoulli_nll_terms, gaussian_kl_terms
from course_lib.disentanglement import mutual_information_gap

REFERENCE_NAMES = ("course_lib.vae.VAE", "course_lib.vae.kl_divergence", "course_lib.vae.bernoulli_nll")
OWN_NAMES = ("beta_vae_loss", "latent_traversal", "BetaVAE")
LOSS_RTOL = 1e-4
LOSS_ATOL = 1e-4
PROBABILITY_EPSILON = 1e-7
TRAVERSAL_ATOL = 1e-5
GRADIENT_BETA = 1.0  # the probe's beta for the gradients
GRADIENT_RTOL = 1e-3
GRADIENT_ATOL = 1e-6
# A latent dimension whose mean KL is below this (nats) carries almost no information.
ACTIVE_KL_NATS = 0.1


def _reference_terms(images, reconstructions, z_mean, z_log_var):
    pixel_losses = bernoulli_nll_terms(images, reconstructions, PROBABILITY_EPSILON)
    reconstruction = float(pixel_losses.reshape(len(pixel_losses), -1).sum(axis=1).mean())
    kl_terms = gaussian_kl_terms(z_mean, z_log_var)
    return reconstruction, float(kl_terms.sum(axis=1).mean()), kl_terms, pixel_losses


def _close(value, expected):
    return math.isclose(value, expected, rel_tol=LOSS_RTOL, abs_tol=LOSS_ATOL)


# --- the loss ----------------------------------------------------------------------------


@check(points=3, probes=("loss",))
def test_beta_weights_the_kl(probe):
    betas = np.asarray(probe.facts("loss")["betas"], dtype=np.float64)
    loss = probe.array("loss", "loss")
    reconstruction = probe.array("loss", "reconstruction_loss")
    kl = probe.array("loss", "kl_loss")
    for name, values in (("loss", loss), ("reconstruction_loss", reconstruction), ("kl_loss", kl)):
        require_finite(values, f"beta_vae_loss's {name}")
    if not (np.allclose(reconstruction, reconstruction[0], rtol=LOSS_RTOL, atol=LOSS_ATOL)
            and np.allclose(kl, kl[0], rtol=LOSS_RTOL, atol=LOSS_ATOL)):
        raise CheckFailure(
            "The returned reconstruction_loss and kl_loss change with beta (for beta = "
            f"{betas.tolist()}: reconstruction {np.round(reconstruction, 3).tolist()}, KL "
            f"{np.round(kl, 3).tolist()}): report both terms unweighted; beta weights the KL "
            "inside `loss` only."
        )
    expected = reconstruction + betas * kl
    if np.allclose(loss, expected, rtol=LOSS_RTOL, atol=LOSS_ATOL):
        return
    if np.allclose(loss, loss[0], rtol=LOSS_RTOL, atol=LOSS_ATOL):
        problem = "the loss does not change with beta: beta is ignored"
    elif np.allclose(loss, betas * reconstruction + kl, rtol=LOSS_RTOL, atol=LOSS_ATOL):
        problem = "beta multiplies the reconstruction term instead of the KL term"
    else:
        problem = "the loss is not reconstruction_loss + beta * kl_loss"
    raise CheckFailure(
        f"For beta = {betas.tolist()} the loss was {np.round(loss, 3).tolist()}, expected "
        f"{np.round(expected, 3).tolist()} (reconstruction_loss + beta * kl_loss): {problem}."
    )


@check(points=2, probes=("loss",))
def test_loss_terms(probe):
    facts = probe.facts("loss")
    shapes = facts.get("term_shapes", [])
    if any(shape != [] for call in shapes for shape in call):
        raise CheckFailure(
            "beta_vae_loss must return three scalars (each averaged over the batch). "
            f"Received shapes {shapes[0] if shapes else shapes}."
        )
    betas = list(facts["betas"])
    at_one = betas.index(1.0)
    reconstruction = float(probe.array("loss", "reconstruction_loss")[at_one])
    kl = float(probe.array("loss", "kl_loss")[at_one])
    arrays = [probe.array("loss", name) for name in ("images", "reconstructions", "z_mean", "z_log_var")]
    expected_reconstruction, expected_kl, kl_terms, pixel_losses = _reference_terms(*arrays)
    problems = []
    if not _close(reconstruction, expected_reconstruction):
        num_pixels = pixel_losses[0].size
        if _close(reconstruction, expected_reconstruction / num_pixels):
            hint = f"it is averaged over the {num_pixels} pixels; sum it over each image's pixels"
        elif _close(reconstruction, expected_reconstruction * len(pixel_losses)):
            hint = "it is summed over the batch; average it over the images"
        else:
            hint = "use the binary cross-entropy summed over each image's pixels, averaged over the batch"
        problems.append(
            f"reconstruction_loss is {reconstruction:.4g}, expected {expected_reconstruction:.4g}: {hint}"
        )
    if not _close(kl, expected_kl):
        hint = _kl_hint(kl, expected_kl, kl_terms)
        problems.append(f"kl_loss is {kl:.4g}, expected {expected_kl:.4g}: {hint}")
    if problems:
        raise CheckFailure("; ".join(problems) + ".")
    _check_gradients(probe, arrays)


def _kl_hint(kl, expected_kl, kl_terms):
    """Names a wrong KL value's likely cause."""
    latent_dim = kl_terms.shape[1]
    if _close(kl, -expected_kl):
        return "its sign is flipped"
    if _close(kl, expected_kl / latent_dim):
        return "it averages over the latent dimensions; sum over them"
    if _close(kl, 0.0):
        return "it is always 0: compute 0.5 * (exp(z_log_var) + z_mean^2 - 1 - z_log_var), summed over the latent dimensions"
    if _close(kl, expected_kl + 0.5 * latent_dim):
        return "the -1 term is missing: 0.5 * (exp(z_log_var) + z_mean^2 - 1 - z_log_var)"
    if _close(kl, 2.0 * expected_kl):
        return "it is twice the KL: the factor 0.5 is missing"
    if _close(kl, expected_kl * len(kl_terms)):
        return "it is summed over the batch; average it over the images"
    return "use 0.5 * (exp(z_log_var) + z_mean^2 - 1 - z_log_var), summed over the latent dimensions"


def _expected_gradients(images, reconstructions, z_mean, z_log_var):
    """d loss / d (reconstructions, z_mean, z_log_var) of the reference loss at GRADIENT_BETA."""
    images, p = (np.asarray(a, dtype=np.float64) for a in (images, reconstructions))
    z_mean, z_log_var = (np.asarray(a, dtype=np.float64) for a in (z_mean, z_log_var))
    batch = len(images)
    return {
        "reconstructions": (-images / p + (1.0 - images) / (1.0 - p)) / batch,
        "z_mean": GRADIENT_BETA * z_mean / batch,
        "z_log_var": GRADIENT_BETA * 0.5 * (np.exp(z_log_var) - 1.0) / batch,
    }


def _check_gradients(probe, arrays):
    """The loss trains the model: its gradients are those of the closed-form terms."""
    facts = probe.facts("loss")
    if facts.get("gradient_error"):
        raise CheckFailure(
            f"beta_vae_loss's values are right, but {facts['gradient_error']}: BetaVAE.train_step "
            "calls loss.backward(). Compute every term with keras.ops on the tensors it receives "
            "(no numpy conversion, no .detach())."
        )
    expected = _expected_gradients(*arrays)
    cut = []
    for name, wanted in expected.items():
        received = probe.array("loss", f"gradient_{name}").astype(np.float64)
        if np.allclose(received, wanted, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL):
            continue
        if np.allclose(received, 0.0, atol=GRADIENT_ATOL):
            cut.append(name)
            continue
        ratio = float(np.sum(received * wanted) / max(np.sum(wanted * wanted), 1e-30))
        raise CheckFailure(
            f"beta_vae_loss's values are right, but its gradient with respect to {name} is not "
            f"(about {ratio:.3g} times the closed form's, at beta = {GRADIENT_BETA:g}): each term "
            "should be computed from the tensors it receives, as written."
        )
    if cut:
        term = "KL" if "reconstructions" not in cut else "reconstruction"
        raise CheckFailure(
            f"beta_vae_loss passes no gradient to {', '.join(cut)}: the {term} term is cut from "
            "the graph (ops.stop_gradient, .detach() or a constant?), so training never "
            "optimizes it. Return the terms as computed."
        )


# --- the traversal -----------------------------------------------------------------------


@check(points=2, probes=("traversal",))
def test_latent_traversal(probe):
    facts = probe.facts("traversal")
    z = probe.array("traversal", "z").astype(np.float64)
    values = probe.array("traversal", "values").astype(np.float64)
    latent_dim = int(facts["latent_dim"])
    image_shape = tuple(facts["image_shape"])
    if not np.array_equal(probe.array("traversal", "z_after"), probe.array("traversal", "z")):
        raise CheckFailure("latent_traversal modified the z it was given: work on a copy of z.")
    for dimension in facts["dimensions"]:
        images = probe.array("traversal", f"images_{dimension}")
        require_shape(images, (len(values),) + image_shape, f"latent_traversal(decoder, z, {dimension}, values)")
        # The probe's decoder copies each code into the first pixels of its image.
        codes = images.reshape(len(values), -1)[:, :latent_dim].astype(np.float64)
        others = [axis for axis in range(latent_dim) if axis != dimension]
        if not np.allclose(codes[:, others], z[others], atol=TRAVERSAL_ATOL):
            raise CheckFailure(
                f"latent_traversal(decoder, z, {dimension}, values) changed latent dimensions other "
                f"than {dimension}: the decoded codes were {np.round(codes, 3).tolist()} for z = "
                f"{np.round(z, 3).tolist()}. Keep every other dimension at its value in z."
            )
        if not np.allclose(codes[:, dimension], values, atol=TRAVERSAL_ATOL):
            added = np.allclose(codes[:, dimension], z[dimension] + values, atol=TRAVERSAL_ATOL)
            hint = " (they were added to z's value; set the dimension to them)" if added else ""
            raise CheckFailure(
                f"latent_traversal(decoder, z, {dimension}, values) should set dimension {dimension} "
                f"to each of the values {np.round(values, 3).tolist()}{hint}; the decoded codes "
                f"had {np.round(codes[:, dimension], 3).tolist()}."
            )


# --- the trained models ------------------------------------------------------------------


def _trained_terms(probe):
    """Per beta (ascending): z_mean, z_log_var and the per-image reconstruction errors."""
    facts = probe.facts("trained")
    if facts.get("missing_betas"):
        raise CheckFailure(
            f"`models` should hold one trained model per beta in {facts['betas']}; it has no "
            f"entry for {facts['missing_betas']} (its keys: {facts['model_keys']})."
        )
    terms = []
    for index, beta in enumerate(facts["betas"]):
        terms.append({
            "beta": beta,
            "z_mean": probe.array("trained", f"z_mean_{index}"),
            "z_log_var": probe.array("trained", f"z_log_var_{index}"),
            "decoded_shape": facts.get(f"decoded_shape_{index}"),
            "index": index,
        })
    return facts, terms


def _reconstruction_error(probe, term, image_shape):
    index = term["index"]
    decoded_shape = term["decoded_shape"]
    if decoded_shape is None or list(decoded_shape[1:]) != list(image_shape):
        raise CheckFailure(
            f"models[{term['beta']:g}].decoder should output images of shape {tuple(image_shape)}. "
            f"Received: {decoded_shape}"
        )
    return float(np.mean(probe.array("trained", f"reconstruction_error_{index}")))


@check(points=1, probes=("trained",))
def test_trained_models(probe):
    facts, terms = _trained_terms(probe)
    thresholds = probe.thresholds()
    for term in terms:
        num_images = len(term["z_mean"])
        for name in ("z_mean", "z_log_var"):
            require_shape(term[name], (num_images, None), f"models[{term['beta']:g}].encoder's {name}")
            require_finite(term[name], f"models[{term['beta']:g}].encoder's {name}")
        if term["z_mean"].shape != term["z_log_var"].shape:
            raise CheckFailure(
                f"models[{term['beta']:g}].encoder's z_mean and z_log_var differ in shape: "
                f"{term['z_mean'].shape} and {term['z_log_var'].shape}."
            )
    smallest = terms[0]
    error = _reconstruction_error(probe, smallest, facts["image_shape"])
    if not thresholds.holds("max_reconstruction_error_smallest_beta", error):
        raise CheckFailure(
            f"The beta={smallest['beta']:g} model reconstructs the shapes with an error of {error:.1f} "
            f"nats per image (a trained model: <= {thresholds['max_reconstruction_error_smallest_beta']:.1f}; "
            "an untrained one: ~177). Was it trained with SETTINGS' epochs?"
        )


@check(points=1, probes=("trained",))
def test_reconstruction_rises_with_beta(probe):
    facts, terms = _trained_terms(probe)
    thresholds = probe.thresholds()
    errors = [_reconstruction_error(probe, term, facts["image_shape"]) for term in terms]
    ratio = errors[-1] / max(errors[0], 1e-9)
    if not thresholds.holds("min_reconstruction_error_ratio", ratio):
        listed = ", ".join(f"beta={term['beta']:g}: {error:.1f}" for term, error in zip(terms, errors))
        raise CheckFailure(
            f"The reconstruction error should grow with beta (a larger KL weight leaves less "
            f"information for the decoder): {listed} nats per image, a ratio of {ratio:.2f} "
            f"(expected >= {thresholds['min_reconstruction_error_ratio']:.2f}). Does the loss weight "
            "the KL by each model's beta?"
        )


@check(points=2, probes=("trained",))
def test_kl_falls_with_beta(probe):
    _, terms = _trained_terms(probe)
    thresholds = probe.thresholds()
    kl_per_dimension = [
        (0.5 * (np.exp(t["z_log_var"].astype(np.float64)) + t["z_mean"].astype(np.float64) ** 2 - 1.0
                - t["z_log_var"].astype(np.float64))).mean(axis=0)
        for t in terms
    ]
    totals = [float(kl.sum()) for kl in kl_per_dimension]
    active = [int(np.sum(kl > ACTIVE_KL_NATS)) for kl in kl_per_dimension]
    listed = ", ".join(
        f"beta={term['beta']:g}: {total:.2f} nats, {count} active" for term, total, count in zip(terms, totals, active)
    )
    ratio = totals[-1] / max(totals[0], 1e-9)
    if not thresholds.holds("max_kl_ratio", ratio) or not active[-1] < active[0]:
        raise CheckFailure(
            "A larger beta should leave less information in the code: a smaller total KL "
            f"(ratio <= {thresholds['max_kl_ratio']:.2f}) and fewer active dimensions (mean KL > "
            f"{ACTIVE_KL_NATS} nats). Received: {listed} (KL ratio {ratio:.2f}). Does the loss "
            "weight the KL by each model's beta?"
        )


@check(points=2, probes=("trained",))
def test_mig_rises_with_beta(probe):
    _, terms = _trained_terms(probe)
    thresholds = probe.thresholds()
    factors = probe.array("trained", "factors")
    migs = []
    for term in terms:
        require_finite(term["z_mean"], f"models[{term['beta']:g}].encoder's z_mean")
        migs.append(mutual_information_gap(term["z_mean"].astype(np.float64), factors))
    rise = migs[-1] - migs[0]
    if not thresholds.holds("min_mig_rise", rise):
        listed = ", ".join(f"beta={term['beta']:g}: {mig:.3f}" for term, mig in zip(terms, migs))
        raise CheckFailure(
            "A larger beta should give a more disentangled code, a higher MIG of z_mean against "
            f"the position factors: {listed}, a rise of {rise:.3f} (expected >= "
            f"{thresholds['min_mig_rise']:.3f}, from calibrated runs). Does the loss weight the KL "
            "by each model's beta, and was every model trained with SETTINGS' epochs?"
        )


# --- own work ----------------------------------------------------------------------------


@check(points=1, probes=("origin",))
def test_own_implementation(probe):
    facts = probe.facts("origin")
    borrowed = [
        f"{name} (from {module})"
        for name, module in facts.get("modules", {}).items()
        if module.startswith("course_lib")
    ]
    borrowed += [f"models trained with {module}" for module in facts.get("model_modules", []) if module.startswith("course_lib")]
    imports = probe.context.get("imports", [])
    borrowed += [f"import of {name}" for name in imports if name in REFERENCE_NAMES]
    if borrowed:
        raise CheckFailure(
            "beta_vae_loss, latent_traversal and the BetaVAE models must be your own, not "
            f"course_lib's reference (course_lib.vae.VAE has a beta too): found {', '.join(sorted(set(borrowed)))}."
        )
    missing = [name for name in OWN_NAMES if name not in facts.get("modules", {})]
    if missing:
        raise CheckFailure(f"The notebook defines no {', '.join(missing)}.")
    if not facts.get("num_models"):
        raise CheckFailure(
            "`models` holds no trained model yet: there is nothing of your own to grade. Train one "
            "BetaVAE per beta (Step 4)."
        )
