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
# The one-step gradient probe: one batch, plain SGD (the update is -rate * gradient).
TRAIN_STEP_GRADIENT_IMAGES = 128
TRAIN_STEP_SGD_RATE = 1e-2

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
ITEM_PRIVATE = {"train_step": ("_reference_kl", "_train_step_models", "_reference_step_gradients",
                               "_with_reference_kl", "_one_step")}


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


# The layers a Sampling item tests: a fresh `Sampling()` and at most this many more, as the
# notebook built them (in its trained encoder, or as top-level values).
MAX_NOTEBOOK_LAYERS = 3
SAMPLING_PLUMBING_ARGUMENTS = ("name", "trainable", "dtype")


def _constructor_text(config):
    """`Sampling(seed=42)`: the class with the constructor arguments of a layer config."""
    arguments = {key: value for key, value in (config or {}).items() if key not in SAMPLING_PLUMBING_ARGUMENTS}
    return "Sampling(" + ", ".join(f"{key}={value!r}" for key, value in sorted(arguments.items())) + ")"


def _saved_sampling_layers(namespace, sampling_class):
    """[(label, layer, error)] rebuilt from what the notebook saved, with its own class."""
    import json

    import keras

    found, seen = [], set()
    for where, serialized in namespace.layer_configs("Sampling"):
        key = json.dumps(serialized.get("config"), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        label = f"{_constructor_text(serialized.get('config'))}, as the notebook built {where}"
        custom = {"Sampling": sampling_class}
        if isinstance(serialized.get("registered_name"), str):
            custom[serialized["registered_name"]] = sampling_class
        try:
            layer = keras.saving.deserialize_keras_object(serialized, custom_objects=custom, safe_mode=True)
            found.append((label, layer, None))
        except Exception as error:
            found.append((label, None, f"{type(error).__name__}: {error}"[:300]))
    return found


def _built_sampling_layers(namespace, sampling_class):
    """[(label, layer, None)] of the notebook's own Sampling instances (in-process runs)."""
    if not isinstance(sampling_class, type):
        return []
    candidates = [(f"the notebook's `{name}`", value) for name, value in namespace.items()
                  if not str(name).startswith("_") and isinstance(value, sampling_class)]
    encoder = getattr(namespace.get("vae"), "encoder", None)
    candidates += [(f"vae.encoder's layer {layer.name!r}", layer) for layer in getattr(encoder, "layers", [])
                   if isinstance(layer, sampling_class)]
    found, seen = [], set()
    for where, layer in candidates:
        if id(layer) not in seen:
            seen.add(id(layer))
            config = layer.get_config() if hasattr(layer, "get_config") else {}
            found.append((f"{_constructor_text(config)}, as the notebook built {where}", layer, None))
    return found


def _sampling_layers(namespace):
    """[(label, layer or None, error)]: a fresh `Sampling()`, then the notebook's own layers.

    The notebook's layers are rebuilt from their saved configs (constructor arguments
    included) with the notebook's class, so that behaviour that depends on how a layer
    was constructed (an int seed, a scale argument) is tested as the notebook used it.
    """
    sampling_class = require(namespace, "Sampling", "callable")
    try:
        fresh = sampling_class()
    except Exception as error:
        raise ProbeError(
            f"Sampling() (no arguments) could not be built: {type(error).__name__}: {error}. Keep "
            "`__init__(self, seed=None, **kwargs)`."
        ) from None
    if hasattr(namespace, "layer_configs"):
        notebook_layers = _saved_sampling_layers(namespace, sampling_class)
    else:
        notebook_layers = _built_sampling_layers(namespace, sampling_class)
    return [("Sampling(), a fresh layer", fresh, None)] + notebook_layers[:MAX_NOTEBOOK_LAYERS]


def _for_each_layer(namespace, record):
    """Calls `record(index, layer)` -> {key: value} for each Sampling layer; collects the results."""
    result, labels, errors = {}, [], {}
    for index, (label, layer, error) in enumerate(_sampling_layers(namespace)):
        labels.append(label)
        if error is not None:
            errors[str(index)] = error
            continue
        try:
            result.update({f"{key}_{index}": value for key, value in record(layer).items()})
        except Exception as failure:
            if index == 0:
                raise
            errors[str(index)] = f"{type(failure).__name__}: {failure}"[:300]
    result.update({"layers": labels, "layer_errors": errors})
    return result


def probe_sampling_statistics(namespace, rng):
    """Draws many z for fixed (z_mean, z_log_var) rows, outside and inside training, per layer."""
    import numpy as np

    mean_row = rng.uniform(-SAMPLING_MEAN_RANGE, SAMPLING_MEAN_RANGE, SAMPLING_LATENT_DIM)
    low, high = SAMPLING_LOG_VAR_RANGE
    log_var_row = rng.uniform(low, high, SAMPLING_LATENT_DIM) * rng.choice([-1.0, 1.0], SAMPLING_LATENT_DIM)
    z_mean = np.tile(mean_row, (SAMPLING_DRAWS, 1)).astype("float32")
    z_log_var = np.tile(log_var_row, (SAMPLING_DRAWS, 1)).astype("float32")

    def record(layer):
        return {
            "z": np.asarray(to_numpy(layer([z_mean, z_log_var])), dtype="float32"),
            "z_training": np.asarray(to_numpy(layer([z_mean, z_log_var], training=True)), dtype="float32"),
        }

    result = _for_each_layer(namespace, record)
    result.update({"mean_row": mean_row.astype("float32"), "log_var_row": log_var_row.astype("float32")})
    return result


def probe_sampling_fresh_noise(namespace, rng):
    """Calls each Sampling layer twice on the same inputs."""
    import numpy as np

    z_mean = rng.normal(size=(FRESH_NOISE_BATCH, SAMPLING_LATENT_DIM)).astype("float32")
    z_log_var = np.zeros_like(z_mean)

    def record(layer):
        return {
            "first_call": np.asarray(to_numpy(layer([z_mean, z_log_var])), dtype="float32"),
            "second_call": np.asarray(to_numpy(layer([z_mean, z_log_var])), dtype="float32"),
        }

    result = _for_each_layer(namespace, record)
    result["z_mean"] = z_mean
    return result


def probe_sampling_gradients(namespace, rng):
    """Back-propagates sum(z) to z_mean and z_log_var with torch autograd, per layer.

    Since z[i, j] depends only on z_mean[i, j] and z_log_var[i, j], the gradients of
    sum(z) are the element-wise derivatives dz/dz_mean and dz/dz_log_var.
    """
    require(namespace, "Sampling", "callable")  # first: a notebook without one needs no Keras import here
    import keras
    import numpy as np
    import torch

    mean_values = rng.normal(size=(GRADIENT_BATCH, GRADIENT_LATENT_DIM)).astype("float32")
    log_var_values = rng.uniform(-2.0, 2.0, size=(GRADIENT_BATCH, GRADIENT_LATENT_DIM)).astype("float32")

    def record(layer):
        z_mean = keras.ops.convert_to_tensor(mean_values).detach().requires_grad_(True)
        z_log_var = keras.ops.convert_to_tensor(log_var_values).detach().requires_grad_(True)
        z = layer([z_mean, z_log_var])
        found = {
            "z": np.asarray(to_numpy(z), dtype="float32"),
            "is_torch_tensor": isinstance(z, torch.Tensor),
            "requires_grad": bool(getattr(z, "requires_grad", False)),
        }
        if found["is_torch_tensor"] and found["requires_grad"]:
            gradients = torch.autograd.grad(z.sum(), [z_mean, z_log_var], allow_unused=True)
            for name, gradient in zip(("grad_z_mean", "grad_z_log_var"), gradients):
                found[f"{name}_missing"] = gradient is None
                if gradient is not None:
                    found[name] = np.asarray(to_numpy(gradient), dtype="float32")
        return found

    result = _for_each_layer(namespace, record)
    result.update({"z_mean": mean_values, "z_log_var": log_var_values})
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


def _train_step_models(latent_dim, seed, noise=None):
    """A small dense encoder (with a correct sampling layer) and decoder, fresh weights.

    Every initializer and the noise have their own seed, so nothing global is reseeded.
    With `noise` (an array `(batch, latent_dim)`), the sampling layer uses that epsilon in
    every call, so a training step is a deterministic function of the weights.
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
            if noise is None or ops.shape(z_mean)[0] != len(noise):  # Keras' symbolic build: any noise
                epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            else:
                epsilon = ops.convert_to_tensor(noise)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

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


def _reference_step_gradients(encoder, decoder, images, weights, names=None):
    """Gradients of each term of the negative ELBO (and of a known mistake) w.r.t. `weights`.

    Returns:
        ({term: flat float32 gradient}, {term: value}) for "reconstruction" (summed
        binary cross-entropy, averaged over the batch), "kl" (mean KL), and two known
        mistakes: "reconstruction_from_z_mean" (the same loss, decoding z_mean instead of z)
        and "reconstruction_squared_error" (summed squared error instead of cross-entropy);
        only the terms in `names`, if given.
    """
    import keras
    import numpy as np
    import torch
    from keras import ops

    def summed_cross_entropy(reconstructions):
        return ops.mean(ops.sum(keras.losses.binary_crossentropy(images, reconstructions), axis=(1, 2)))

    z_mean, z_log_var, z = encoder(images, training=True)
    terms = {
        "reconstruction": summed_cross_entropy(decoder(z, training=True)),
        "kl": ops.mean(_reference_kl(z_mean, z_log_var)),
        "reconstruction_from_z_mean": summed_cross_entropy(decoder(z_mean, training=True)),
        # A known mistake: the squared error (a Gaussian decoder's) in place of the cross-entropy.
        "reconstruction_squared_error": ops.mean(ops.sum(
            ops.square(ops.convert_to_tensor(images) - decoder(z, training=True)), axis=(1, 2, 3))),
    }
    if names is not None:
        terms = {name: terms[name] for name in names}
    parameters = [weight.value for weight in weights]
    gradients = {}
    for name, term in terms.items():
        found = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        gradients[name] = np.concatenate([
            np.zeros(int(np.prod(parameter.shape)), "float32") if gradient is None
            else np.asarray(to_numpy(gradient), dtype="float32").ravel()
            for parameter, gradient in zip(parameters, found)
        ])
    return gradients, {name: float(to_numpy(term)) for name, term in terms.items()}


def _with_reference_kl(namespace, action):
    """Runs `action()` while the notebook's `kl_divergence` is a correct one (then puts it back)."""
    had_kl = "kl_divergence" in namespace
    student_kl = namespace.get("kl_divergence")
    namespace["kl_divergence"] = _reference_kl
    try:
        return action()
    finally:
        if had_kl:
            namespace["kl_divergence"] = student_kl
        else:
            del namespace["kl_divergence"]


def _logged(history):
    logged = {}
    for name, values in history.history.items():
        try:
            logged[str(name)] = [float(value) for value in values]
        except (TypeError, ValueError):
            logged[str(name)] = None
    return logged


def _one_step(namespace, vae_class, images, rng):
    """Two `fit` steps of plain SGD on one batch with fixed noise: each update is -rate * gradient.

    Returns the first step's update and the gradients of each term where it started, and the
    same for the second step (`second_*`): a train_step that never calls zero_grad() adds the
    first step's gradient to the second's.
    """
    import keras
    import numpy as np

    noise = rng.standard_normal((len(images), TRAIN_STEP_LATENT_DIM)).astype("float32")
    encoder, decoder = _train_step_models(TRAIN_STEP_LATENT_DIM, int(rng.integers(2**20)), noise)
    weights = list(encoder.trainable_weights) + list(decoder.trainable_weights)
    gradients, values = _reference_step_gradients(encoder, decoder, images, weights)
    model = vae_class(encoder, decoder)
    model.compile(optimizer=keras.optimizers.SGD(TRAIN_STEP_SGD_RATE))
    before = [np.array(to_numpy(weight), dtype="float64") for weight in weights]
    after_each_step = []

    class _AfterEachStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            after_each_step.append([np.array(to_numpy(weight), dtype="float64") for weight in weights])

    # Two steps on the same batch: the second shows whether gradients are cleared between steps.
    try:
        history = _with_reference_kl(namespace, lambda: model.fit(
            images, epochs=2, batch_size=len(images), shuffle=False, verbose=0, callbacks=[_AfterEachStep()]
        ))
    except ValueError as error:
        if "no gradients" not in str(error).lower():
            raise
        raise ProbeError(
            f"One training step got no gradients ({error}): call self.zero_grad() first, then compute the "
            "loss, call loss.backward(), and only then read weight.value.grad for self.optimizer.apply "
            "(a zero_grad() after loss.backward() erases the gradients; call it before loss.backward())."
        ) from None
    first, second = after_each_step[:2]

    def update(start, end):
        return (np.concatenate([(old - new).ravel() for old, new in zip(start, end)]) / TRAIN_STEP_SGD_RATE
                ).astype("float32")

    for weight, value in zip(weights, first):  # the gradients where the second step started
        weight.assign(value.astype("float32"))
    second_gradients, _ = _reference_step_gradients(encoder, decoder, images, weights, names=("reconstruction", "kl"))
    result = {f"grad_{name}": gradient for name, gradient in gradients.items()}
    result.update({f"second_grad_{name}": gradient for name, gradient in second_gradients.items()})
    result.update({f"reference_{name}": value for name, value in values.items()})
    result.update({"step_gradient": update(before, first), "second_step_gradient": update(first, second),
                   "step_history": _logged(history), "step_batch_size": len(images),
                   "step_latent_dim": TRAIN_STEP_LATENT_DIM,
                   # The flat vectors hold the encoder's weights first, then the decoder's.
                   "step_encoder_size": int(sum(np.prod(weight.shape) for weight in encoder.trainable_weights))})
    return result


def probe_train_step(namespace, rng):
    """Grades `VAE.train_step` alone, on the probe's own small dense encoder and decoder.

    1. One step of plain SGD on one batch, with fixed noise: the weights' change divided by
       the rate is the gradient train_step used, compared (by the check) with the gradients
       of the reconstruction and KL terms, which the probe computes itself.
    2. A few epochs of Adam: the logged metrics and whether the loss goes down.

    The encoder and decoder are the probe's own (with a correct sampling layer), and while
    it trains the notebook's `kl_divergence` is replaced by a correct one (and put back
    afterwards): a mistake in `kl_divergence` costs the KL checks' points, not this check's.
    """
    vae_class = require(namespace, "VAE", "callable")  # first: see probe_sampling_gradients
    import keras
    import numpy as np

    from course_lib.data import load_mnist

    images, _ = load_mnist("train", limit=TRAIN_STEP_IMAGES)
    images = images[rng.permutation(len(images))]
    result = _one_step(namespace, vae_class, images[:TRAIN_STEP_GRADIENT_IMAGES], rng)
    encoder, decoder = _train_step_models(TRAIN_STEP_LATENT_DIM, int(rng.integers(2**20)))
    model = vae_class(encoder, decoder)
    model.compile(optimizer=keras.optimizers.Adam(TRAIN_STEP_LEARNING_RATE))
    before = [np.array(to_numpy(weight)) for weight in decoder.weights]
    history = _with_reference_kl(namespace, lambda: model.fit(
        images, epochs=TRAIN_STEP_EPOCHS, batch_size=TRAIN_STEP_BATCH_SIZE, shuffle=False, verbose=0
    ))
    after = [np.array(to_numpy(weight)) for weight in decoder.weights]
    changed = float(sum(np.abs(a - b).sum() for a, b in zip(after, before)))
    result.update({
        "history": _logged(history),
        "metric_names": sorted(str(name) for name in history.history),
        "decoder_weight_change": changed,
        "epochs": TRAIN_STEP_EPOCHS,
    })
    return result


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
