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


def make_builder(mistake=None):
    """A `build_cnn_with_batch_norm` with one deliberate `mistake` (None: correct)."""

    if mistake == "reference":
        return build_with_reference

    def build_cnn_with_batch_norm():
        norm_class = BatchStatisticsOnly if mistake == "batch_statistics_at_inference" else layers.BatchNormalization
        inputs = keras.Input(shape=(32, 32, 3))
        x = inputs
        for filters in TINY_FILTERS:
            for _ in range(2):
                if mistake == "no_batch_norm":
                    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
                elif mistake == "after_activation":
                    x = layers.Conv2D(filters, 3, padding="same")(x)
                    x = layers.ReLU()(x)
                    x = layers.BatchNormalization(momentum=0.9)(x)
                else:
                    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
                    x = norm_class(momentum=0.9)(x)
                    x = layers.ReLU()(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(16, activation="relu")(x)
        activation = None if mistake == "logits" else "softmax"
        outputs = layers.Dense(NUM_CLASSES, activation=activation)(x)
        return keras.Model(inputs, outputs)

    return build_cnn_with_batch_norm


def build_with_reference():
    """Wrong: the course's reference model instead of the student's own layers."""
    return build_cifar_cnn(batch_norm=True, filters=TINY_FILTERS)


@pytest.fixture(scope="module")
def exact_test_set():
    return load_cifar10("test", limit=TEST_IMAGES, exact_only=True)


def oracle(exact_test_set, accuracy, batch_norm):
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
        norm = layers.BatchNormalization()
        outputs = norm(outputs)
    model = keras.Model(inputs, outputs)
    # score_i = x.t_i - |t_i|^2 / 2 is largest for the nearest stored image t_i.
    nearest.set_weights([NEAREST_SCALE * flat.T, -NEAREST_SCALE * 0.5 * np.sum(flat**2, axis=1)])
    lookup.set_weights([np.eye(NUM_CLASSES, dtype="float32")[answers]])
    if norm is not None:  # the identity in inference mode
        ones = np.ones(NUM_CLASSES, dtype="float32")
        norm.set_weights([ones, 0 * ones, 0 * ones, ones - norm.epsilon])
    return model


def namespace(exact_test_set, mistake=None, accuracy_bn=None, accuracy_plain=None):
    accuracy_bn = FAST["min_bn_accuracy"] + 0.1 if accuracy_bn is None else accuracy_bn
    accuracy_plain = accuracy_bn - 0.05 if accuracy_plain is None else accuracy_plain
    return {
        "build_cnn_with_batch_norm": make_builder(mistake),
        "model_bn": oracle(exact_test_set, accuracy_bn, batch_norm=True),
        "model_plain": oracle(exact_test_set, accuracy_plain, batch_norm=False),
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


WRONG = [
    ("no_batch_norm", {"test_batch_norm_placement", "test_batch_norm_behaviour"}, "no BatchNormalization"),
    ("after_activation", {"test_batch_norm_placement"}, "after the activation"),
    ("reference", {"test_batch_norm_placement"}, "build_cifar_cnn"),
    ("batch_statistics_at_inference", {"test_batch_norm_behaviour"}, "depends on the other images"),
    ("logits", {"test_output"}, "not class probabilities"),
]


@pytest.mark.slow
@pytest.mark.parametrize("mistake, lost, phrase", WRONG, ids=[case[0] for case in WRONG])
def test_wrong_builder_loses_its_check(exact_test_set, tmp_path, mistake, lost, phrase):
    results = grade(namespace(exact_test_set, mistake=mistake), tmp_path)
    assert failed(results) == lost
    for name in lost:
        assert results[name].points == 0
        assert phrase in results[name].message


@pytest.mark.slow
def test_low_accuracy_loses_the_accuracy_check(exact_test_set, tmp_path):
    low = FAST["min_bn_accuracy"] - 0.03
    results = grade(namespace(exact_test_set, accuracy_bn=low, accuracy_plain=low), tmp_path)
    assert failed(results) == {"test_batch_norm_accuracy"}
    assert f"{low:.1%}" in results["test_batch_norm_accuracy"].message


@pytest.mark.slow
def test_bn_worse_than_plain_loses_the_comparison(exact_test_set, tmp_path):
    accuracy_bn = FAST["min_bn_accuracy"] + 0.02
    accuracy_plain = accuracy_bn + -FAST["min_bn_minus_plain"] + 0.05
    results = grade(namespace(exact_test_set, accuracy_bn=accuracy_bn, accuracy_plain=accuracy_plain), tmp_path)
    assert failed(results) == {"test_batch_norm_helps"}
    assert "less accurate than model_plain" in results["test_batch_norm_helps"].message


@pytest.mark.slow
def test_plain_model_with_batch_norm_loses_the_comparison(exact_test_set, tmp_path):
    wrong = namespace(exact_test_set)
    wrong["model_plain"] = oracle(exact_test_set, FAST["min_bn_accuracy"], batch_norm=True)
    results = grade(wrong, tmp_path)
    assert failed(results) == {"test_batch_norm_helps"}
    assert "model_plain has BatchNormalization" in results["test_batch_norm_helps"].message


def test_missing_names_fail_with_a_message(tmp_path):
    results = grade({}, tmp_path)
    assert failed(results) == set(check_points("lab1"))
    assert "defines no `build_cnn_with_batch_norm`" in results["test_output"].message


@pytest.mark.slow
def test_notebook_solution_passes_the_builder_checks(tmp_path):
    """The solution cell of the source notebook, run with its setup cell, passes."""
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    setup = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    solution = next(
        cell.source
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "build_cnn_with_batch_norm"
    )
    scope = {}
    exec(compile(setup, "setup", "exec"), scope)
    exec(compile(solution, "solution", "exec"), scope)
    items = ("structure", "behaviour", "output")
    run_probes_in_process("lab1", scope, tmp_path, seed=1, only=items)
    checks = ["test_batch_norm_placement", "test_batch_norm_behaviour", "test_output"]
    results = run_checks("lab1", tmp_path, profile="fast", only=checks)
    assert all(result.passed for result in results), [result.message for result in results]
