"""Probes of lab5 (beta-VAE on course_lib.shapes). Run in the grader's probe process.

Each probe calls the student's objects on grader-chosen inputs and records what came
back; the checks in `autograder/checks/test_lab5.py` decide. Graded names (see the
notebook's introduction): `beta_vae_loss`, `latent_traversal`, `models`, `BetaVAE`.
"""

from autograder.probes.runtime import ProbeError, defined_in, require, to_numpy  # noqa: F401  (prepended in kernels)

LOSS_BATCH = 16
LOSS_IMAGE_SHAPE = (16, 16, 1)
LOSS_LATENT_DIM = 4
LOSS_BETAS = (0.0, 1.0, 4.0, 16.0)
# The beta at which the gradients of the loss are recorded (1: a loss that ignores beta or
# puts it on the wrong term has the right gradient there, and loses only its own check).
GRADIENT_BETA = 1.0
# Binary targets with some grey edges, like the shapes' images.
LOSS_ON_FRACTION = 0.25

TRAVERSAL_LATENT_DIM = 5
TRAVERSAL_IMAGE_SHAPE = (4, 4, 1)
TRAVERSAL_NUM_VALUES = 7
TRAVERSAL_SPAN = 3.0
TRAVERSAL_DIMENSIONS = (2, 4)

# The data of the notebook: one square at its largest size, upright; the position varies.
FIXED_FACTORS = {"shape": 0, "scale": 5, "rotation": 0}
EVAL_IMAGES = 3000
PREDICT_BATCH_SIZE = 1000
PROBABILITY_EPSILON = 1e-7
GRADED_NAMES = ("beta_vae_loss", "latent_traversal", "BetaVAE")
EXPORT_MODELS = ("models",)
# trained reads the exported models only: no submitted code runs there.
DEFINITION_ITEMS = ("loss", "traversal", "origin")
# The reference KL and latent traversal live there: not in the probe process, which runs the
# notebook's beta_vae_loss and latent_traversal.
PROBE_WITHHELD_MODULES = ("course_lib.vae", "course_lib.plots")


def probe_loss(namespace, rng):
    """Calls beta_vae_loss on one random batch with several betas; records the three terms."""
    import keras
    import numpy as np

    beta_vae_loss = require(namespace, "beta_vae_loss", "callable")
    images = (rng.random((LOSS_BATCH,) + LOSS_IMAGE_SHAPE) < LOSS_ON_FRACTION).astype("float32")
    edges = rng.random(images.shape) < 0.05
    images[edges] = rng.random(int(edges.sum())).astype("float32")
    reconstructions = rng.uniform(0.02, 0.98, images.shape).astype("float32")
    z_mean = rng.normal(0.0, 1.5, (LOSS_BATCH, LOSS_LATENT_DIM)).astype("float32")
    z_log_var = rng.uniform(-3.0, 1.5, (LOSS_BATCH, LOSS_LATENT_DIM)).astype("float32")
    # Backend tensors, as BetaVAE.train_step passes them.
    tensors = [keras.ops.convert_to_tensor(array) for array in (images, reconstructions, z_mean, z_log_var)]
    terms = {"loss": [], "reconstruction_loss": [], "kl_loss": []}
    shapes = []
    for beta in LOSS_BETAS:
        returned = beta_vae_loss(*tensors, beta)
        if not isinstance(returned, (tuple, list)) or len(returned) != 3:
            raise ProbeError(
                "beta_vae_loss must return a tuple (loss, reconstruction_loss, kl_loss). "
                f"Received: {type(returned).__name__}"
                + (f" of length {len(returned)}" if isinstance(returned, (tuple, list)) else "")
            )
        values = [np.asarray(to_numpy(value), dtype="float64") for value in returned]
        shapes.append([list(np.shape(value)) for value in values])
        for name, value in zip(terms, values):
            terms[name].append(float(np.mean(value)))
    result = {
        "images": images,
        "reconstructions": reconstructions,
        "z_mean": z_mean,
        "z_log_var": z_log_var,
        "betas": list(LOSS_BETAS),
        "term_shapes": shapes,
    }
    for name, values in terms.items():
        result[name] = np.asarray(values, dtype="float64")
    result.update(_loss_gradients(beta_vae_loss, images, reconstructions, z_mean, z_log_var))
    return result


def _loss_gradients(beta_vae_loss, *arrays):
    """Gradients of the returned loss (at GRADIENT_BETA) w.r.t. reconstructions, z_mean, z_log_var."""
    import keras

    tensors = [keras.ops.convert_to_tensor(array).detach().requires_grad_(True) for array in arrays]
    loss = beta_vae_loss(*tensors, GRADIENT_BETA)[0]
    if getattr(loss, "grad_fn", None) is None:
        return {"gradient_error": f"the loss is a {type(loss).__name__} that no gradient flows back from"}
    if tuple(loss.shape) != ():
        return {"gradient_error": f"the loss has shape {tuple(loss.shape)}, not a scalar"}
    loss.backward()
    result = {}
    for name, tensor in zip(("images", "reconstructions", "z_mean", "z_log_var"), tensors):
        if name != "images":
            grad = tensor.grad
            result[f"gradient_{name}"] = to_numpy(grad) if grad is not None else 0.0 * to_numpy(tensor)
    return result


def _linear_decoder():
    """A decoder whose image shows the code: pixel i = z[i] for i < latent_dim, others 0."""
    import keras
    import numpy as np

    num_pixels = int(np.prod(TRAVERSAL_IMAGE_SHAPE))
    kernel = np.zeros((TRAVERSAL_LATENT_DIM, num_pixels), dtype="float32")
    kernel[np.arange(TRAVERSAL_LATENT_DIM), np.arange(TRAVERSAL_LATENT_DIM)] = 1.0
    codes = keras.Input(shape=(TRAVERSAL_LATENT_DIM,))
    dense = keras.layers.Dense(num_pixels, use_bias=False, trainable=False)
    pixels = dense(codes)
    dense.set_weights([kernel])
    images = keras.layers.Reshape(TRAVERSAL_IMAGE_SHAPE)(pixels)
    return keras.Model(codes, images, name="probe_linear_decoder")


def probe_traversal(namespace, rng):
    """Calls latent_traversal with a decoder that copies the code into the first pixels."""
    import numpy as np

    latent_traversal = require(namespace, "latent_traversal", "callable")
    decoder = _linear_decoder()
    z = rng.normal(0.0, 1.0, TRAVERSAL_LATENT_DIM).astype("float32")
    z_before = z.copy()
    values = np.linspace(-TRAVERSAL_SPAN, TRAVERSAL_SPAN, TRAVERSAL_NUM_VALUES).astype("float32")
    result = {"z": z_before, "values": values, "dimensions": list(TRAVERSAL_DIMENSIONS),
              "latent_dim": TRAVERSAL_LATENT_DIM, "image_shape": list(TRAVERSAL_IMAGE_SHAPE)}
    for dimension in TRAVERSAL_DIMENSIONS:
        images = latent_traversal(decoder, z, dimension, values)
        result[f"images_{dimension}"] = np.asarray(to_numpy(images), dtype="float32")
    result["z_after"] = np.asarray(z, dtype="float32")
    return result


def probe_trained(namespace, rng):
    """Encodes a fresh evaluation set with every trained model; records codes and errors.

    For each beta of the profile (ascending): `z_mean_<i>`, `z_log_var_<i>` of the
    evaluation images and `reconstruction_error_<i>`, the binary cross-entropy (nats per
    image) of the images decoded from `z_mean`. `factors` holds the varying factors.
    """
    import numpy as np

    import course_lib
    from course_lib import shapes

    models = require(namespace, "models")
    if not isinstance(models, dict):
        raise ProbeError(f"`models` should be a dict {{beta: trained model}}. Received: {type(models).__name__}")
    settings = course_lib.settings("lab5")
    betas = sorted(float(beta) for beta in settings["betas"])
    result = {
        "betas": betas,
        "model_keys": sorted(repr(key) for key in models),
        "profile": course_lib.active_profile(),
        "model_modules": {},
    }
    by_value = {}
    for key, model in models.items():
        try:
            by_value[float(key)] = model
        except (TypeError, ValueError):
            continue
    missing = [beta for beta in betas if beta not in by_value]
    result["missing_betas"] = missing
    if missing:
        return result
    image_size = int(settings["image_size"])
    seed = int(rng.integers(2**31 - 1))
    images, factors, _ = shapes.generate_shapes(EVAL_IMAGES, image_size, seed=seed, fixed_factors=FIXED_FACTORS)
    result["factors"] = factors[:, shapes.varying_factor_axes(FIXED_FACTORS)]
    result["image_shape"] = [image_size, image_size, 1]
    for index, beta in enumerate(betas):
        model = by_value[beta]
        result["model_modules"][repr(beta)] = defined_in(model)
        for part in ("encoder", "decoder"):
            if not hasattr(model, part):
                raise ProbeError(f"models[{beta!r}] has no `.{part}`: keep BetaVAE(encoder, decoder, beta).")
        outputs = model.encoder.predict(images, batch_size=PREDICT_BATCH_SIZE, verbose=0)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outputs) < 2:
            raise ProbeError(
                f"models[{beta!r}].encoder should output [z_mean, z_log_var, z]. Received {len(outputs)} output(s)."
            )
        z_mean = np.asarray(outputs[0], dtype="float32")
        z_log_var = np.asarray(outputs[1], dtype="float32")
        decoded = np.asarray(model.decoder.predict(z_mean, batch_size=PREDICT_BATCH_SIZE, verbose=0), dtype="float64")
        result[f"z_mean_{index}"] = z_mean
        result[f"z_log_var_{index}"] = z_log_var
        result[f"decoded_shape_{index}"] = list(decoded.shape)
        if decoded.shape == images.shape:
            probabilities = np.clip(decoded, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
            pixel_losses = -(images * np.log(probabilities) + (1.0 - images) * np.log(1.0 - probabilities))
            result[f"reconstruction_error_{index}"] = pixel_losses.reshape(len(images), -1).sum(axis=1)
    return result


def probe_origin(namespace, rng):
    """Records where the graded objects and the trained models were defined."""
    modules = {}
    for name in GRADED_NAMES:
        if name in namespace:
            modules[name] = defined_in(namespace[name])
    models = namespace.get("models")
    model_modules = []
    if isinstance(models, dict):
        model_modules = sorted({defined_in(model) for model in models.values()})
    return {"modules": modules, "model_modules": model_modules, "num_models": len(models) if isinstance(models, dict) else 0}


PROBES = {
    "loss": probe_loss,
    "traversal": probe_traversal,
    "trained": probe_trained,
    "origin": probe_origin,
}
