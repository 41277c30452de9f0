"""Course evaluator networks: small CNN classifiers that score generated samples.

One evaluator per data set (MNIST and CIFAR-10). Each is a small convolutional
classifier trained on the real training images by `scripts/train_evaluators.py`. Its
penultimate layer, named ``features``, gives the embedding used for the Fréchet
distance; its class probabilities give the classifier score.

The weights ship in ``autograder/weights/`` together with ``evaluators.json`` (how
they were trained, the measured accuracies and the sha256 of every file) and the
reference feature statistics of real images (``<dataset>_reference_stats.npz``).
Loading checks the sha256, so a corrupt or stale file fails loudly.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import course_lib  # noqa: F401  (selects the torch backend before keras is imported)
import keras
import numpy as np
from keras import layers

DATASETS = ("mnist", "cifar10")
IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = 10
FEATURE_LAYER_NAME = "features"
LOGITS_LAYER_NAME = "logits"
NUM_FEATURES = 128
# Filters of each convolution stage; a stage is `CONVS_PER_STAGE` 3x3 convolutions + pooling.
STAGE_FILTERS = {"mnist": (16, 32, 64), "cifar10": (32, 64, 128)}
# CIFAR-10 takes two convolutions per stage: with one, the evaluator stopped at 73.5% on the
# exact test images, too weak for its features to tell a VAE's samples from the mean image.
CONVS_PER_STAGE = {"mnist": 1, "cifar10": 2}
DROPOUT_RATE = 0.3
# Lower than the Keras default (0.99): the evaluators train for a few hundred steps only,
# and with 0.99 the moving statistics would still remember their initial values.
BATCH_NORM_MOMENTUM = 0.9
# Convolutions run channels-first inside the network: it is the torch-native layout and
# about twice as fast on a CPU; inputs and outputs stay channels-last (NHWC).
INTERNAL_DATA_FORMAT = "channels_first"
PREDICT_BATCH_SIZE = 500

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
METADATA_PATH = WEIGHTS_DIR / "evaluators.json"
REBUILD_COMMAND = "python scripts/train_evaluators.py --dataset {dataset}"

_EVALUATOR_CACHE = {}
_REFERENCE_CACHE = {}


@dataclass
class Evaluator:
    """A loaded evaluator.

    Attributes:
        dataset: "mnist" or "cifar10".
        model: a `keras.Model` mapping images (N, H, W, C) in [0, 1] to the two
            outputs ``[features, logits]``.
        metadata: this data set's entry of ``evaluators.json``.
    """

    dataset: str
    model: keras.Model
    metadata: dict = field(default_factory=dict)


def check_dataset(dataset):
    """Returns ``dataset`` if it names an evaluator data set.

    Raises:
        ValueError: otherwise.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"Unknown evaluator data set. Expected one of {list(DATASETS)}. "
            f"Received: dataset={dataset!r}"
        )
    return dataset


def weights_path(dataset):
    """Returns the path of the shipped weight file of ``dataset``'s evaluator."""
    return WEIGHTS_DIR / f"{check_dataset(dataset)}_evaluator.weights.h5"


def reference_stats_path(dataset):
    """Returns the path of the reference feature statistics of ``dataset``."""
    return WEIGHTS_DIR / f"{check_dataset(dataset)}_reference_stats.npz"


def file_sha256(path):
    """Returns the hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _conv_stage(x, filters, num_convs, name):
    for index in range(num_convs):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            data_format=INTERNAL_DATA_FORMAT,
            name=f"{name}_conv{index + 1}",
        )(x)
        x = layers.BatchNormalization(
            axis=1, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn{index + 1}"
        )(x)
        x = layers.ReLU(name=f"{name}_relu{index + 1}")(x)
    return layers.MaxPooling2D(data_format=INTERNAL_DATA_FORMAT, name=f"{name}_pool")(x)


def build_evaluator(dataset):
    """Builds the (untrained) evaluator network of ``dataset``.

    Args:
        dataset: "mnist" or "cifar10".

    Returns:
        A `keras.Model` from images (N, H, W, C) in [0, 1] to ``[features, logits]``:
        features (N, `NUM_FEATURES`) from the ReLU layer named ``features``, and
        class logits (N, 10).

    Raises:
        ValueError: on an unknown data set.
    """
    check_dataset(dataset)
    inputs = keras.Input(shape=IMAGE_SHAPES[dataset], name="images")
    x = layers.Rescaling(scale=2.0, offset=-1.0, name="to_symmetric_range")(inputs)
    x = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    for stage, filters in enumerate(STAGE_FILTERS[dataset]):
        x = _conv_stage(x, filters, CONVS_PER_STAGE[dataset], name=f"stage{stage + 1}")
    # Flatten keeps where things are in the last (3x3 or 4x4) feature maps; global pooling
    # would lose it and costs accuracy after the short training.
    x = layers.Flatten(name="flatten")(x)
    feature_values = layers.Dense(NUM_FEATURES, activation="relu", name=FEATURE_LAYER_NAME)(x)
    x = layers.Dropout(DROPOUT_RATE, name="dropout")(feature_values)
    logits = layers.Dense(NUM_CLASSES, name=LOGITS_LAYER_NAME)(x)
    return keras.Model(inputs, [feature_values, logits], name=f"{dataset}_evaluator")


def read_metadata():
    """Returns the content of ``evaluators.json`` (an empty dict if it is missing)."""
    if not METADATA_PATH.exists():
        return {}
    with open(METADATA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def _rebuild_hint(dataset):
    return f"Rebuild it with `{REBUILD_COMMAND.format(dataset=dataset)}` from the repository root."


def _checked_file(dataset, path, sha_key):
    """Returns ``path`` after checking it exists and matches its recorded sha256."""
    entry = read_metadata().get(dataset)
    if not path.exists():
        raise FileNotFoundError(
            f"The {dataset} evaluator file is missing. {_rebuild_hint(dataset)} "
            f"Received: path={str(path)!r}"
        )
    if entry is None or sha_key not in entry:
        raise RuntimeError(
            f"{METADATA_PATH.name} has no '{sha_key}' for the {dataset} evaluator, so "
            f"the file cannot be checked. {_rebuild_hint(dataset)} "
            f"Received: metadata_path={str(METADATA_PATH)!r}"
        )
    actual = file_sha256(path)
    if actual != entry[sha_key]:
        raise RuntimeError(
            f"The {dataset} evaluator file is corrupt or stale: its sha256 differs from "
            f"the one recorded in {METADATA_PATH.name}. {_rebuild_hint(dataset)} "
            f"Received: path={str(path)!r}, sha256={actual}, expected={entry[sha_key]}"
        )
    return path


def load_evaluator(dataset):
    """Returns the trained evaluator of ``dataset`` (built once per process).

    Args:
        dataset: "mnist" or "cifar10".

    Returns:
        An `Evaluator`.

    Raises:
        ValueError: on an unknown data set.
        FileNotFoundError: if the weight file is missing.
        RuntimeError: if the weight file does not match its recorded sha256.
    """
    check_dataset(dataset)
    if dataset not in _EVALUATOR_CACHE:
        path = _checked_file(dataset, weights_path(dataset), "weights_sha256")
        model = build_evaluator(dataset)
        model.load_weights(str(path))
        _EVALUATOR_CACHE[dataset] = Evaluator(dataset, model, read_metadata()[dataset])
    return _EVALUATOR_CACHE[dataset]


def clear_cache():
    """Forgets the evaluators and reference statistics loaded in this process."""
    _EVALUATOR_CACHE.clear()
    _REFERENCE_CACHE.clear()


def _check_images(evaluator, images):
    images = np.asarray(images, dtype="float32")
    expected = IMAGE_SHAPES[evaluator.dataset]
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(
            f"The {evaluator.dataset} evaluator expects images shaped (N, "
            f"{', '.join(map(str, expected))}). Received: shape={images.shape}"
        )
    return images


def features_and_probabilities(evaluator, images):
    """Runs the evaluator once and returns both its features and class probabilities.

    Args:
        evaluator: an `Evaluator` from `load_evaluator`.
        images: array (N, H, W, C), values in [0, 1].

    Returns:
        ``(features, probabilities)``: float64 arrays (N, `NUM_FEATURES`) and (N, 10).

    Raises:
        ValueError: if the images do not have the evaluator's shape.
    """
    images = _check_images(evaluator, images)
    feature_values, logits = evaluator.model.predict(
        images, batch_size=PREDICT_BATCH_SIZE, verbose=0
    )
    logits = np.asarray(logits, dtype="float64")
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.asarray(feature_values, dtype="float64"), probabilities


def features(evaluator, images):
    """Returns the ``features`` layer output (N, `NUM_FEATURES`) of ``images``, as float64."""
    return features_and_probabilities(evaluator, images)[0]


def class_probabilities(evaluator, images):
    """Returns the evaluator's class probabilities (N, 10) of ``images``, as float64."""
    return features_and_probabilities(evaluator, images)[1]


def load_reference_stats(dataset):
    """Returns the stored feature statistics of real ``dataset`` images.

    Returns:
        ``(mean, covariance)``: float64 arrays (`NUM_FEATURES`,) and
        (`NUM_FEATURES`, `NUM_FEATURES`).

    Raises:
        FileNotFoundError: if the file is missing.
        RuntimeError: if it does not match its recorded sha256.
    """
    check_dataset(dataset)
    if dataset not in _REFERENCE_CACHE:
        path = _checked_file(dataset, reference_stats_path(dataset), "reference_stats_sha256")
        with np.load(path) as stored:
            _REFERENCE_CACHE[dataset] = (
                np.asarray(stored["mean"], dtype="float64"),
                np.asarray(stored["covariance"], dtype="float64"),
            )
    return _REFERENCE_CACHE[dataset]
