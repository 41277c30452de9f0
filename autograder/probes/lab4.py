"""Probes of lab4 (convolutional VAE on CIFAR-10). Run in the grader's probe process.

Every probe only calls the student's objects on grader-chosen inputs and records what
came back; the checks (autograder/checks/test_lab4.py) decide.
"""

from autograder.probes.runtime import ProbeError, require, to_numpy  # noqa: F401  (prepended in kernels)

IMAGE_SHAPE = (32, 32, 3)
EXPORT_MODELS = ("vae",)
# samples and reconstructions read the exported model only: no submitted code runs there.
DEFINITION_ITEMS = ("decoder", "loss", "encoder")
# course_lib.vae holds a Gaussian likelihood and a decoder: the notebook uses its given parts,
# the probe process (which runs reconstruction_loss and build_cifar_decoder) does not see it.
PROBE_WITHHELD_MODULES = ("course_lib.vae",)
DECODER_BATCH = 16
# Codes far out in the prior's tails too: the sigmoid output must stay in [0, 1] anyway.
DECODER_CODE_SCALE = 3.0
EXTREME_CODE_SCALE = 1000.0
OTHER_LATENT_DIMS = (3, 12)
LOSS_BATCH = 12
LOSS_NOISE_LEVELS = (0.01, 0.3)
TILES = 2
ENCODER_BATCH = 16
PREDICT_BATCH_SIZE = 250
# Names that show a graded function was delegated to course_lib's reference code.
COURSE_LIB_DECODER_NAMES = ("build_decoder", "decoder_outputs", "build_autoencoder")
COURSE_LIB_LOSS_NAMES = ("gaussian_nll", "bernoulli_nll", "per_image_terms", "_batch_variance")


def _referenced_names(function):
    """Global and attribute names a function's code refers to, nested functions included."""
    code = getattr(function, "__code__", None)
    names = set()
    pending = [code] if code is not None else []
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending.extend(const for const in current.co_consts if hasattr(const, "co_names"))
    return sorted(names)


def _all_layers(model):
    """The layers of a model, nested models' layers included (depth first)."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def _layer_summary(model):
    """Facts about the layers that matter for the checks: class, strides, filters."""
    import keras

    summary = []
    for layer in _all_layers(model):
        entry = {"class": type(layer).__name__, "module": type(layer).__module__}
        if isinstance(layer, keras.layers.Conv2DTranspose):
            entry["transposed"] = True
            entry["strides"] = [int(step) for step in layer.strides]
            entry["filters"] = int(layer.filters)
        summary.append(entry)
    return summary


def _architecture(model):
    """(class name, output shape) of every layer: two models built alike compare equal."""
    signature = []
    for layer in _all_layers(model):
        try:
            shape = list(layer.output.shape)[1:]
        except (AttributeError, ValueError):
            shape = None
        signature.append([type(layer).__name__, shape])
    return signature


def probe_decoder(namespace, rng):
    """Builds decoders with `build_cifar_decoder` and decodes grader-chosen codes."""
    import numpy as np

    build_cifar_decoder = require(namespace, "build_cifar_decoder", "callable")
    latent_dim = int(require(namespace, "LATENT_DIM"))
    other_latent_dim = int(rng.integers(*OTHER_LATENT_DIMS))
    result = {
        "function_module": getattr(build_cifar_decoder, "__module__", None),
        "referenced_names": _referenced_names(build_cifar_decoder),
        "latent_dim": latent_dim,
        "other_latent_dim": other_latent_dim,
    }
    for key, size in (("main", latent_dim), ("other", other_latent_dim)):
        codes = (DECODER_CODE_SCALE * rng.standard_normal((DECODER_BATCH, size))).astype("float32")
        try:
            decoder = build_cifar_decoder(size)
            result[f"{key}_images"] = np.asarray(to_numpy(decoder(codes)), dtype="float32")
        except Exception as error:
            if key == "main":
                raise
            # A decoder that only works for LATENT_DIM: the output check says so, the layer
            # check still grades the decoder of LATENT_DIM.
            result["other_error"] = f"{type(error).__name__}: {error}"[:300]
            continue
        if key == "main":
            result["layers"] = _layer_summary(decoder)
            # Any code must decode to pixels in [0, 1]: an unbounded output layer (relu, linear)
            # of a fresh decoder exceeds 1 only for large codes.
            extreme = (EXTREME_CODE_SCALE * rng.standard_normal((DECODER_BATCH, size))).astype("float32")
            result["extreme_images"] = np.asarray(to_numpy(decoder(extreme)), dtype="float32")
    return result


def _tile(images):
    import numpy as np

    return np.tile(images, (1, TILES, TILES, 1))


def probe_loss(namespace, rng):
    """Calls `reconstruction_loss` on grader images: noisy, perfect and tiled reconstructions."""
    import keras
    import numpy as np

    reconstruction_loss = require(namespace, "reconstruction_loss", "callable")
    images = rng.uniform(0.0, 1.0, size=(LOSS_BATCH, *IMAGE_SHAPE)).astype("float32")
    # Every image gets its own noise level, so that per-image values differ.
    noise_levels = np.geomspace(*LOSS_NOISE_LEVELS, LOSS_BATCH)[rng.permutation(LOSS_BATCH)]
    noise = rng.standard_normal(images.shape) * noise_levels[:, None, None, None]
    reconstructions = np.clip(images + noise, 0.0, 1.0).astype("float32")

    def call(first, second):
        value = reconstruction_loss(keras.ops.convert_to_tensor(first), keras.ops.convert_to_tensor(second))
        return np.asarray(to_numpy(value), dtype="float64")

    result = {
        "function_module": getattr(reconstruction_loss, "__module__", None),
        "referenced_names": _referenced_names(reconstruction_loss),
        "images": images,
        "reconstructions": reconstructions,
        "loss_noisy": call(images, reconstructions),
        "loss_perfect": call(images, images),
    }
    # The same pixels, twice as high and wide: a sum over pixels grows 4x, a mean does not.
    try:
        result["loss_tiled"] = call(_tile(images), _tile(reconstructions))
        result["tiled_error"] = None
    except Exception as error:  # a loss written for 32x32 images only: the check falls back
        result["tiled_error"] = f"{type(error).__name__}: {error}"[:300]
    return result


def _vae_facts(namespace):
    """Facts about the trained `vae`: its class, and whether its decoder is the student's."""
    vae = require(namespace, "vae")
    for name in ("encoder", "decoder"):
        if not hasattr(vae, name):
            raise ProbeError(f"`vae` has no `.{name}`. Keep the model's encoder and decoder as attributes.")
    facts = {
        "vae_module": type(vae).__module__,
        "vae_class": type(vae).__name__,
        "decoder_layers": _layer_summary(vae.decoder),
        "decoder_from_function": None,
    }
    build_cifar_decoder = namespace.get("build_cifar_decoder")
    latent_dim = namespace.get("LATENT_DIM")
    if callable(build_cifar_decoder) and latent_dim is not None:
        try:
            fresh = build_cifar_decoder(int(latent_dim))
            facts["decoder_from_function"] = _architecture(fresh) == _architecture(vae.decoder)
        except Exception:  # the function is graded by the decoder checks
            facts["decoder_from_function"] = None
    return vae, facts


def probe_encoder(namespace, rng):
    """Runs `vae.encoder` on a batch of grader images."""
    import numpy as np

    vae, facts = _vae_facts(namespace)
    latent_dim = int(require(namespace, "LATENT_DIM"))
    images = rng.uniform(0.0, 1.0, size=(ENCODER_BATCH, *IMAGE_SHAPE)).astype("float32")
    outputs = vae.encoder(images)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    result = dict(facts, latent_dim=latent_dim, num_outputs=len(outputs))
    for index, output in enumerate(outputs[:3]):
        result[f"output{index}"] = np.asarray(to_numpy(output), dtype="float32")
    return result


def probe_samples(namespace, rng):
    """Decodes grader-drawn prior codes with `vae.decoder` (the grading profile's count)."""
    import course_lib
    import numpy as np

    vae, facts = _vae_facts(namespace)
    latent_dim = int(require(namespace, "LATENT_DIM"))
    num_samples = int(course_lib.settings("grading")["num_samples"])
    codes = rng.standard_normal((num_samples, latent_dim)).astype("float32")
    samples = vae.decoder.predict(codes, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return dict(facts, samples=np.asarray(to_numpy(samples), dtype="float32"))


def probe_reconstructions(namespace, rng):
    """Reconstructs the exact CIFAR-10 test images through the encoder mean and decoder."""
    import numpy as np
    from course_lib.data import load_cifar10

    vae, facts = _vae_facts(namespace)
    images, _ = load_cifar10("test", exact_only=True)
    encoded = vae.encoder.predict(images, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    z_mean = encoded[0] if isinstance(encoded, (list, tuple)) else encoded
    reconstructions = vae.decoder.predict(z_mean, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return dict(
        facts,
        num_images=int(images.shape[0]),
        reconstructions=np.asarray(to_numpy(reconstructions), dtype="float32"),
    )


PROBES = {
    "decoder": probe_decoder,
    "loss": probe_loss,
    "encoder": probe_encoder,
    "samples": probe_samples,
    "reconstructions": probe_reconstructions,
}
