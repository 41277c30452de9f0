"""Probes of lab1 (batch normalization on CIFAR-10). Run in the grader's probe process.

The probes call the student's `build_cnn_with_batch_norm` on grader-chosen inputs and
record what the trained `model_bn` / `model_plain` predict on the 1,000 exact CIFAR-10
test images. They decide nothing: the checks (autograder/checks/test_lab1.py) do.
"""

from autograder.probes.runtime import ProbeError, referenced_names, require, to_numpy  # noqa: F401  (prepended in kernels)

TEST_IMAGES = 1000
OUTPUT_BATCH = 16
BEHAVIOUR_BATCH = 32
SUBSET = 4
PREDICT_BATCH = 250
CIFAR_SHAPE = (32, 32, 3)
ACTIVATION_CLASSES = ("ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax")
LINEAR_ACTIVATIONS = (None, "linear")
EXPORT_MODELS = ("model_bn", "model_plain")
DEFINITION_ITEMS = ("structure", "behaviour", "output")
# course_lib.cnn builds the reference CNN (with batch_norm=True): the notebook uses it for the
# plain model, the probe process (which runs build_cnn_with_batch_norm) does not see it.
PROBE_WITHHELD_MODULES = ("course_lib.cnn",)
# Keras normalization layers that are not batch normalization (students swap them in).
OTHER_NORMALIZATIONS = ("LayerNormalization", "GroupNormalization", "UnitNormalization")


def _layer_kind(layer):
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_norm"
    if isinstance(layer, tuple(getattr(keras.layers, name) for name in OTHER_NORMALIZATIONS)):
        return "other_normalization"
    if type(layer).__name__.endswith("Conv2D") or isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if type(layer).__name__ in ACTIVATION_CLASSES:
        return "activation"
    return "other"


def _activation_name(layer):
    """The activation a layer applies itself ("relu", "linear", ...), or None."""
    name = type(layer).__name__
    if name in ("ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"):
        return name.lower()
    try:
        activation = layer.get_config().get("activation")
    except Exception:  # a custom layer whose get_config fails: no activation known
        return None
    if isinstance(activation, dict):
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    return activation if isinstance(activation, str) or activation is None else str(activation)


def _axes(layer):
    """Which axis a BatchNormalization normalizes, or a Conv2D holds its channels in ({} if unknown).

    Both as a non-negative index into the layer's 4-D input (batch, ., ., .).
    """
    kind = _layer_kind(layer)
    if kind == "conv":
        data_format = getattr(layer, "data_format", None)
        return {"channel_axis": 1 if data_format == "channels_first" else 3} if data_format else {}
    if kind != "batch_norm":
        return {}
    try:
        rank = len(layer.input.shape)
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return {"axis": sorted(int(axis) % rank for axis in axes), "input_rank": rank}
    except Exception:  # never called symbolically: the axis cannot be placed
        return {}


def _is_container(layer):
    return hasattr(layer, "layers") and isinstance(getattr(layer, "layers"), list) and len(layer.layers) > 0


def _producers(layer, produced, input_parents):
    """Names of the leaf layers whose outputs `layer` consumes, or None if unknown."""
    import keras

    try:
        tensors = keras.tree.flatten(layer.input)
    except Exception:  # never called symbolically (subclassed model) or shared layer
        return None
    parents = []
    for tensor in tensors:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        operation = history.operation
        if isinstance(operation, keras.layers.InputLayer):
            parents.extend(input_parents)
        else:
            parents.extend(produced.get(operation.name, [operation.name]))
    return parents


def _walk(model, input_parents, records):
    """Appends one record per leaf layer (nested models flattened); returns the output leaves."""
    import keras

    produced = {}
    previous = list(input_parents)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        parents = _producers(layer, produced, input_parents)
        if parents is None:
            parents = previous  # no graph: assume the layers run in their listed order
        if _is_container(layer):
            produced[layer.name] = _walk(layer, parents, records)
        else:
            records.append(
                {
                    "name": layer.name,
                    "class": type(layer).__name__,
                    "kind": _layer_kind(layer),
                    "activation": _activation_name(layer),
                    "parents": list(parents),
                    **_axes(layer),
                }
            )
            produced[layer.name] = [layer.name]
        previous = produced[layer.name]
    return previous


def _build_student_model(namespace):
    import keras

    build = require(namespace, "build_cnn_with_batch_norm", "callable")
    model = build()
    if not isinstance(model, keras.Model):
        raise ProbeError(
            f"build_cnn_with_batch_norm() should return a keras.Model. Received: {type(model).__name__}"
        )
    return build, model


def probe_structure(namespace, rng):
    """The layer graph of a fresh `build_cnn_with_batch_norm()` model."""
    build, model = _build_student_model(namespace)
    records = []
    _walk(model, ["<input>"], records)
    return {"layers": records, "references": referenced_names(build)}


def _batch_norm_layers(model):
    import keras

    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif _is_container(layer):
            found.extend(_batch_norm_layers(layer))
    return found


def _moving_statistics(layers):
    import numpy as np

    return [
        np.concatenate([to_numpy(layer.moving_mean).ravel(), to_numpy(layer.moving_variance).ravel()])
        for layer in layers
    ]


def probe_behaviour(namespace, rng):
    """Training vs inference behaviour of the batch normalization of a fresh model."""
    import numpy as np

    _, model = _build_student_model(namespace)
    layers = _batch_norm_layers(model)
    images = rng.uniform(0.0, 1.0, size=(BEHAVIOUR_BATCH, *CIFAR_SHAPE)).astype("float32")
    facts = {"batch_norm_layers": len(layers)}
    if not layers:
        return facts
    # Inference: the same image must get the same output whatever else is in the batch.
    before = _moving_statistics(layers)
    full = to_numpy(model(images, training=False))
    again = to_numpy(model(images, training=False))
    alone = to_numpy(model(images[:SUBSET], training=False))
    after_inference = _moving_statistics(layers)
    facts["inference_repeat_gap"] = float(np.max(np.abs(full - again)))
    facts["inference_batch_gap"] = float(np.max(np.abs(full[:SUBSET] - alone)))
    facts["inference_moving_change"] = float(
        max(np.max(np.abs(b - a)) for b, a in zip(before, after_inference))
    )
    # Training: batch statistics are used and the moving averages move towards them.
    model(images, training=True)
    after_training = _moving_statistics(layers)
    changes = [float(np.max(np.abs(b - a))) for b, a in zip(after_inference, after_training)]
    facts["training_moving_changes"] = changes
    facts["momentum"] = [float(getattr(layer, "momentum", float("nan"))) for layer in layers]
    return facts


def probe_output(namespace, rng):
    """Outputs of a fresh model on random images of CIFAR-10's shape."""
    _, model = _build_student_model(namespace)
    images = rng.uniform(0.0, 1.0, size=(OUTPUT_BATCH, *CIFAR_SHAPE)).astype("float32")
    return {"outputs": to_numpy(model.predict(images, verbose=0))}


def _model_facts(model):
    import keras

    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    norms = _batch_norm_layers(model)
    return {
        "is_model": isinstance(model, keras.Model),
        "batch_norm_layers": len(norms),
        "momentum": [float(getattr(layer, "momentum", float("nan"))) for layer in norms],
        "training_steps": int(to_numpy(iterations)) if iterations is not None else 0,
    }


def probe_accuracy(namespace, rng):
    """Predicted classes of model_bn and model_plain on the exact CIFAR-10 test images."""
    import numpy as np
    from course_lib.data import load_cifar10

    model_bn = require(namespace, "model_bn")
    model_plain = require(namespace, "model_plain")
    images, _ = load_cifar10("test", limit=TEST_IMAGES, exact_only=True)
    momentum = namespace.get("BATCH_NORM_MOMENTUM")
    result = {
        "same_object": model_bn is model_plain,
        "notebook_momentum": float(momentum) if isinstance(momentum, (int, float)) else None,
    }
    for key, model in (("bn", model_bn), ("plain", model_plain)):
        facts = _model_facts(model)
        result[f"{key}_facts"] = facts
        if not facts["is_model"]:
            raise ProbeError(f"`model_{key}` should be a trained keras.Model. Received: {type(model).__name__}")
        outputs = to_numpy(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))
        result[f"{key}_output_shape"] = list(outputs.shape)
        result[f"{key}_predictions"] = np.argmax(outputs.reshape(len(images), -1), axis=-1).astype("int64")
    return result


PROBES = {
    "structure": probe_structure,
    "behaviour": probe_behaviour,
    "output": probe_output,
    "accuracy": probe_accuracy,
}
