"""Probes of lab2 (fine-tuning ResNet18 on augmented MNIST). Run in the grader's probe process.

They call the student's `build_augmentation` and the trained `model` on MNIST test
digits chosen with the grader's generator, read the freezing `schedule` the notebook
recorded while it trained, and decide nothing: autograder/checks/test_lab2.py does.
"""

from autograder.probes.runtime import ProbeError, referenced_names, require, to_numpy  # noqa: F401  (prepended in kernels)

TEST_IMAGES = 1000
SAMPLE_IMAGES = 16
PREDICT_BATCH = 250
BACKBONE_NAME = "backbone"
SCHEDULE_PHASES = ("frozen", "finetune")
EXPORT_MODELS = ("model",)
DEFINITION_ITEMS = ("augmentation",)
# course_lib.augment builds the reference augmentation: the probe process, which runs
# build_augmentation, does not see it (saved models need only course_lib.image_layers).
PROBE_WITHHELD_MODULES = ("course_lib.augment",)


def _is_container(layer):
    return isinstance(getattr(layer, "layers", None), list) and len(layer.layers) > 0


def _leaf_layers(layer, skip=()):
    """The non-container layers inside `layer` (itself if it is one), depth first."""
    if not _is_container(layer):
        return [layer]
    found = []
    for child in layer.layers:
        if getattr(child, "name", None) in skip:
            continue
        found.extend(_leaf_layers(child, skip))
    return found


def _class_names(layer, skip=()):
    import keras

    return [
        type(leaf).__name__
        for leaf in _leaf_layers(layer, skip)
        if not isinstance(leaf, keras.layers.InputLayer)
    ]


# The size arguments of Keras' random image layers, per class (a fraction of a turn, of the
# height/width, of the size); the checks bound them.
AUGMENTATION_FACTORS = {
    "RandomRotation": ("factor",),
    "RandomTranslation": ("height_factor", "width_factor"),
    "RandomZoom": ("height_factor", "width_factor"),
}


def _magnitude(value):
    """The largest |number| in a factor (a number or a (lower, upper) pair); None if not numeric."""
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        return max(abs(float(item)) for item in values)
    except (TypeError, ValueError):
        return None


def _factors(layer, skip=()):
    """[{layer, argument, value, magnitude}] of the random rotation/translation/zoom layers in `layer`."""
    found = []
    for leaf in _leaf_layers(layer, skip):
        kinds = [cls.__name__ for cls in type(leaf).__mro__ if cls.__name__ in AUGMENTATION_FACTORS]
        if not kinds:
            continue
        try:
            config = leaf.get_config()
        except Exception:  # a student's subclass may not serialize; its class is still reported
            continue
        for argument in AUGMENTATION_FACTORS[kinds[0]]:
            value = config.get(argument)
            if value is None:
                continue
            found.append({"layer": kinds[0], "argument": argument, "value": repr(value)[:60],
                          "magnitude": _magnitude(value)})
    return found


def _test_digits(rng, count):
    from course_lib.data import load_mnist

    images, _ = load_mnist("test")
    indices = sorted(rng.choice(len(images), size=count, replace=False).tolist())
    return indices, images[indices]


def probe_augmentation(namespace, rng):
    """What `build_augmentation()` holds and does, in inference and in training mode."""
    import numpy as np

    build = require(namespace, "build_augmentation", "callable")
    augmentation = build()
    _, images = _test_digits(rng, SAMPLE_IMAGES)
    inference = to_numpy(augmentation(images, training=False))
    training = to_numpy(augmentation(images, training=True))
    facts = {
        "classes": _class_names(augmentation),
        "factors": _factors(augmentation),
        "references": referenced_names(build),
        "inference_shape": list(inference.shape),
        "training_shape": list(training.shape),
    }
    if inference.shape == images.shape:
        facts["inference_change"] = float(np.max(np.abs(inference - images)))
    if training.shape == images.shape:
        facts["training_change"] = float(np.mean(np.abs(training - images)))
    return facts


def _backbone(model):
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError as error:
        raise ProbeError(
            f"`model` has no layer named '{BACKBONE_NAME}': build it with "
            f"course_lib.resnet.build_mnist_resnet18."
        ) from error


def _backbone_batch_norm(model):
    import keras

    return [
        layer
        for layer in _leaf_layers(_backbone(model))
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def probe_model(namespace, rng):
    """The final model: its layers, trainable parts, optimizer, and inference outputs."""
    import keras
    import numpy as np

    model = require(namespace, "model")
    if not isinstance(model, keras.Model):
        raise ProbeError(f"`model` should be a keras.Model. Received: {type(model).__name__}")
    backbone = _backbone(model)
    norms = _backbone_batch_norm(model)
    convs = [layer for layer in _leaf_layers(backbone) if isinstance(layer, keras.layers.Conv2D)]
    _, images = _test_digits(rng, SAMPLE_IMAGES)
    first = to_numpy(model.predict(images, verbose=0))
    second = to_numpy(model.predict(images, verbose=0))
    optimizer = getattr(model, "optimizer", None)
    learning_rate = None
    if optimizer is not None:
        learning_rate = float(to_numpy(optimizer.learning_rate))
    return {
        "head_classes": _class_names(model, skip=(BACKBONE_NAME,)),
        "augmentation_factors": _factors(model, skip=(BACKBONE_NAME,)),
        "backbone_trainable": bool(backbone.trainable),
        "trainable_conv_layers": sum(bool(layer.trainable) for layer in convs),
        "conv_layers": len(convs),
        "trainable_batch_norm_layers": sum(bool(layer.trainable) for layer in norms),
        "batch_norm_layers": len(norms),
        "learning_rate": learning_rate,
        "outputs": first,
        "repeat_gap": float(np.max(np.abs(first - second))) if first.shape == second.shape else None,
    }


def probe_batch_norm(namespace, rng):
    """Calls the final model in training mode; records whether its BN statistics moved."""
    import numpy as np

    model = require(namespace, "model")
    norms = _backbone_batch_norm(model)
    saved = [layer.get_weights() for layer in norms]
    _, images = _test_digits(rng, SAMPLE_IMAGES)
    try:
        model(images, training=True)
        changes = [
            max((float(np.max(np.abs(a - b))) for a, b in zip(before, layer.get_weights())), default=0.0)
            for before, layer in zip(saved, norms)
        ]
    finally:
        for weights, layer in zip(saved, norms):
            layer.set_weights(weights)
    return {"batch_norm_layers": len(norms), "changes": changes}


def _plain(value):
    """A JSON-safe copy of a record (numbers, strings, lists, dicts)."""
    import json

    return json.loads(json.dumps(value, default=float))


def probe_schedule(namespace, rng):
    """The freezing schedule the notebook recorded, the learning rates and the histories."""
    schedule = require(namespace, "schedule")
    if not isinstance(schedule, dict):
        raise ProbeError(f"`schedule` should be a dict. Received: {type(schedule).__name__}")
    facts = {"phases": {name: _plain(schedule[name]) for name in SCHEDULE_PHASES if name in schedule}}
    # Under `nbgrader autograde` the phase-1 check runs before phase 2 exists: what is not
    # defined yet is recorded as None, and the checks that need it say so.
    for name in ("FROZEN_LEARNING_RATE", "FINETUNE_LEARNING_RATE"):
        value = namespace.get(name)
        facts[name] = None if value is None else float(value)
    for name in ("history_frozen", "history_finetune"):
        history = getattr(namespace.get(name), "history", None)
        facts[f"{name}_epochs"] = len(history.get("loss", [])) if isinstance(history, dict) else None
    return facts


def probe_accuracy(namespace, rng):
    """Predicted classes of `model` on MNIST test digits the grader draws."""
    import numpy as np

    model = require(namespace, "model")
    indices, images = _test_digits(rng, TEST_IMAGES)
    outputs = to_numpy(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))
    return {
        "indices": np.asarray(indices, dtype="int64"),
        "output_shape": list(outputs.shape),
        "predictions": np.argmax(outputs.reshape(len(images), -1), axis=-1).astype("int64"),
        "weights": str(namespace.get("PRETRAINED_WEIGHTS")),
        "pretrained": _pretrained(namespace),
    }


def _pretrained(namespace):
    import os

    path = namespace.get("PRETRAINED_WEIGHTS")
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(path)


PROBES = {
    "augmentation": probe_augmentation,
    "model": probe_model,
    "batch_norm": probe_batch_norm,
    "schedule": probe_schedule,
    "accuracy": probe_accuracy,
}
