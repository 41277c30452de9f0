"""The hidden checks of lab1 on a correct and on deliberately wrong implementations.

No notebook runs here: the probes run in this process against namespaces built below,
then the checks judge them. Each wrong implementation must lose exactly the points of
the check it targets, with a message that names the problem. The trained models are
replaced by nearest-neighbour "oracles" on the exact test images, whose accuracy is set
exactly (a fraction of their answers is made wrong), so the accuracy checks are tested
at known distances from the calibrated thresholds without any training.
"""

import pathlib

import course_lib  # noqa: F401  (selects the torch backend before keras)
import keras
import nbformat
import numpy as np
import pytest
from keras import layers

from autograder import calibration
from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process
from check_grading import graded_cell  # tests/check_grading.py
from course_lib.cnn import build_cifar_cnn
from course_lib.data import load_cifar10

ROOT = pathlib.Path(__file__).resolve().parents[1]

SOURCE_NOTEBOOK = ROOT / "source" / "lab1" / "lab1.ipynb"
FAST = calibration.thresholds("lab1", "fast")
TINY_FILTERS = (4, 8)
TEST_IMAGES = 1000
NEAREST_SCALE = 1000.0
NUM_CLASSES = 10


class BatchStatisticsOnly(layers.BatchNormalization):
    """A wrong BN: it normalizes with the batch's statistics even at inference."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=True, mask=mask)


class BatchNormOnTheHeight(layers.BatchNormalization):
    """A wrong BN, as written by a student who read "axis=1" in a channels-first example."""

    def __init__(self, momentum=0.99, **kwargs):
        super().__init__(axis=1, momentum=momentum, **kwargs)


class LayerNormInstead(layers.LayerNormalization):
    """A wrong normalization: layer normalization where the lab asks for batch normalization."""

    def __init__(self, momentum=None, **kwargs):
        super().__init__(**kwargs)


class BatchNormWithoutAffine(layers.BatchNormalization):
    """Correct: BN without its learned gamma/beta still normalizes with batch and moving statistics."""

    def __init__(self, momentum=0.99, **kwargs):
        super().__init__(momentum=momentum, center=False, scale=False, **kwargs)


NOTEBOOK_MOMENTUM = 0.9
CORRECT = {
    "order": "conv_bn_relu",  # also: bn_after_relu, conv_relu_bn, bn_before_conv
    "use_bias": False,
    "norm_class": layers.BatchNormalization,
    "momentum": NOTEBOOK_MOMENTUM,
    "norms_per_block": 2,  # 1: only the first Conv2D of each block is normalized
    "frozen_norm": False,
    "relu": layers.ReLU,
    "sequential": False,
    "head_norm": False,
    "nested_blocks": False,
    "num_classes": NUM_CLASSES,
    "softmax": True,
}


def _conv_block(x, filters, options, index):
    """Conv2D -> BN -> activation as `options` order it (x is a list for Sequential)."""
    relu = options["relu"] if options["relu"] is not layers.Activation else (lambda: layers.Activation("relu"))
    with_norm = index < options["norms_per_block"]

    def norm():
        layer = options["norm_class"](momentum=options["momentum"])
        layer.trainable = not options["frozen_norm"]
        return layer

    conv_activation = "relu" if options["order"] == "conv_relu_bn" else None
    conv = layers.Conv2D(filters, 3, padding="same", use_bias=options["use_bias"], activation=conv_activation)
    if not with_norm:
        return [layers.Conv2D(filters, 3, padding="same", activation="relu")]
    if options["order"] == "bn_after_relu":
        return [conv, relu(), norm()]
    if options["order"] == "bn_before_conv":
        return [norm(), conv, relu()]
    if options["order"] == "conv_relu_bn":
        return [conv, norm(), relu()]
    return [conv, norm(), relu()]


def _apply(layer_list, x, options):
    for layer in layer_list:
        x = layer(x)
    return x


def make_builder(mistake=None, **changes):
    """A `build_cnn_with_batch_norm` with one deliberate change of CORRECT (none: correct)."""
    if mistake is not None:
        return {"reference": build_with_reference, "no_batch_norm": build_without_batch_norm,
                "unused_batch_norm": build_with_unused_batch_norm}[mistake]
    options = dict(CORRECT, **changes)

    def build_cnn_with_batch_norm(momentum=options["momentum"]):
        options["momentum"] = momentum
        blocks = []
        for filters in TINY_FILTERS:
            block = [layer for index in range(2) for layer in _conv_block(None, filters, options, index)]
            blocks.append(block + [layers.MaxPooling2D(2)])
        head = [layers.Flatten(), layers.Dense(16)]
        head += [layers.BatchNormalization(momentum=momentum), layers.ReLU()] if options["head_norm"] else [layers.ReLU()]
        head.append(layers.Dense(options["num_classes"], activation="softmax" if options["softmax"] else None))
        if options["sequential"]:
            return keras.Sequential([keras.Input(shape=(32, 32, 3))] + [l for b in blocks for l in b] + head)
        inputs = keras.Input(shape=(32, 32, 3))
        x = inputs
        for number, block in enumerate(blocks):
            if options["nested_blocks"]:
                block_inputs = keras.Input(shape=tuple(x.shape[1:]))
                block_model = keras.Model(block_inputs, _apply(block, block_inputs, options), name=f"block{number}")
                x = block_model(x)
            else:
                x = _apply(block, x, options)
        return keras.Model(inputs, _apply(head, x, options))

    return build_cnn_with_batch_norm


def build_without_batch_norm(momentum=NOTEBOOK_MOMENTUM):
    """Wrong, as a student writes it: the baseline's layers, no BatchNormalization at all."""
    inputs = keras.Input(shape=(32, 32, 3))
    x = inputs
    for filters in TINY_FILTERS:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(NUM_CLASSES, activation="softmax")(x))


def build_with_unused_batch_norm(momentum=NOTEBOOK_MOMENTUM):
    """Wrong, as a student writes it: BN is called but its output is thrown away."""
    inputs = keras.Input(shape=(32, 32, 3))
    x = inputs
    for filters in TINY_FILTERS:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            layers.BatchNormalization(momentum=momentum)(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(NUM_CLASSES, activation="softmax")(x))


def build_with_reference():
    """Wrong: the course's reference model instead of the student's own layers."""
    return build_cifar_cnn(batch_norm=True, filters=TINY_FILTERS)


@pytest.fixture(scope="module")
def exact_test_set():
    return load_cifar10("test", limit=TEST_IMAGES, exact_only=True)


def oracle(exact_test_set, accuracy, batch_norm, momentum=NOTEBOOK_MOMENTUM):
    """A model that looks each exact test image up and answers right for `accuracy` of them."""
    images, labels = exact_test_set
    count = len(images)
    answers = labels.copy()
    wrong = np.arange(count) >= round(accuracy * count)
    answers[wrong] = (labels[wrong] + 1) % NUM_CLASSES
    flat = images.reshape(count, -1)
    inputs = keras.Input(shape=images.shape[1:])
    x = layers.Flatten()(inputs)
    nearest = layers.Dense(count)
    x = layers.Softmax()(nearest(x))
    lookup = layers.Dense(NUM_CLASSES, use_bias=False)
    outputs = lookup(x)
    norm = None
    if batch_norm:
        norm = layers.BatchNormalization(momentum=momentum)
        outputs = norm(outputs)
    model = keras.Model(inputs, outputs)
    # score_i = x.t_i - |t_i|^2 / 2 is largest for the nearest stored image t_i.
    nearest.set_weights([NEAREST_SCALE * flat.T, -NEAREST_SCALE * 0.5 * np.sum(flat**2, axis=1)])
    lookup.set_weights([np.eye(NUM_CLASSES, dtype="float32")[answers]])
    if norm is not None:  # the identity in inference mode
        ones = np.ones(NUM_CLASSES, dtype="float32")
        norm.set_weights([ones, 0 * ones, 0 * ones, ones - norm.epsilon])
    return model


def namespace(exact_test_set, mistake=None, accuracy_bn=None, accuracy_plain=None, bn_model="bn", **changes):
    """A notebook's namespace: the builder with `mistake`/`changes`, oracle-trained models.

    `bn_model`: "bn" (an oracle with BN of the notebook's momentum), "momentum_0.99" (BN
    with Keras' default momentum) or "plain" (an oracle without BN, the baseline's kind).
    """
    accuracy_bn = FAST["min_bn_accuracy"] + 0.1 if accuracy_bn is None else accuracy_bn
    # By default BN is ahead of plain by the calibrated margin and 5 points more.
    accuracy_plain = accuracy_bn - FAST["min_bn_minus_plain"] - 0.05 if accuracy_plain is None else accuracy_plain
    momentum = 0.99 if bn_model == "momentum_0.99" else NOTEBOOK_MOMENTUM
    return {
        "build_cnn_with_batch_norm": make_builder(mistake, **changes),
        "model_bn": oracle(exact_test_set, accuracy_bn, batch_norm=bn_model != "plain", momentum=momentum),
        "model_plain": oracle(exact_test_set, accuracy_plain, batch_norm=False),
        "BATCH_NORM_MOMENTUM": NOTEBOOK_MOMENTUM,
    }


def grade(namespace, tmp_path):
    run_probes_in_process("lab1", namespace, tmp_path, seed=0)
    return {result.name: result for result in run_checks("lab1", tmp_path, profile="fast")}


def failed(results):
    return {name for name, result in results.items() if not result.passed}


def test_points_match_the_notebook():
    """Every hidden-check cell of the source notebook carries its check's points."""
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    cells = {
        cell.metadata["nbgrader"]["grade_id"]: cell.metadata["nbgrader"]["points"]
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    }
    assert cells == check_points("lab1")


@pytest.mark.slow
def test_correct_implementation_gets_full_marks(exact_test_set, tmp_path):
    results = grade(namespace(exact_test_set), tmp_path)
    assert failed(results) == set(), {name: r.message for name, r in results.items()}
    assert sum(r.points for r in results.values()) == sum(check_points("lab1").values())


PLACEMENT, BEHAVIOUR, OUTPUT = "test_batch_norm_placement", "test_batch_norm_behaviour", "test_output"
ACCURACY, HELPS = "test_batch_norm_accuracy", "test_batch_norm_helps"
# Accuracy on the exact test images of the solution notebook whose BN layers kept Keras'
# default momentum (0.99), fast profile: a known-poor run of the calibration (issue 16;
# scripts/calibrate_lab1.py --poor bn_momentum_0.99): the moving statistics had not
# converged, so inference normalizes with values far from the data's.
# The measured runs closest to passing are used: the largest BN gain of each variant.
FAST_DETAILS = calibration.load("lab1")["profiles"]["fast"]["details"]
GOOD_PLAIN = {run["seed"]: run["plain_accuracy"] for run in FAST_DETAILS["runs"]}


def _closest_poor_run(variant, full_plain=False):
    """(BN accuracy, plain accuracy) of the known-poor run of `variant` with the largest gain."""
    runs = [(run["bn_accuracy"], GOOD_PLAIN[run["seed"]] if full_plain else run["plain_accuracy"])
            for run in FAST_DETAILS["poor_runs"] if run["variant"] == variant]
    return max(runs, key=lambda pair: pair[0] - pair[1])


MOMENTUM_099_ACCURACY, MOMENTUM_099_PLAIN = _closest_poor_run("bn_momentum_0.99")
# A tenth of the steps (scripts/calibrate_lab1.py --poor tenth_of_the_steps), beside a fully
# trained model_plain; and the BN-less CNN of an unused BN, beside its own model_plain.
TENTH_ACCURACY, TENTH_PLAIN = _closest_poor_run("tenth_of_the_steps", full_plain=True)
UNUSED_ACCURACY, UNUSED_PLAIN = _closest_poor_run("unused_batch_norm")

# The planted bugs, as students write them: (id, namespace arguments, the checks that lose
# all their points (no other check loses any), words of each failing check's message).
# Decisions: BN after the ReLU (or after a Conv2D's own ReLU) is wrong here: the notebook
# asks for the pre-activation placement of Ioffe & Szegedy and explains why; it trains
# fine, so only the placement check loses points. A missing or unused BN loses the
# placement and the behaviour checks (both grade the BN layers; neither holds without
# one); trained (measured: "unused_batch_norm_trained"), such a CNN (Keras' default
# initialization, no bias, no BN) does worse than the baseline at this SGD learning rate,
# so it also loses both accuracy checks. Keras' default
# momentum (0.99) is not a behaviour bug, but in the fast budget it really degrades the
# trained model: since the SGD design (issue 16) its accuracy varies (measured 34.2%, above
# the accuracy threshold, and 26.7%); the run closest to passing loses only the comparison
# with model_plain, which says why. A tenth of the training steps loses both accuracy checks.
PLANTED_BUGS = [
    ("no_batch_norm", {"mistake": "no_batch_norm"}, {PLACEMENT: ["no BatchNormalization layer", "add one"],
                                               BEHAVIOUR: ["no BatchNormalization layer", "cannot be tested"]}),
    ("unused_batch_norm", {"mistake": "unused_batch_norm"}, {PLACEMENT: ["outputs are never used", "x = layers.BatchNormalization"],
                                                       BEHAVIOUR: ["outputs are never used"]}),
    ("bn_after_relu", {"order": "bn_after_relu"}, {PLACEMENT: ["after the activation", "activation=None"]}),
    ("conv_activation_then_bn", {"order": "conv_relu_bn"}, {PLACEMENT: ["after the activation", "(Conv2D)"]}),
    ("bn_before_conv", {"order": "bn_before_conv"}, {PLACEMENT: ["after the activation"]}),
    ("bn_on_half_the_convs", {"norms_per_block": 1}, {PLACEMENT: ["is not followed by a BatchNormalization", "every Conv2D"]}),
    ("reference_model", {"mistake": "reference"}, {PLACEMENT: ["build_cifar_cnn", "your own layers"]}),
    ("batch_statistics_at_inference", {"norm_class": BatchStatisticsOnly},
     {BEHAVIOUR: ["depends on the other images", "moving mean and variance"]}),
    ("frozen_batch_norm", {"frozen_norm": True}, {BEHAVIOUR: ["did not update their moving mean/variance", "trainable=False"]}),
    ("bn_on_the_height_axis", {"norm_class": BatchNormOnTheHeight},
     {PLACEMENT: ["normalizes axis 1 (the height)", "channels", "axis 3", "axis=-1"]}),
    ("layer_norm_instead", {"norm_class": LayerNormInstead},
     {PLACEMENT: ["normalizes with LayerNormInstead, not BatchNormalization"],
      BEHAVIOUR: ["normalizes with LayerNormInstead", "cannot be tested"]}),
    ("logits_output", {"softmax": False}, {OUTPUT: ["not class probabilities", "softmax"]}),
    ("nine_classes", {"num_classes": 9}, {OUTPUT: ["(None, 10)", "(16, 9)"]}),
    ("keras_default_momentum", {"momentum": 0.99, "bn_model": "momentum_0.99", "accuracy_bn": MOMENTUM_099_ACCURACY,
                                "accuracy_plain": MOMENTUM_099_PLAIN},
     {HELPS: [f"{MOMENTUM_099_ACCURACY:.1%}", "by only", "momentum 0.99", "not BATCH_NORM_MOMENTUM = 0.9",
              "do not converge", "momentum=BATCH_NORM_MOMENTUM"]}),
    ("unused_batch_norm_trained", {"mistake": "unused_batch_norm", "bn_model": "plain", "accuracy_bn": UNUSED_ACCURACY,
                                   "accuracy_plain": UNUSED_PLAIN},
     {PLACEMENT: ["outputs are never used"], BEHAVIOUR: ["outputs are never used"],
      ACCURACY: [f"{UNUSED_ACCURACY:.1%}"], HELPS: [f"{UNUSED_ACCURACY:.1%}", "same SGD and learning rate"]}),
    ("tenth_of_the_steps", {"accuracy_bn": TENTH_ACCURACY, "accuracy_plain": TENTH_PLAIN},
     {ACCURACY: [f"{TENTH_ACCURACY:.1%}", "trained with the notebook's settings"],
      HELPS: ["less accurate than model_plain", f"{TENTH_PLAIN:.1%}"]}),
    ("model_bn_is_a_baseline", {"bn_model": "plain"}, {ACCURACY: ["model_bn has no BatchNormalization layer", "builds 4"]}),
    ("untrained_model_bn", {"accuracy_bn": 0.1, "accuracy_plain": FAST["min_bn_accuracy"] + 0.05},
     {ACCURACY: ["10.0%", "trained with the notebook's settings"], HELPS: ["less accurate than model_plain", "10.0%"]}),
]

# Correct variants: each keeps full marks.
CORRECT_VARIANTS = [
    ("as_the_solution", {}),
    ("conv_with_bias", {"use_bias": True}),
    ("sequential_model", {"sequential": True}),
    ("activation_layer", {"relu": layers.Activation}),
    ("nested_block_models", {"nested_blocks": True}),
    ("bn_in_the_dense_head_too", {"head_norm": True}),
    ("bn_without_gamma_and_beta", {"norm_class": BatchNormWithoutAffine}),
    ("bn_ahead_by_just_over_the_margin", {"accuracy_plain": FAST["min_bn_accuracy"] + 0.1 - FAST["min_bn_minus_plain"] - 0.01}),
]


@pytest.mark.slow
@pytest.mark.parametrize("arguments, expected", [case[1:] for case in PLANTED_BUGS], ids=[case[0] for case in PLANTED_BUGS])
def test_planted_bug_loses_exactly_its_checks(exact_test_set, tmp_path, arguments, expected):
    results = grade(namespace(exact_test_set, **arguments), tmp_path)
    assert failed(results) == set(expected), {name: results[name].message for name in failed(results)}
    for name, words in expected.items():
        assert results[name].points == 0
        for word in words:
            assert word in results[name].message, (word, results[name].message)


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [case[1] for case in CORRECT_VARIANTS], ids=[case[0] for case in CORRECT_VARIANTS])
def test_correct_variant_keeps_full_marks(exact_test_set, tmp_path, arguments):
    results = grade(namespace(exact_test_set, **arguments), tmp_path)
    assert failed(results) == set(), {name: results[name].message for name in failed(results)}
    assert sum(r.points for r in results.values()) == sum(check_points("lab1").values())


@pytest.mark.slow
def test_low_accuracy_loses_the_accuracy_check(exact_test_set, tmp_path):
    low = FAST["min_bn_accuracy"] - 0.03
    results = grade(namespace(exact_test_set, accuracy_bn=low), tmp_path)
    assert failed(results) == {"test_batch_norm_accuracy"}
    assert f"{low:.1%}" in results["test_batch_norm_accuracy"].message


@pytest.mark.slow
def test_bn_worse_than_plain_loses_the_comparison(exact_test_set, tmp_path):
    accuracy_bn = FAST["min_bn_accuracy"] + 0.02
    accuracy_plain = accuracy_bn + 0.03
    results = grade(namespace(exact_test_set, accuracy_bn=accuracy_bn, accuracy_plain=accuracy_plain), tmp_path)
    assert failed(results) == {"test_batch_norm_helps"}
    assert "less accurate than model_plain" in results["test_batch_norm_helps"].message


@pytest.mark.slow
def test_bn_ahead_by_less_than_the_margin_loses_the_comparison(exact_test_set, tmp_path):
    # The fast profile's SGD learning rate makes BN clearly better: a small gain is not enough.
    accuracy_bn = FAST["min_bn_accuracy"] + 0.05
    accuracy_plain = accuracy_bn - FAST["min_bn_minus_plain"] / 2
    results = grade(namespace(exact_test_set, accuracy_bn=accuracy_bn, accuracy_plain=accuracy_plain), tmp_path)
    assert failed(results) == {"test_batch_norm_helps"}
    message = results["test_batch_norm_helps"].message
    assert "beats model_plain" in message and "by only" in message
    assert f"{100 * FAST['min_bn_minus_plain']:.1f} points" in message and "same SGD and learning rate" in message


@pytest.mark.slow
def test_plain_model_with_batch_norm_loses_the_comparison(exact_test_set, tmp_path):
    wrong = namespace(exact_test_set)
    wrong["model_plain"] = oracle(exact_test_set, FAST["min_bn_accuracy"], batch_norm=True)
    results = grade(wrong, tmp_path)
    assert failed(results) == {"test_batch_norm_helps"}
    assert "BatchNormalization layers: it should be the CNN without them" in results["test_batch_norm_helps"].message


def test_missing_names_fail_with_a_message(tmp_path):
    results = grade({}, tmp_path)
    assert failed(results) == set(check_points("lab1"))
    assert "defines no `build_cnn_with_batch_norm`" in results["test_output"].message


@pytest.mark.slow
def test_notebook_solution_passes_the_builder_checks(tmp_path):
    """The solution cell of the source notebook, run with its setup cell, passes."""
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    setup = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    solution = graded_cell(notebook, "build_cnn_with_batch_norm").source
    scope = {}
    exec(compile(setup, "setup", "exec"), scope)
    exec(compile(solution, "solution", "exec"), scope)
    items = ("structure", "behaviour", "output")
    run_probes_in_process("lab1", scope, tmp_path, seed=1, only=items)
    checks = ["test_batch_norm_placement", "test_batch_norm_behaviour", "test_output"]
    results = run_checks("lab1", tmp_path, profile="fast", only=checks)
    assert all(result.passed for result in results), [result.message for result in results]
