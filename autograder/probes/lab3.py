"""Probes of lab3 (VAE on MNIST). Run in the grader's probe process, one child per item.

Each probe calls the student's objects on grader-chosen inputs and records what came
back; the checks in `autograder/checks/test_lab3.py` decide. Graded names (see the
notebook's introduction): `kl_divergence`, `Sampling`, `VAE`, `vae`, `LATENT_DIM`.
"""

from autograder.probes.runtime import ProbeError, defined_in, module_of, require, to_numpy  # noqa: F401  (prepended in kernels)

KL_BATCH = 64
KL_LATENT_DIM = 5
KL_MODERATE_ROWS = 8
KL_MODERATE_LOG_VAR = 3.0
KL_EXTREME_LOG_VAR = 30.0

SAMPLING_DRAWS = 20_000
SAMPLING_LATENT_DIM = 4
SAMPLING_MEAN_RANGE = 2.0
# |log_var| in this range: exp(log_var) and exp(0.5 * log_var) differ by a factor >= 1.5.
SAMPLING_LOG_VAR_RANGE = (0.8, 2.0)
GRADIENT_BATCH = 256
GRADIENT_LATENT_DIM = 3
FRESH_NOISE_BATCH = 64

IMAGE_SHAPE = (28, 28, 1)
SHAPE_IMAGES = 256
SHAPE_CODES = 16

TRAIN_STEP_IMAGES = 512
TRAIN_STEP_EPOCHS = 4
TRAIN_STEP_BATCH_SIZE = 64
TRAIN_STEP_HIDDEN_UNITS = 64
TRAIN_STEP_LATENT_DIM = 2
TRAIN_STEP_LEARNING_RATE = 1e-3
TRAIN_STEP_METRICS = ("loss", "reconstruction_loss", "kl_loss")

DECODE_BATCH_SIZE = 500
GRADED_NAMES = ("kl_divergence", "Sampling", "VAE")

# What the kernel saves after the notebook ran (its other plain values are saved too).
EXPORT_MODELS = ("vae",)
# Items that call the notebook's definitions (its imports, functions, classes); the others
# only read the exported model and run no submitted code at all.
DEFINITION_ITEMS = ("kl", "sampling_statistics", "sampling_fresh_noise", "sampling_gradients", "train_step",
                    "origin")
# The course's reference implementation of the graded pieces: not readable in this lab's
# kernel and probe process.
WITHHELD_MODULES = ("course_lib.vae",)
# Correct pieces the grader lends to one item only (train_step is graded alone); the
# children of the other items drop them before any submitted code runs.
ITEM_PRIVATE = {"train_step": ("_reference_kl", "_train_step_models")}


def probe_kl(namespace, rng):
    """Calls kl_divergence on a (batch, 5) input and on each of its columns alone.

    Rows [:8] have moderate log-variances (a Monte-Carlo estimate can check them); the
    other rows reach +-30, where a careless formula overflows or loses its sign.
    """
    import numpy as np

    kl_divergence = require(namespace, "kl_divergence", "callable")
    z_mean = rng.normal(0.0, 2.0, size=(KL_BATCH, KL_LATENT_DIM)).astype("float32")
    z_log_var = rng.uniform(
        -KL_EXTREME_LOG_VAR, KL_EXTREME_LOG_VAR, size=(KL_BATCH, KL_LATENT_DIM)
    ).astype("float32")
    z_log_var[:KL_MODERATE_ROWS] = rng.uniform(
        -KL_MODERATE_LOG_VAR, KL_MODERATE_LOG_VAR, size=(KL_MODERATE_ROWS, KL_LATENT_DIM)
    )
    value = kl_divergence(z_mean, z_log_var)
    per_dimension = []
    for column in range(KL_LATENT_DIM):
        single = kl_divergence(z_mean[:, column : column + 1], z_log_var[:, column : column + 1])
        per_dimension.append(np.asarray(to_numpy(single), dtype="float64"))
    shapes = sorted({tuple(int(size) for size in np.shape(column)) for column in per_dimension})
    result = {
        "z_mean": z_mean,
        "z_log_var": z_log_var,
        "kl": np.asarray(to_numpy(value), dtype="float64"),
        "single_dimension_shapes": [list(shape) for shape in shapes],
        "moderate_rows": KL_MODERATE_ROWS,
    }
    if len(shapes) == 1:
        result["kl_single_dimension"] = np.stack(per_dimension, axis=-1)
    return result


def _sampling_layer(namespace):
    sampling_class = require(namespace, "Sampling", "callable")
    return sampling_class()


def probe_sampling_statistics(namespace, rng):
    """Draws many z for fixed (z_mean, z_log_var) rows; records z for mean/variance/shape tests."""
    import numpy as np

    layer = _sampling_layer(namespace)
    mean_row = rng.uniform(-SAMPLING_MEAN_RANGE, SAMPLING_MEAN_RANGE, SAMPLING_LATENT_DIM)
    low, high = SAMPLING_LOG_VAR_RANGE
    log_var_row = rng.uniform(low, high, SAMPLING_LATENT_DIM) * rng.choice([-1.0, 1.0], SAMPLING_LATENT_DIM)
    z_mean = np.tile(mean_row, (SAMPLING_DRAWS, 1)).astype("float32")
    z_log_var = np.tile(log_var_row, (SAMPLING_DRAWS, 1)).astype("float32")
    z = layer([z_mean, z_log_var])
    return {
        "mean_row": mean_row.astype("float32"),
        "log_var_row": log_var_row.astype("float32"),
        "z": np.asarray(to_numpy(z), dtype="float32"),
    }


def probe_sampling_fresh_noise(namespace, rng):
    """Calls one Sampling layer twice, and a second layer once, on the same inputs."""
    import numpy as np

    first_layer = _sampling_layer(namespace)
    second_layer = _sampling_layer(namespace)
    z_mean = rng.normal(size=(FRESH_NOISE_BATCH, SAMPLING_LATENT_DIM)).astype("float32")
    z_log_var = np.zeros_like(z_mean)
    return {
        "z_mean": z_mean,
        "first_call": np.asarray(to_numpy(first_layer([z_mean, z_log_var])), dtype="float32"),
        "second_call": np.asarray(to_numpy(first_layer([z_mean, z_log_var])), dtype="float32"),
        "other_layer": np.asarray(to_numpy(second_layer([z_mean, z_log_var])), dtype="float32"),
    }


def probe_sampling_gradients(namespace, rng):
    """Back-propagates sum(z) to z_mean and z_log_var with torch autograd.

    Since z[i, j] depends only on z_mean[i, j] and z_log_var[i, j], the gradients of
    sum(z) are the element-wise derivatives dz/dz_mean and dz/dz_log_var.
    """
    layer = _sampling_layer(namespace)  # first: a notebook without one needs no Keras import here
    import keras
    import numpy as np
    import torch

    mean_values = rng.normal(size=(GRADIENT_BATCH, GRADIENT_LATENT_DIM)).astype("float32")
    log_var_values = rng.uniform(-2.0, 2.0, size=(GRADIENT_BATCH, GRADIENT_LATENT_DIM)).astype("float32")
    z_mean = keras.ops.convert_to_tensor(mean_values).detach().requires_grad_(True)
    z_log_var = keras.ops.convert_to_tensor(log_var_values).detach().requires_grad_(True)
    z = layer([z_mean, z_log_var])
    result = {
        "z_mean": mean_values,
        "z_log_var": log_var_values,
        "z": np.asarray(to_numpy(z), dtype="float32"),
        "is_torch_tensor": isinstance(z, torch.Tensor),
        "requires_grad": bool(getattr(z, "requires_grad", False)),
    }
    if result["is_torch_tensor"] and result["requires_grad"]:
        gradients = torch.autograd.grad(z.sum(), [z_mean, z_log_var], allow_unused=True)
        for name, gradient in zip(("grad_z_mean", "grad_z_log_var"), gradients):
            result[f"{name}_missing"] = gradient is None
            if gradient is not None:
                result[name] = np.asarray(to_numpy(gradient), dtype="float32")
    return result


def probe_model_shapes(namespace, rng):
    """Runs vae.encoder on MNIST test images and vae.decoder on random codes."""
    import numpy as np

    from course_lib.data import load_mnist

    vae = require(namespace, "vae")
    latent_dim = require(namespace, "LATENT_DIM")
    for part in ("encoder", "decoder"):
        if not hasattr(vae, part):
            raise ProbeError(f"`vae` has no `.{part}`. Keep `VAE(encoder, decoder)` storing both.")
    images, _ = load_mnist("test", limit=SHAPE_IMAGES)
    outputs = vae.encoder.predict(images, batch_size=SHAPE_IMAGES, verbose=0)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    result = {
        "encoder_layer_classes": getattr(vae, "_course_layer_classes", {}).get("encoder"),
        "latent_dim": int(latent_dim) if isinstance(latent_dim, (int, np.integer)) else repr(latent_dim),
        "num_encoder_outputs": len(outputs),
        "encoder_output_shapes": [list(np.shape(output)) for output in outputs],
    }
    for name, output in zip(("z_mean", "z_log_var", "z"), outputs):
        result[name] = np.asarray(output, dtype="float32")
    code_width = int(np.shape(outputs[0])[-1]) if np.ndim(outputs[0]) == 2 else int(latent_dim)
    codes = rng.normal(size=(SHAPE_CODES, code_width)).astype("float32")
    decoded = vae.decoder.predict(codes, batch_size=SHAPE_CODES, verbose=0)
    result["decoded"] = np.asarray(decoded, dtype="float32")
    return result


def _reference_kl(z_mean, z_log_var):
    from keras import ops

    return 0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


def _train_step_models(latent_dim, seed):
    """A small dense encoder (with a correct sampling layer) and decoder, fresh weights.

    Every initializer and the noise have their own seed, so nothing global is reseeded.
    """
    import keras
    from keras import layers, ops

    seeds = iter(range(seed, seed + 100))

    def dense(units, activation=None):
        initializer = keras.initializers.GlorotUniform(seed=next(seeds))
        return layers.Dense(units, activation=activation, kernel_initializer=initializer)

    class _ProbeSampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(next(seeds))

        def call(self, inputs):
            z_mean, z_log_var = inputs
            noise = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * noise

    images = keras.Input(shape=IMAGE_SHAPE)
    hidden = dense(TRAIN_STEP_HIDDEN_UNITS, "relu")(layers.Flatten()(images))
    z_mean = dense(latent_dim)(hidden)
    z_log_var = dense(latent_dim)(hidden)
    z = _ProbeSampling()([z_mean, z_log_var])
    encoder = keras.Model(images, [z_mean, z_log_var, z], name="probe_encoder")
    codes = keras.Input(shape=(latent_dim,))
    hidden = dense(TRAIN_STEP_HIDDEN_UNITS, "relu")(codes)
    pixels = dense(IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], "sigmoid")(hidden)
    decoder = keras.Model(codes, layers.Reshape(IMAGE_SHAPE)(pixels), name="probe_decoder")
    return encoder, decoder


def probe_train_step(namespace, rng):
    """Trains a fresh `VAE(encoder, decoder)` (small dense parts) for a few epochs.

    The encoder and decoder are the probe's own (with a correct sampling layer), so this
    grades `train_step` alone. For the same reason, while it trains, the notebook's
    `kl_divergence` is replaced by a correct one (and put back afterwards): a mistake
    in `kl_divergence` costs the KL checks' points, not this check's.
    """
    vae_class = require(namespace, "VAE", "callable")  # first: see probe_sampling_gradients
    import keras
    import numpy as np

    from course_lib.data import load_mnist

    images, _ = load_mnist("train", limit=TRAIN_STEP_IMAGES)
    images = images[rng.permutation(len(images))]
    encoder, decoder = _train_step_models(TRAIN_STEP_LATENT_DIM, int(rng.integers(2**20)))
    model = vae_class(encoder, decoder)
    model.compile(optimizer=keras.optimizers.Adam(TRAIN_STEP_LEARNING_RATE))
    before = [np.array(to_numpy(weight)) for weight in decoder.weights]
    had_kl = "kl_divergence" in namespace
    student_kl = namespace.get("kl_divergence")
    namespace["kl_divergence"] = _reference_kl
    try:
        history = model.fit(
            images, epochs=TRAIN_STEP_EPOCHS, batch_size=TRAIN_STEP_BATCH_SIZE, shuffle=False, verbose=0
        )
    finally:
        if had_kl:
            namespace["kl_divergence"] = student_kl
        else:
            del namespace["kl_divergence"]
    after = [np.array(to_numpy(weight)) for weight in decoder.weights]
    changed = float(sum(np.abs(a - b).sum() for a, b in zip(after, before)))
    logged = {}
    for name, values in history.history.items():
        try:
            logged[str(name)] = [float(value) for value in values]
        except (TypeError, ValueError):
            logged[str(name)] = None
    return {
        "history": logged,
        "metric_names": sorted(str(name) for name in history.history),
        "decoder_weight_change": changed,
        "epochs": TRAIN_STEP_EPOCHS,
    }


def probe_origin(namespace, rng):
    """Records where the graded objects were defined (the notebook's own: "__main__")."""
    modules = {}
    for name in GRADED_NAMES + ("vae",):
        if name in namespace:
            try:
                modules[name] = defined_in(namespace[name])
            except ProbeError:  # a saved model that cannot be loaded: the model checks say why
                continue
    layer_modules = []
    vae = namespace.get("vae")
    # As the notebook built it (recorded by the export), not as the grader loaded it.
    exported = getattr(vae, "_course_layer_classes", {}).get("encoder")
    if exported is not None:
        layer_modules = [name for name in exported if name.endswith(".Sampling") or name.startswith("course_lib")]
    else:
        encoder = getattr(vae, "encoder", None)
        for layer in getattr(encoder, "layers", []) or []:
            if type(layer).__name__ == "Sampling" or module_of(type(layer)).startswith("course_lib"):
                layer_modules.append(f"{module_of(type(layer))}.{type(layer).__name__}")
    return {"modules": modules, "encoder_layer_classes": sorted(set(layer_modules))}


def probe_samples(namespace, rng):
    """Decodes prior samples z ~ N(0, I) with vae.decoder (N from the grading profile)."""
    import numpy as np

    import course_lib

    vae = require(namespace, "vae")
    latent_dim = require(namespace, "LATENT_DIM")
    num_samples = int(course_lib.settings("grading")["num_samples"])
    codes = rng.standard_normal((num_samples, int(latent_dim))).astype("float32")
    images = vae.decoder.predict(codes, batch_size=DECODE_BATCH_SIZE, verbose=0)
    return {
        "images": np.asarray(images, dtype="float32"),
        "num_samples": num_samples,
        "profile": course_lib.active_profile(),
    }


PROBES = {
    "kl": probe_kl,
    "sampling_statistics": probe_sampling_statistics,
    "sampling_fresh_noise": probe_sampling_fresh_noise,
    "sampling_gradients": probe_sampling_gradients,
    "model_shapes": probe_model_shapes,
    "train_step": probe_train_step,
    "origin": probe_origin,
    "samples": probe_samples,
}
