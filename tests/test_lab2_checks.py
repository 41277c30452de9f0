"""The hidden checks of lab2 on a correct and on deliberately wrong implementations.

No notebook runs here. Namespaces are built with the notebook's own `ScheduleRecorder`
(taken from the source notebook) and two tiny training phases of one step each; the
probes run in this process and the checks judge them. Each wrong implementation must
lose exactly the points of the check it targets, with a message naming the problem.

The accuracy check is tested with nearest-neighbour "oracles" on the MNIST test
digits, whose accuracy is set exactly, instead of trained networks.
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
from course_lib.augment import build_mnist_augmentation
from course_lib.cnn import batch_norm_layers
from course_lib.data import load_mnist
from course_lib.resnet import build_mnist_resnet18

ROOT = pathlib.Path(__file__).resolve().parents[1]

SOURCE_NOTEBOOK = ROOT / "source" / "lab2" / "lab2.ipynb"
RANDOM_FAST = calibration.thresholds("lab2", "fast")
IMAGE_SIZE = 32
TRAIN_IMAGES = 16
FROZEN_RATE = 1e-3
NUM_CLASSES = 10
NEAREST_SCALE = 1000.0
ALL_CHECKS = set(check_points("lab2"))
NON_ACCURACY_ITEMS = ("augmentation", "model", "batch_norm", "schedule")


def _notebook_cell(predicate):
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    return next(cell.source for cell in notebook.cells if predicate(cell))


@pytest.fixture(scope="module")
def recorder():
    """The notebook's ScheduleRecorder class (its cell, run with the notebook's imports)."""
    scope = {}
    setup = _notebook_cell(lambda cell: cell.cell_type == "code")
    exec(compile(setup, "setup", "exec"), scope)
    source = _notebook_cell(lambda cell: "class ScheduleRecorder" in cell.source)
    exec(compile(source, "recorder", "exec"), scope)
    return scope["ScheduleRecorder"]


def build_augmentation():
    return keras.Sequential(
        [
            layers.RandomRotation(0.05, fill_mode="constant"),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            layers.RandomZoom(0.1, fill_mode="constant"),
        ]
    )


def build_augmentation_without_zoom():
    return keras.Sequential(
        [
            layers.RandomRotation(0.05, fill_mode="constant"),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        ]
    )


class AlwaysAugment(keras.Sequential):
    """Wrong: augments in inference mode too."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        return super().call(inputs, training=True, mask=mask, **kwargs)


def build_augmentation_always_on():
    return AlwaysAugment(build_augmentation().layers)


def build_augmentation_from_reference():
    return build_mnist_augmentation()


@pytest.fixture(scope="module")
def train_digits():
    return load_mnist("train", limit=TRAIN_IMAGES)


def _compile(model, rate):
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy")


def _fit(model, digits, schedule, phase, recorder):
    images, labels = digits
    return model.fit(
        images, labels, epochs=1, batch_size=TRAIN_IMAGES, verbose=0,
        callbacks=[recorder(schedule, phase)],
    )


def _finetune_state(model, freeze_batch_norm=True):
    backbone = model.get_layer("backbone")
    backbone.trainable = True
    if freeze_batch_norm:
        for layer in batch_norm_layers(backbone):
            layer.trainable = False


def make_namespace(digits, recorder, mistake=None):
    """Trains one step per phase like the notebook, with at most one deliberate mistake."""
    keras.utils.set_random_seed(0)
    model = build_mnist_resnet18(IMAGE_SIZE, augmentation=build_augmentation(), verbose=False)
    schedule = {}
    finetune_rate = FROZEN_RATE if mistake == "same_rate" else FROZEN_RATE / 10
    model.get_layer("backbone").trainable = mistake == "unfrozen_phase1"
    _compile(model, FROZEN_RATE)
    history_frozen = _fit(model, digits, schedule, "frozen", recorder)
    _finetune_state(model, freeze_batch_norm=mistake != "trainable_batch_norm")
    _compile(model, finetune_rate)
    history_finetune = _fit(model, digits, schedule, "finetune", recorder)
    return {
        "build_augmentation": build_augmentation,
        "model": model,
        "schedule": schedule,
        "history_frozen": history_frozen,
        "history_finetune": history_finetune,
        "FROZEN_LEARNING_RATE": FROZEN_RATE,
        "FINETUNE_LEARNING_RATE": finetune_rate,
        "PRETRAINED_WEIGHTS": None,
    }


@pytest.fixture(scope="module")
def correct(train_digits, recorder):
    return make_namespace(train_digits, recorder)


def with_final_model(correct, augmentation=build_augmentation, mistake=None):
    """The correct namespace with another model, in the state fine-tuning leaves it in.

    For mistakes that do not concern the schedule: the recorded schedule is reused.
    """
    keras.utils.set_random_seed(0)
    model = build_mnist_resnet18(IMAGE_SIZE, augmentation=augmentation(), verbose=False)
    _finetune_state(model)
    _compile(model, correct["FINETUNE_LEARNING_RATE"])
    if mistake == "logits":
        model.get_layer("classifier").activation = keras.activations.linear
    return dict(correct, build_augmentation=augmentation, model=model)


def grade(namespace, tmp_path, items=NON_ACCURACY_ITEMS, imports=()):
    run_probes_in_process("lab2", namespace, tmp_path, seed=0, only=items)
    checks = None if items is None or "accuracy" in items else sorted(ALL_CHECKS - {"test_accuracy"})
    context = {"imports": list(imports)}
    return {r.name: r for r in run_checks("lab2", tmp_path, profile="fast", only=checks, context=context)}


def failed(results):
    return {name for name, result in results.items() if not result.passed}


@pytest.fixture(scope="module")
def test_digits():
    return load_mnist("test")


def oracle(test_digits, accuracy):
    """A model that looks each MNIST test digit up and answers right for `accuracy` of them."""
    images, labels = test_digits
    count = len(images)
    answers = labels.copy()
    wrong = np.random.default_rng(0).random(count) >= accuracy
    answers[wrong] = (labels[wrong] + 1) % NUM_CLASSES
    flat = images.reshape(count, -1)
    inputs = keras.Input(shape=images.shape[1:])
    nearest = layers.Dense(count)
    lookup = layers.Dense(NUM_CLASSES, use_bias=False)
    outputs = lookup(layers.Softmax()(nearest(layers.Flatten()(inputs))))
    model = keras.Model(inputs, outputs)
    # score_i = x.t_i - |t_i|^2 / 2 is largest for the nearest stored digit t_i.
    nearest.set_weights([NEAREST_SCALE * flat.T, -NEAREST_SCALE * 0.5 * np.sum(flat**2, axis=1)])
    lookup.set_weights([np.eye(NUM_CLASSES, dtype="float32")[answers]])
    return model


def with_oracle(model, oracle_model, rate):
    """The trained model's layers, with the oracle deciding the output (for full marks)."""
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for layer in model.layers[1:]:
        x = layer(x)
    outputs = layers.Add()([layers.Rescaling(0.0)(x), oracle_model(inputs)])
    combined = keras.Model(inputs, outputs)
    _compile(combined, rate)
    return combined


def test_points_match_the_notebook():
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    cells = {
        cell.metadata["nbgrader"]["grade_id"]: cell.metadata["nbgrader"]["points"]
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    }
    assert cells == check_points("lab2")


@pytest.mark.slow
def test_correct_implementation_gets_full_marks(correct, test_digits, tmp_path):
    namespace = dict(correct)
    rate = namespace["FINETUNE_LEARNING_RATE"]
    namespace["model"] = with_oracle(correct["model"], oracle(test_digits, RANDOM_FAST["min_accuracy"] + 0.05), rate)
    results = grade(namespace, tmp_path, items=None)
    assert failed(results) == set(), {name: r.message for name, r in results.items()}
    assert sum(r.points for r in results.values()) == sum(check_points("lab2").values())


WRONG_MODELS = [
    ({"augmentation": build_augmentation_without_zoom}, "test_augmentation_layers", "no zoom"),
    ({"augmentation": build_augmentation_from_reference}, "test_augmentation_layers", "build_mnist_augmentation"),
    ({"augmentation": build_augmentation_always_on}, "test_augmentation_training_only", "inference mode"),
    ({"mistake": "logits"}, "test_output", "not class probabilities"),
]
WRONG_SCHEDULES = [
    ("unfrozen_phase1", "test_frozen_phase", "trainable weights: freeze it"),
    ("same_rate", "test_finetune_phase", "should be lower than"),
    ("trainable_batch_norm", "test_batch_norm_inference_mode", "BatchNormalization layers were trainable"),
]


def _assert_loses_only(results, lost, phrase):
    assert failed(results) == {lost}, {name: r.message for name, r in results.items()}
    assert results[lost].points == 0
    assert phrase in results[lost].message


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, lost, phrase", WRONG_MODELS, ids=[f"{case[1]}-{case[2].split()[-1]}" for case in WRONG_MODELS]
)
def test_wrong_model_loses_its_check(correct, tmp_path, options, lost, phrase):
    _assert_loses_only(grade(with_final_model(correct, **options), tmp_path), lost, phrase)


@pytest.mark.slow
@pytest.mark.parametrize("mistake, lost, phrase", WRONG_SCHEDULES, ids=[case[0] for case in WRONG_SCHEDULES])
def test_wrong_schedule_loses_its_check(train_digits, recorder, tmp_path, mistake, lost, phrase):
    _assert_loses_only(grade(make_namespace(train_digits, recorder, mistake=mistake), tmp_path), lost, phrase)


@pytest.mark.slow
def test_course_lib_freezing_helpers_are_refused(correct, tmp_path):
    imports = ["course_lib.resnet", "course_lib.resnet.freeze_backbone", "course_lib.resnet.unfreeze_backbone"]
    results = grade(correct, tmp_path, imports=imports)
    assert failed(results) == {"test_frozen_phase", "test_batch_norm_inference_mode"}
    assert "your own code" in results["test_frozen_phase"].message


@pytest.mark.slow
def test_missing_schedule_record_is_named(correct, tmp_path):
    namespace = dict(correct, schedule={"finetune": correct["schedule"]["finetune"]})
    results = grade(namespace, tmp_path)
    assert failed(results) == {"test_frozen_phase"}
    assert "no record of the 'frozen' phase" in results["test_frozen_phase"].message


@pytest.mark.slow
@pytest.mark.parametrize("offset, passes", [(0.05, True), (-0.05, False)])
def test_accuracy_threshold(test_digits, tmp_path, offset, passes):
    accuracy = RANDOM_FAST["min_accuracy"] + offset
    namespace = {"model": oracle(test_digits, accuracy), "PRETRAINED_WEIGHTS": None}
    run_probes_in_process("lab2", namespace, tmp_path, seed=3, only=("accuracy",))
    (result,) = run_checks("lab2", tmp_path, profile="fast", only=["test_accuracy"])
    assert result.passed == passes, result.message
    if not passes:
        assert "MNIST test digits correctly" in result.message


def test_missing_names_fail_with_a_message(tmp_path):
    results = grade({}, tmp_path, items=None)
    assert failed(results) == ALL_CHECKS
    assert "defines no `build_augmentation`" in results["test_augmentation_layers"].message
