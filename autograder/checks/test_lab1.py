"""Hidden checks of lab1 (batch normalization on CIFAR-10)."""

import numpy as np

from autograder.checking import CheckFailure, check, require_finite, require_shape

NUM_CLASSES = 10
TEST_IMAGES = 1000
REFERENCE_NAMES = ("build_cifar_cnn", "course_lib.cnn.build_cifar_cnn")
SUM_TOLERANCE = 1e-3
INFERENCE_TOLERANCE = 1e-5
MIN_MOVING_CHANGE = 1e-7
LINEAR = (None, "linear")
BATCH_NORM_CLASS = "BatchNormalization"
DEFAULT_NOTEBOOK_MOMENTUM = 0.9  # the notebook's BATCH_NORM_MOMENTUM, if it was not exported
MOMENTUM_TOLERANCE = 1e-6




def _no_batch_norm_message(references, records=()):
    """Why a fresh model has no BN layer: another normalization, none created, or created but unused."""
    others = sorted({record["class"] for record in records if record["kind"] == "other_normalization"})
    if others:
        return (
            f"build_cnn_with_batch_norm() normalizes with {', '.join(others)}, not BatchNormalization: this lab "
            "is about batch normalization (statistics over the batch, moving averages for inference). Use "
            "layers.BatchNormalization(momentum=momentum) after each Conv2D, before its activation."
        )
    if BATCH_NORM_CLASS in references:
        return (
            "build_cnn_with_batch_norm() creates BatchNormalization layers, but the model it "
            "returns contains none: their outputs are never used. Feed each one's output on, "
            "e.g. x = layers.BatchNormalization(momentum=momentum)(x), before the activation."
        )
    return (
        "build_cnn_with_batch_norm() has no BatchNormalization layer: add one after each "
        "Conv2D, before its activation."
    )


def _optional_facts(probe, item):
    """The facts of `item` if that probe item ran and succeeded, else None."""
    status = probe.items.get(item) if probe.available else None
    return status.get("facts", {}) if isinstance(status, dict) and status.get("ok") else None


def _momentum_hint(facts):
    """Names model_bn's BN momentum when it is not the notebook's BATCH_NORM_MOMENTUM, else ""."""
    wanted = facts.get("notebook_momentum")
    wanted = DEFAULT_NOTEBOOK_MOMENTUM if wanted is None else wanted
    received = sorted({round(value, 6) for value in facts["bn_facts"].get("momentum", [])})
    wrong = [value for value in received if abs(value - wanted) > MOMENTUM_TOLERANCE]
    if not wrong:
        return ""
    steps = facts["bn_facts"].get("training_steps", 0)
    budget = f"this run's {steps} training steps" if steps > 0 else "this profile's short training"
    return (
        f" Its BatchNormalization layers have momentum {', '.join(f'{value:g}' for value in received)}, "
        f"not BATCH_NORM_MOMENTUM = {wanted:g}: with momentum {wrong[0]:g} the moving mean and "
        f"variance that inference uses do not converge in {budget}. "
        "Pass momentum=BATCH_NORM_MOMENTUM to every BatchNormalization layer."
    )


def _describe(record):
    return f"'{record['name']}' ({record['class']})"


def _applies_activation(record):
    return record["kind"] == "activation" or (
        record["kind"] == "conv" and record["activation"] not in LINEAR
    )


@check(points=3, probes=("structure",))
def test_batch_norm_placement(probe):
    """A BatchNormalization after every Conv2D, before its activation; the student's own code."""
    facts = probe.facts("structure")
    references = set(facts["references"]) & set(REFERENCE_NAMES)
    if references:
        raise CheckFailure(
            "build_cnn_with_batch_norm() calls course_lib.cnn.build_cifar_cnn: build the "
            "batch-normalized CNN with your own layers (Conv2D, BatchNormalization, ...)."
        )
    records = facts["layers"]
    by_name = {record["name"]: record for record in records}
    convs = [record for record in records if record["kind"] == "conv"]
    norms = [record for record in records if record["kind"] == "batch_norm"]
    if not convs:
        raise CheckFailure("build_cnn_with_batch_norm() builds no Conv2D layer: it should be a CNN.")
    if not norms:
        raise CheckFailure(_no_batch_norm_message(facts["references"], records))
    for norm in norms:
        parents = [by_name[name] for name in norm["parents"] if name in by_name]
        _check_normalized_axis(norm, parents)
        after_activation = [parent for parent in parents if _applies_activation(parent)]
        if after_activation:
            raise CheckFailure(
                f"BatchNormalization {_describe(norm)} comes after the activation of "
                f"{_describe(after_activation[0])}: it should normalize the pre-activations. "
                f"Use Conv2D(..., activation=None) -> BatchNormalization -> activation."
            )
    for conv in convs:
        children = [record for record in records if conv["name"] in record["parents"]]
        if not children or any(child["kind"] != "batch_norm" for child in children):
            fed = ", ".join(_describe(child) for child in children) or "nothing"
            raise CheckFailure(
                f"Conv2D '{conv['name']}' is not followed by a BatchNormalization (it feeds "
                f"{fed}): put one after every Conv2D, before the activation."
            )
    for norm in norms:
        children = [record for record in records if norm["name"] in record["parents"]]
        if not any(child["kind"] == "activation" for child in children):
            fed = ", ".join(_describe(child) for child in children) or "nothing"
            raise CheckFailure(
                f"BatchNormalization {_describe(norm)} should feed the activation (e.g. ReLU) "
                f"of its convolution; it feeds {fed}."
            )


def _check_normalized_axis(norm, parents):
    """A BN right after a Conv2D normalizes that convolution's channels (one mean/variance per filter)."""
    for parent in parents:
        if parent["kind"] != "conv" or "channel_axis" not in parent or "axis" not in norm:
            continue
        if norm["axis"] != [parent["channel_axis"]]:
            channels_last = parent["channel_axis"] == 3
            names = ({0: "the batch", 1: "the height", 2: "the width", 3: "the channels"} if channels_last
                     else {0: "the batch", 1: "the channels", 2: "the height", 3: "the width"})
            normalized = ", ".join(f"{axis} ({names.get(axis, '?')})" for axis in norm["axis"])
            fix = ("keep the default axis=-1 for channels-last convolutions" if channels_last
                   else "use axis=1 for channels-first convolutions")
            raise CheckFailure(
                f"BatchNormalization {_describe(norm)} normalizes axis {normalized}, but the channels of "
                f"{_describe(parent)} are axis {parent['channel_axis']}: batch normalization keeps one mean and "
                f"variance per channel (filter); {fix}."
            )


@check(points=2, probes=("behaviour", "structure"))
def test_batch_norm_behaviour(probe):
    """Batch statistics and moving-average updates in training; moving statistics at inference."""
    facts = probe.facts("behaviour")
    if facts["batch_norm_layers"] == 0:
        structure = _optional_facts(probe, "structure") or {}
        raise CheckFailure(
            _no_batch_norm_message(structure.get("references", []), structure.get("layers", []))
            + " Without one, the training/inference behaviour of batch normalization cannot be tested."
        )
    if facts["inference_batch_gap"] > INFERENCE_TOLERANCE or facts["inference_repeat_gap"] > INFERENCE_TOLERANCE:
        raise CheckFailure(
            "In inference mode (training=False) the model's output for an image depends on the "
            "other images of the batch (difference "
            f"{max(facts['inference_batch_gap'], facts['inference_repeat_gap']):.3g}): batch "
            "normalization should then use its moving mean and variance, not batch statistics."
        )
    if facts["inference_moving_change"] > 0:
        raise CheckFailure(
            "Calling the model in inference mode changed the moving mean/variance of its batch "
            "normalization; only training should update them."
        )
    frozen = [index for index, change in enumerate(facts["training_moving_changes"]) if change < MIN_MOVING_CHANGE]
    if frozen:
        raise CheckFailure(
            f"{len(frozen)} of {facts['batch_norm_layers']} BatchNormalization layers did not "
            "update their moving mean/variance in training mode (training=True): were they "
            "frozen (trainable=False) or called with training=False?"
        )


@check(points=1, probes=("output",))
def test_output(probe):
    """Ten class probabilities per image."""
    outputs = probe.array("output", "outputs")
    require_shape(outputs, (None, NUM_CLASSES), "build_cnn_with_batch_norm()'s output for 16 images")
    require_finite(outputs, "build_cnn_with_batch_norm()'s output")
    sums = outputs.sum(axis=-1)
    if np.any(outputs < 0) or np.max(np.abs(sums - 1.0)) > SUM_TOLERANCE:
        raise CheckFailure(
            "The model's outputs are not class probabilities (each row should be >= 0 and sum "
            f"to 1; row sums range from {sums.min():.3g} to {sums.max():.3g}): end with a "
            "softmax, as the loss sparse_categorical_crossentropy expects by default."
        )


def _exact_test_labels():
    from course_lib.data import load_cifar10

    _, labels = load_cifar10("test", limit=TEST_IMAGES, exact_only=True)
    return labels


def _accuracy(probe, key, labels):
    shape = probe.facts("accuracy")[f"{key}_output_shape"]
    if len(shape) != 2 or shape[1] != NUM_CLASSES:
        raise CheckFailure(
            f"model_{key} should output {NUM_CLASSES} class probabilities per image. "
            f"Received: output shape {tuple(shape)}"
        )
    predictions = probe.array("accuracy", f"{key}_predictions")
    require_shape(predictions, (len(labels),), f"model_{key}'s predictions")
    return float(np.mean(predictions == labels))


def _check_model_bn_is_the_builders(probe, facts):
    """model_bn must be the model build_cnn_with_batch_norm() builds (when that one has BN)."""
    structure = _optional_facts(probe, "structure")
    built = sum(record["kind"] == "batch_norm" for record in structure["layers"]) if structure else 0
    if facts["bn_facts"]["batch_norm_layers"] == 0 and built > 0:
        raise CheckFailure(
            f"model_bn has no BatchNormalization layer, while build_cnn_with_batch_norm() builds "
            f"{built}: model_bn should be the trained model of build_cnn_with_batch_norm(), "
            "not the baseline."
        )


@check(points=3, probes=("accuracy", "structure"))
def test_batch_norm_accuracy(probe):
    """The trained batch-normalized CNN beats a calibrated accuracy on exact test images."""
    facts = probe.facts("accuracy")
    _check_model_bn_is_the_builders(probe, facts)
    thresholds = probe.thresholds()
    threshold = thresholds["min_bn_accuracy"]
    accuracy = _accuracy(probe, "bn", _exact_test_labels())
    if not thresholds.holds("min_bn_accuracy", accuracy):
        cause = _momentum_hint(facts) or " Was it trained with the notebook's settings (train(model_bn))?"
        raise CheckFailure(
            f"model_bn classifies {accuracy:.1%} of the {TEST_IMAGES} exact CIFAR-10 test images "
            f"correctly; at least {threshold:.1%} is expected in the '{probe.profile}' profile."
            + cause
        )


@check(points=2, probes=("accuracy",))
def test_batch_norm_helps(probe):
    """model_bn beats the same CNN without batch normalization by a calibrated margin.

    The notebook trains both with the same SGD at a learning rate that is high for the
    plain CNN: there the batch-normalized one is clearly ahead (calibrated over seeds).
    """
    facts = probe.facts("accuracy")
    if facts["same_object"]:
        raise CheckFailure("model_bn and model_plain are the same model: train two models.")
    if facts["plain_facts"]["batch_norm_layers"] > 0:
        raise CheckFailure(
            f"model_plain has {facts['plain_facts']['batch_norm_layers']} BatchNormalization "
            "layers: it should be the CNN without them (build_cifar_cnn(batch_norm=False))."
        )
    thresholds = probe.thresholds()
    margin = thresholds["min_bn_minus_plain"]
    labels = _exact_test_labels()
    accuracy_bn = _accuracy(probe, "bn", labels)
    accuracy_plain = _accuracy(probe, "plain", labels)
    difference = accuracy_bn - accuracy_plain
    if not thresholds.holds("min_bn_minus_plain", difference):
        if difference < 0:
            gap = f"is less accurate than model_plain ({accuracy_plain:.1%}) by {-100 * difference:.1f} points"
        else:
            gap = f"beats model_plain ({accuracy_plain:.1%}) by only {100 * difference:.1f} points"
        cause = _momentum_hint(facts) or " Check the BN model's training (train(model_bn))."
        raise CheckFailure(
            f"model_bn ({accuracy_bn:.1%}) {gap} on the exact test images; at least "
            f"{100 * margin:.1f} points more than model_plain are expected in the '{probe.profile}' "
            "profile: trained with the notebook's train() (the same SGD and learning rate for "
            "both), the CNN with batch normalization should be clearly ahead." + cause
        )
