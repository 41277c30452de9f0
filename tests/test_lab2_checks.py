"""The hidden checks of lab2 on a correct and on deliberately wrong implementations.

No notebook runs here. Namespaces are built with the notebook's `ScheduleRecorder`
(course_lib.schedule) and two tiny training phases of one step each; the
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
from course_lib.resnet import CIFAR10_WEIGHTS, build_mnist_resnet18
from course_lib.schedule import ScheduleRecorder

ROOT = pathlib.Path(__file__).resolve().parents[1]

SOURCE_NOTEBOOK = ROOT / "source" / "lab2" / "lab2.ipynb"
RANDOM_FAST = calibration.thresholds("lab2", "fast")
IMAGE_SIZE = 32
# The model as the notebook builds it: the shipped backbone, the profile's stages.
BACKBONE = {"weights": str(CIFAR10_WEIGHTS), "stages": course_lib.settings("lab2", "fast")["backbone_stages"]}
# The stem's BN, then 4 BN layers per stage and one per downsampling shortcut (stages 2 on).
BACKBONE_BATCH_NORM_LAYERS = 1 + 4 * BACKBONE["stages"] + (BACKBONE["stages"] - 1)
TRAIN_IMAGES = 16
FROZEN_RATE = 1e-3
NUM_CLASSES = 10
NEAREST_SCALE = 1000.0
ALL_CHECKS = set(check_points("lab2"))
NON_ACCURACY_ITEMS = ("augmentation", "model", "batch_norm", "schedule")


@pytest.fixture(scope="module")
def recorder():
    """The ScheduleRecorder class the notebook's fit_phase uses."""
    return ScheduleRecorder


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


class NeverAugment(keras.Sequential):
    """Wrong: the layers are called with training=False, so fit() never augments."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        return super().call(inputs, training=False, mask=mask, **kwargs)


def build_augmentation_never_on():
    return NeverAugment(build_augmentation().layers)


def build_augmentation_reordered():
    """Correct variant: another order, symmetric ranges as tuples, a fill value."""
    return keras.Sequential(
        [
            layers.RandomZoom((-0.1, 0.1), fill_mode="constant", fill_value=0.0),
            layers.RandomTranslation((-0.1, 0.1), (-0.1, 0.1), fill_mode="constant"),
            layers.RandomRotation((-0.05, 0.05), fill_mode="constant"),
        ]
    )


def build_augmentation_added():
    """Correct variant: a Sequential filled with add(), other small factors."""
    augmentation = keras.Sequential(name="augmentation")
    augmentation.add(keras.Input(shape=(28, 28, 1)))
    augmentation.add(layers.RandomRotation(0.08, fill_mode="constant"))
    augmentation.add(layers.RandomTranslation(0.05, 0.05, fill_mode="constant"))
    augmentation.add(layers.RandomZoom(0.15, fill_mode="constant"))
    return augmentation


def _augmentation_with(rotation=0.05, translation=0.1, zoom=0.1):
    return keras.Sequential(
        [
            layers.RandomRotation(rotation, fill_mode="constant"),
            layers.RandomTranslation(translation, translation, fill_mode="constant"),
            layers.RandomZoom(zoom, fill_mode="constant"),
        ]
    )


def build_augmentation_half_turn():
    """Wrong factor: a rotation of up to half a turn (a 6 becomes a 9)."""
    return _augmentation_with(rotation=0.5)


def build_augmentation_half_side_shift():
    """Wrong factor: shifts of up to half the image, strokes leave the frame."""
    return _augmentation_with(translation=0.5)


def build_augmentation_large_zoom():
    """Wrong factor: zooms of up to 60% in or out."""
    return _augmentation_with(zoom=0.6)


def build_augmentation_wider_but_fine():
    """Correct variant: the common MNIST ranges, a larger rotation and asymmetric zoom."""
    return keras.Sequential(
        [
            layers.RandomRotation((-0.1, 0.1), fill_mode="constant"),
            layers.RandomTranslation(0.15, (-0.2, 0.2), fill_mode="constant"),
            layers.RandomZoom((-0.2, 0.25), fill_mode="constant"),
        ]
    )


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


def _refreeze_by_type(model):
    """A correct variant: unfreeze, then refreeze BN by walking the backbone's layers."""
    backbone = model.get_layer("backbone")
    backbone.trainable = True
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


def _bn_frozen_before_unfreezing(model):
    """Wrong order: BN frozen first, then backbone.trainable = True makes it trainable again."""
    backbone = model.get_layer("backbone")
    for layer in batch_norm_layers(backbone):
        layer.trainable = False
    backbone.trainable = True


def make_namespace(digits, recorder, mistake=None, finetune_divisor=10):
    """Trains one step per phase like the notebook, with at most one deliberate mistake."""
    keras.utils.set_random_seed(0)
    model = build_mnist_resnet18(IMAGE_SIZE, augmentation=build_augmentation(), verbose=False, **BACKBONE)
    schedule = {}
    finetune_rate = {"same_rate": FROZEN_RATE, "higher_finetune_rate": FROZEN_RATE * 10}.get(
        mistake, FROZEN_RATE / finetune_divisor
    )
    model.get_layer("backbone").trainable = mistake == "unfrozen_phase1"
    _compile(model, finetune_rate if mistake == "phase1_with_finetune_rate" else FROZEN_RATE)
    history_frozen = _fit(model, digits, schedule, "frozen", recorder)
    if mistake == "backbone_not_unfrozen":
        pass
    elif mistake == "bn_frozen_before_unfreezing":
        _bn_frozen_before_unfreezing(model)
    elif mistake == "refreeze_by_type":
        _refreeze_by_type(model)
    else:
        _finetune_state(model, freeze_batch_norm=mistake != "trainable_batch_norm")
    if mistake != "no_recompile":
        _compile(model, finetune_rate)
    history_finetune = None
    try:
        history_finetune = _fit(model, digits, schedule, "finetune", recorder)
    except ValueError:  # as the notebook's cell would fail; the grader runs the rest
        assert mistake == "no_recompile"
    return {
        "build_augmentation": build_augmentation,
        "model": model,
        "schedule": schedule,
        "history_frozen": history_frozen,
        "history_finetune": history_finetune,
        "FROZEN_LEARNING_RATE": FROZEN_RATE,
        "FINETUNE_LEARNING_RATE": finetune_rate,
        "PRETRAINED_WEIGHTS": BACKBONE["weights"],
    }


@pytest.fixture(scope="module")
def correct(train_digits, recorder):
    return make_namespace(train_digits, recorder)


def with_final_model(correct, augmentation=build_augmentation, mistake=None):
    """The correct namespace with another model, in the state fine-tuning leaves it in.

    For mistakes that do not concern the schedule: the recorded schedule is reused.
    """
    keras.utils.set_random_seed(0)
    model_augmentation = None if mistake == "augmentation_not_applied" else augmentation()
    model = build_mnist_resnet18(IMAGE_SIZE, augmentation=model_augmentation, verbose=False, **BACKBONE)
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


AUG_LAYERS, AUG_ONLY = "test_augmentation_layers", "test_augmentation_training_only"
FROZEN, FINETUNE, BN_MODE, OUTPUT = "test_frozen_phase", "test_finetune_phase", "test_batch_norm_inference_mode", "test_output"
# The planted bugs, as students write them: (id, how the namespace is made, the checks that
# lose all their points (no other check loses any), words of each failing message).
# "model" cases change the final model only (the schedule of the correct run is reused);
# "schedule" cases train both phases with the mistake. The accuracy check is left out
# here (tiny training): it is tested with oracles below.
PLANTED_BUGS = [
    ("augmentation_without_zoom", "model", {"augmentation": build_augmentation_without_zoom},
     {AUG_LAYERS: ["no zoom (keras.layers.RandomZoom)", "Found: RandomRotation, RandomTranslation"]}),
    ("reference_augmentation", "model", {"augmentation": build_augmentation_from_reference},
     {AUG_LAYERS: ["build_mnist_augmentation", "your own"]}),
    ("augmentation_not_applied", "model", {"mistake": "augmentation_not_applied"},
     {AUG_LAYERS: ["`model` has no rotation, translation, zoom", "augmentation=build_augmentation()"]}),
    ("rotation_of_half_a_turn", "model", {"augmentation": build_augmentation_half_turn},
     {AUG_LAYERS: ["RandomRotation(factor=(-0.5, 0.5))", "180 degrees", "not an angle in degrees", "about 0.05"]}),
    ("shift_of_half_the_image", "model", {"augmentation": build_augmentation_half_side_shift},
     {AUG_LAYERS: ["RandomTranslation(height_factor=0.5)", "0.5 of the image side", "not pixels"]}),
    ("zoom_of_sixty_percent", "model", {"augmentation": build_augmentation_large_zoom},
     {AUG_LAYERS: ["RandomZoom(height_factor=0.6)", "more than the 0.3"]}),
    ("augmentation_at_test_time", "model", {"augmentation": build_augmentation_always_on},
     {AUG_ONLY: ["changes images in inference mode", "only in training"]}),
    ("augmentation_never_in_training", "model", {"augmentation": build_augmentation_never_on},
     {AUG_ONLY: ["unchanged in training mode"]}),
    ("logits_output", "model", {"mistake": "logits"}, {OUTPUT: ["not class probabilities"]}),
    ("backbone_not_frozen_in_phase1", "schedule", {"mistake": "unfrozen_phase1"},
     {FROZEN: ["trainable weights: freeze it", "backbone.trainable = False"]}),
    ("phase1_with_the_finetune_rate", "schedule", {"mistake": "phase1_with_finetune_rate"},
     {FROZEN: ["Phase 1 trained with learning rate 0.0001", "FROZEN_LEARNING_RATE = 0.001"]}),
    ("same_rate_in_both_phases", "schedule", {"mistake": "same_rate"}, {FINETUNE: ["should be lower than", "(0.001)"]}),
    ("higher_finetune_rate", "schedule", {"mistake": "higher_finetune_rate"}, {FINETUNE: ["FINETUNE_LEARNING_RATE (0.01)"]}),
    ("backbone_never_unfrozen", "schedule", {"mistake": "backbone_not_unfrozen"},
     {FINETUNE: ["convolutions did not train", "backbone.trainable = True"]}),
    ("no_compile_after_unfreezing", "schedule", {"mistake": "no_recompile"},
     {FINETUNE: ["did not finish training", "Compile the model again", "Unknown variable"]}),
    ("bn_trainable_while_finetuning", "schedule", {"mistake": "trainable_batch_norm"},
     {BN_MODE: ["BatchNormalization layers were trainable", "after unfreezing"]}),
    ("bn_frozen_before_unfreezing", "schedule", {"mistake": "bn_frozen_before_unfreezing"},
     {BN_MODE: [f"{2 * BACKBONE_BATCH_NORM_LAYERS} trainable BN weights", "after unfreezing the backbone"]}),
]
CORRECT_VARIANTS = [
    ("as_the_solution", "model", {}),
    ("augmentation_reordered_with_tuples", "model", {"augmentation": build_augmentation_reordered}),
    ("augmentation_built_with_add", "model", {"augmentation": build_augmentation_added}),
    ("augmentation_with_wider_common_ranges", "model", {"augmentation": build_augmentation_wider_but_fine}),
    ("bn_refrozen_by_type", "schedule", {"mistake": "refreeze_by_type"}),
    ("finetune_rate_twenty_times_lower", "schedule", {"finetune_divisor": 20}),
]


def _namespace(kind, arguments, correct, train_digits, recorder):
    if kind == "model":
        return with_final_model(correct, **arguments)
    return make_namespace(train_digits, recorder, **arguments)


@pytest.mark.slow
@pytest.mark.parametrize("kind, arguments, expected", [case[1:] for case in PLANTED_BUGS], ids=[case[0] for case in PLANTED_BUGS])
def test_planted_bug_loses_exactly_its_checks(correct, train_digits, recorder, tmp_path, kind, arguments, expected):
    results = grade(_namespace(kind, arguments, correct, train_digits, recorder), tmp_path)
    assert failed(results) == set(expected), {name: results[name].message for name in failed(results)}
    for name, words in expected.items():
        assert results[name].points == 0
        for word in words:
            assert word in results[name].message, (word, results[name].message)


@pytest.mark.slow
@pytest.mark.parametrize("kind, arguments", [case[1:] for case in CORRECT_VARIANTS], ids=[case[0] for case in CORRECT_VARIANTS])
def test_correct_variant_keeps_full_marks(correct, train_digits, recorder, tmp_path, kind, arguments):
    results = grade(_namespace(kind, arguments, correct, train_digits, recorder), tmp_path)
    assert failed(results) == set(), {name: results[name].message for name in failed(results)}


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
