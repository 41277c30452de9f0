"""Hidden checks of lab2 (fine-tuning ResNet18 on augmented MNIST)."""

import math

import numpy as np

from autograder.checking import CheckFailure, check, require_finite, require_shape

NUM_CLASSES = 10
SUM_TOLERANCE = 1e-3
RATE_TOLERANCE = 1e-6
IDENTITY_TOLERANCE = 1e-6
MIN_TRAINING_CHANGE = 1e-3
REQUIRED_AUGMENTATIONS = {
    "rotation": "keras.layers.RandomRotation",
    "translation": "keras.layers.RandomTranslation",
    "zoom": "keras.layers.RandomZoom",
}
# Largest factor that still leaves a digit the same digit, per layer (the notebook asks for about
# 0.05 of a turn and 0.1 of the size). Beyond an eighth of a turn a 6 starts to read as a 9 (a
# half turn makes it one); beyond a quarter of the side a shift pushes strokes out of the
# 28x28 frame (MNIST digits fill its central 20x20) and a zoom crops or shrinks them to a blot.
MAX_FACTOR = {"RandomRotation": 0.125, "RandomTranslation": 0.25, "RandomZoom": 0.3}
FACTOR_UNIT = {
    "RandomRotation": ("of a full turn", "Keras' factor is a fraction of a turn (2 pi), not an angle in degrees"),
    "RandomTranslation": ("of the image side", "the factor is a fraction of the height/width, not pixels"),
    "RandomZoom": ("of the size", "the factor is a fraction of the size (0.1: up to 10% in or out)"),
}
REFERENCE_AUGMENTATION = ("build_mnist_augmentation", "course_lib.augment.build_mnist_augmentation")
REFERENCE_FREEZE = "course_lib.resnet.freeze_backbone"
REFERENCE_UNFREEZE = "course_lib.resnet.unfreeze_backbone"
RECORD_KEYS = (
    "learning_rate",
    "trainable_backbone_weights",
    "trainable_batch_norm_weights",
    "trainable_head_weights",
    "epochs",
    "backbone_kernel_change",
    "batch_norm_change",
)
RECORDER_HINT = "train that phase with the given fit_phase(\"{phase}\", ...), which records it"
START_KEYS = ("learning_rate", "trainable_backbone_weights", "trainable_batch_norm_weights", "trainable_head_weights")


def _missing_augmentations(classes):
    names = " ".join(classes).lower()
    return [kind for kind in REQUIRED_AUGMENTATIONS if kind not in names]


def _imports(probe):
    return set(probe.context.get("imports", []))


@check(points=2, probes=("augmentation", "model"))
def test_augmentation_layers(probe):
    """build_augmentation() rotates, translates and zooms, and the model uses it."""
    facts = probe.facts("augmentation")
    if set(facts["references"]) & set(REFERENCE_AUGMENTATION) or REFERENCE_AUGMENTATION[1] in _imports(probe):
        raise CheckFailure(
            "build_augmentation() uses course_lib.augment.build_mnist_augmentation: write the "
            "augmentation pipeline with your own keras.layers.Random* layers."
        )
    missing = _missing_augmentations(facts["classes"])
    if missing:
        wanted = ", ".join(f"{kind} ({REQUIRED_AUGMENTATIONS[kind]})" for kind in missing)
        found = ", ".join(facts["classes"]) or "no layers"
        raise CheckFailure(f"build_augmentation() has no {wanted} layer. Found: {found}.")
    missing_in_model = _missing_augmentations(probe.facts("model")["head_classes"])
    if missing_in_model:
        raise CheckFailure(
            f"`model` has no {', '.join(missing_in_model)} augmentation layer: pass "
            "augmentation=build_augmentation() to build_mnist_resnet18."
        )
    _check_factors(facts.get("factors", []), "build_augmentation()")
    _check_factors(probe.facts("model").get("augmentation_factors", []), "the augmentation inside `model`")


def _check_factors(factors, where):
    """Fails on a random rotation/translation/zoom larger than a digit survives."""
    for factor in factors:
        limit = MAX_FACTOR.get(factor.get("layer"))
        magnitude = factor.get("magnitude")
        if limit is None or not isinstance(magnitude, (int, float)) or magnitude <= limit:
            continue
        unit, why = FACTOR_UNIT[factor["layer"]]
        degrees = f" ({magnitude * 360:g} degrees)" if factor["layer"] == "RandomRotation" else ""
        raise CheckFailure(
            f"{where} has {factor['layer']}({factor['argument']}={factor['value']}): up to "
            f"{magnitude:g} {unit}{degrees}, more than the {limit:g} a digit survives ({why}). "
            "Use small factors, about 0.05 for the rotation and 0.1 for the shift and the zoom."
        )


@check(points=2, probes=("augmentation", "model"))
def test_augmentation_training_only(probe):
    """The augmentation changes images in training mode and is the identity at inference."""
    facts = probe.facts("augmentation")
    if facts["inference_shape"] != facts["training_shape"] or "inference_change" not in facts:
        raise CheckFailure(
            "build_augmentation() changes the shape of the images "
            f"(inference: {tuple(facts['inference_shape'])}): it should return images of the "
            "input's shape (28, 28, 1)."
        )
    if facts["inference_change"] > IDENTITY_TOLERANCE:
        raise CheckFailure(
            "build_augmentation() changes images in inference mode (training=False; largest "
            f"pixel change {facts['inference_change']:.3g}): augmentation must be active only "
            "in training, so that evaluate() and predict() see the real digits."
        )
    if facts.get("training_change", 0.0) < MIN_TRAINING_CHANGE:
        raise CheckFailure(
            "build_augmentation() leaves the images unchanged in training mode "
            "(training=True): it should transform them randomly."
        )
    repeat_gap = probe.facts("model")["repeat_gap"]
    if repeat_gap is None or repeat_gap > IDENTITY_TOLERANCE:
        raise CheckFailure(
            "model.predict() gives different outputs for the same digits twice: something "
            "random is active at inference."
        )


def _phase(probe, name, finished=True):
    """The record of phase `name`; with finished=False, also one whose training failed."""
    phases = probe.facts("schedule")["phases"]
    if name not in phases or not isinstance(phases[name], dict):
        raise CheckFailure(
            f"`schedule` has no record of the '{name}' phase: "
            + RECORDER_HINT.format(phase=name)
            + "."
        )
    record = phases[name]
    missing = [key for key in START_KEYS if not isinstance(record.get(key), (int, float))]
    if missing:
        raise CheckFailure(
            f"The record of the '{name}' phase has no {', '.join(missing)}: "
            + RECORDER_HINT.format(phase=name)
            + " instead of writing `schedule` yourself."
        )
    ended = all(isinstance(record.get(key), (int, float)) for key in RECORD_KEYS)
    if not finished:
        return dict({"backbone_kernel_change": 0.0, "batch_norm_change": 0.0}, **record)
    if not ended or record["epochs"] < 1:
        raise CheckFailure(
            f"The '{name}' phase started but did not finish training (epochs recorded: "
            f"{record.get('epochs')}; learning rate {record['learning_rate']:g}): fit_phase(\"{name}\", "
            "...) failed. Compile the model again after changing what is trainable: an optimizer "
            "compiled before the change fails with 'Unknown variable'."
        )
    return record


def _same_rate(first, second):
    return math.isclose(first, second, rel_tol=RATE_TOLERANCE, abs_tol=0.0)


def _rate(probe, name):
    value = probe.facts("schedule")[name]
    if value is None:
        raise CheckFailure(f"The notebook defines no `{name}` (a number): keep the names of the introduction.")
    return value


@check(points=2, probes=("schedule",))
def test_frozen_phase(probe):
    """Phase 1 trains only the head: the backbone has no trainable weight and does not change."""
    if REFERENCE_FREEZE in _imports(probe):
        raise CheckFailure("Freeze the backbone with your own code, not course_lib.resnet.freeze_backbone.")
    frozen_rate = _rate(probe, "FROZEN_LEARNING_RATE")
    record = _phase(probe, "frozen")
    if record["trainable_backbone_weights"] > 0:
        raise CheckFailure(
            f"In phase 1 the backbone had {record['trainable_backbone_weights']} trainable "
            "weights: freeze it (backbone.trainable = False) before compiling, so that only "
            "the new head trains."
        )
    if record["backbone_kernel_change"] > 0 or record["batch_norm_change"] > 0:
        raise CheckFailure(
            "The backbone's weights or batch-normalization statistics changed during phase 1: "
            "a frozen backbone must stay exactly as it was (and run in inference mode)."
        )
    if record["trainable_head_weights"] == 0:
        raise CheckFailure("In phase 1 nothing was trainable: the head (classifier) should train.")
    if not _same_rate(record["learning_rate"], frozen_rate):
        raise CheckFailure(
            f"Phase 1 trained with learning rate {record['learning_rate']:g}, not "
            f"FROZEN_LEARNING_RATE = {frozen_rate:g}."
        )


@check(points=2, probes=("schedule", "model"))
def test_finetune_phase(probe):
    """Phase 2 unfreezes the backbone and trains it with a lower learning rate."""
    record = _phase(probe, "finetune")
    trainable = record["trainable_backbone_weights"] - record["trainable_batch_norm_weights"]
    if trainable <= 0 or record["backbone_kernel_change"] <= 0:
        raise CheckFailure(
            "In phase 2 the backbone's convolutions did not train: set backbone.trainable = True "
            "(then refreeze its BatchNormalization layers) and compile again before fine-tuning."
        )
    frozen_rate = _rate(probe, "FROZEN_LEARNING_RATE")
    finetune_rate = _rate(probe, "FINETUNE_LEARNING_RATE")
    if not finetune_rate < frozen_rate:
        raise CheckFailure(
            f"FINETUNE_LEARNING_RATE ({finetune_rate:g}) should be lower than "
            f"FROZEN_LEARNING_RATE ({frozen_rate:g}): large steps would destroy the "
            "backbone's features."
        )
    if not _same_rate(record["learning_rate"], finetune_rate):
        raise CheckFailure(
            f"Phase 2 trained with learning rate {record['learning_rate']:g}, not "
            f"FINETUNE_LEARNING_RATE = {finetune_rate:g}: compile again with the new rate."
        )
    final_rate = probe.facts("model")["learning_rate"]
    if final_rate is None or not _same_rate(final_rate, finetune_rate):
        raise CheckFailure(
            f"model's optimizer has learning rate {final_rate}, not FINETUNE_LEARNING_RATE = "
            f"{finetune_rate:g}: `model` should be the fine-tuned model."
        )


@check(points=2, probes=("schedule", "model", "batch_norm"))
def test_batch_norm_inference_mode(probe):
    """While fine-tuning, the backbone's BatchNormalization layers stay frozen (inference mode)."""
    if REFERENCE_UNFREEZE in _imports(probe):
        raise CheckFailure(
            "Unfreeze the backbone with your own code, not course_lib.resnet.unfreeze_backbone."
        )
    record = _phase(probe, "finetune", finished=False)
    if record["trainable_batch_norm_weights"] > 0 or record["batch_norm_change"] > 0:
        raise CheckFailure(
            "During fine-tuning the backbone's BatchNormalization layers were trainable "
            f"({record['trainable_batch_norm_weights']} trainable BN weights; statistics "
            f"changed by up to {record['batch_norm_change']:.3g}): set trainable = False on "
            "each of them after unfreezing the backbone, so they keep their moving statistics."
        )
    model_facts = probe.facts("model")
    if model_facts["batch_norm_layers"] == 0:
        raise CheckFailure("The model's backbone has no BatchNormalization layer.")
    if model_facts["trainable_batch_norm_layers"] > 0:
        raise CheckFailure(
            f"{model_facts['trainable_batch_norm_layers']} BatchNormalization layers of the "
            "final model's backbone are trainable: they should stay frozen in inference mode."
        )
    moved = [change for change in probe.facts("batch_norm")["changes"] if change > 0]
    if moved:
        raise CheckFailure(
            f"Calling the final model in training mode changed {len(moved)} BatchNormalization "
            "layers of the backbone: they should run in inference mode (moving statistics)."
        )


@check(points=1, probes=("model",))
def test_output(probe):
    """Ten class probabilities per digit."""
    outputs = probe.array("model", "outputs")
    require_shape(outputs, (None, NUM_CLASSES), "model.predict() on 16 digits")
    require_finite(outputs, "model.predict()")
    sums = outputs.sum(axis=-1)
    if np.any(outputs < 0) or np.max(np.abs(sums - 1.0)) > SUM_TOLERANCE:
        raise CheckFailure(
            "model's outputs are not class probabilities (each row should be >= 0 and sum to 1; "
            f"row sums range from {sums.min():.3g} to {sums.max():.3g})."
        )


@check(points=3, probes=("accuracy",))
def test_accuracy(probe):
    """The fine-tuned model beats a calibrated accuracy on MNIST test digits."""
    from course_lib.data import load_mnist

    facts = probe.facts("accuracy")
    shape = facts["output_shape"]
    if len(shape) != 2 or shape[1] != NUM_CLASSES:
        raise CheckFailure(
            f"model should output {NUM_CLASSES} class probabilities per digit. "
            f"Received: output shape {tuple(shape)}"
        )
    indices = probe.array("accuracy", "indices")
    predictions = probe.array("accuracy", "predictions")
    require_shape(predictions, indices.shape, "model's predictions")
    _, labels = load_mnist("test")
    accuracy = float(np.mean(predictions == labels[indices]))
    # Measured with the course's pretrained backbone (the notebook's default); a student who
    # starts from random weights is graded on the same threshold.
    thresholds = probe.thresholds()
    threshold = thresholds["min_accuracy"]
    weights = "pretrained" if facts["pretrained"] else "randomly initialized"
    if not thresholds.holds("min_accuracy", accuracy):
        raise CheckFailure(
            f"model classifies {accuracy:.1%} of {len(indices)} MNIST test digits correctly; at "
            f"least {threshold:.1%} is expected in the '{probe.profile}' profile with a "
            f"{weights} backbone. Was it trained with the notebook's settings?"
        )
