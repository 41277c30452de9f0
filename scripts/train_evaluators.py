"""Trains the course evaluator networks and measures the sample-quality baselines.

Usage (from the repository root, with ``COURSE_DATA_DIR`` set):

    python scripts/train_evaluators.py                       # both data sets
    python scripts/train_evaluators.py --dataset mnist --epochs 3 --seed 0
    python scripts/train_evaluators.py --stage calibrate     # baselines only

Stage "train" writes, for each data set, ``autograder/weights/<dataset>_evaluator.weights.h5``,
``<dataset>_reference_stats.npz`` (mean and covariance of the ``features`` layer on real
images) and the data set's entry of ``evaluators.json`` (accuracies, data used, epochs,
seed, date, versions, timings, sha256 of both files).

Stage "calibrate" measures every sample-quality metric for the known-bad generators of
`autograder.bad_generators` and for real held-out images, over several seeds, and writes
``autograder/calibration_baselines.json``.

Data splits (fixed, by row of the original order):

- MNIST: the evaluator trains on ``train[:MNIST_TRAIN_EXAMPLES]``; the reference
  statistics come from the 10,000 test images; ``train[-5000:]`` is never trained on and
  serves as the real held-out images of the calibration.
- CIFAR-10: the evaluator trains on ``train[:40000]``; the reference statistics come
  from ``train[45000:50000]`` (exact images the evaluator never saw); ``train[40000:45000]``
  is the real held-out set of the calibration. Accuracy is measured on the 1,000 exact
  test images, and separately on all 10,000 (9,000 of them JPEG-decoded in the offline copy).
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

import course_lib  # noqa: E402  (before keras: selects the torch backend)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from course_lib import data  # noqa: E402

from autograder import bad_generators, evaluators, quality  # noqa: E402

DATASETS = evaluators.DATASETS
DEFAULT_EPOCHS = {"mnist": 3, "cifar10": 16}
DEFAULT_SEED = 0
BATCH_SIZE = 128
PEAK_LEARNING_RATE = 3e-3
WARMUP_FRACTION = 0.1
MNIST_TRAIN_EXAMPLES = 30_000
MNIST_HELD_OUT = slice(55_000, 60_000)
CIFAR_TRAIN = slice(0, 40_000)
CIFAR_HELD_OUT = slice(40_000, 45_000)
CIFAR_REFERENCE = slice(45_000, 50_000)
# CIFAR-10 augmentation: mirror half the images, shift each by up to this many pixels.
CIFAR_SHIFT_PIXELS = 4
AUGMENTATION = {
    "mnist": "none",
    "cifar10": f"random horizontal flip and random shift by up to {CIFAR_SHIFT_PIXELS} pixels "
    "(zero padding), drawn anew each epoch",
}
CALIBRATION_PATH = REPOSITORY_ROOT / "autograder" / "calibration_baselines.json"
CALIBRATION_SEEDS = (0, 1, 2)
CALIBRATION_NUM_SAMPLES = 1000
CALIBRATION_TRAINING_IMAGES = 10_000
REAL_HELD_OUT_NAME = "real_held_out"
# CIFAR-10 only: the 1,000 exact test images, a second real reference (one draw, no seeds).
REAL_TEST_EXACT_NAME = "real_test_exact"
METRICS = (
    "frechet_distance",
    "classifier_score",
    "mean_max_confidence",
    "marginal_entropy",
    "marginal_entropy_fraction",
    "mean_conditional_entropy",
    "nn_mean_distance",
    "nn_median_distance",
    "nn_min_distance",
    "copy_fraction",
)


def describe_slice(split, rows):
    return f"{split}[{rows.start}:{rows.stop}]"


def load_splits(dataset):
    """Returns the arrays and their descriptions used for one data set."""
    if dataset == "mnist":
        train_images, train_labels = data.load_mnist("train")
        test_images, test_labels = data.load_mnist("test")
        train_rows = slice(0, MNIST_TRAIN_EXAMPLES)
        return {
            "train": (train_images[train_rows], train_labels[train_rows]),
            "train_description": describe_slice("train", train_rows),
            "reference": test_images,
            "reference_description": "test[0:10000] (all MNIST test images)",
            "held_out": train_images[MNIST_HELD_OUT],
            "held_out_description": describe_slice("train", MNIST_HELD_OUT),
            "tests": {
            "test_first_1000": (test_images[:1000], test_labels[:1000]),
            "test_all_10000": (test_images, test_labels),
        },
            "generator_training": train_images[:CALIBRATION_TRAINING_IMAGES],
        }
    train_images, train_labels = data.load_cifar10("train")
    exact_images, exact_labels = data.load_cifar10("test", exact_only=True)
    test_images, test_labels = data.load_cifar10("test")
    return {
        "train": (train_images[CIFAR_TRAIN], train_labels[CIFAR_TRAIN]),
        "train_description": describe_slice("train", CIFAR_TRAIN),
        "reference": train_images[CIFAR_REFERENCE],
        "reference_description": describe_slice("train", CIFAR_REFERENCE)
        + " (exact training images the evaluator did not train on)",
        "held_out": train_images[CIFAR_HELD_OUT],
        "held_out_description": describe_slice("train", CIFAR_HELD_OUT),
        "tests": {
            "test_exact_1000": (exact_images, exact_labels),
            "test_all_10000": (test_images, test_labels),
        },
        "generator_training": train_images[:CALIBRATION_TRAINING_IMAGES],
        "extra_real": {REAL_TEST_EXACT_NAME: exact_images},
    }


def flip_horizontally(images, generator):
    """Mirrors a random half of the images left-right."""
    flips = generator.random(images.shape[0]) < 0.5
    return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def shift_randomly(images, generator, pixels=CIFAR_SHIFT_PIXELS):
    """Shifts each image by up to ``pixels`` in each direction, filling with zeros."""
    count, height, width = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
    rows = generator.integers(0, 2 * pixels + 1, count)[:, None] + np.arange(height)
    columns = generator.integers(0, 2 * pixels + 1, count)[:, None] + np.arange(width)
    return padded[np.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]]


def augment(dataset, images, generator):
    """Returns one epoch's augmented copy of ``images`` (see `AUGMENTATION`)."""
    if dataset != "cifar10":
        return images
    return shift_randomly(flip_horizontally(images, generator), generator)


def train_classifier(dataset, train_images, train_labels, epochs, seed):
    """Trains the evaluator of ``dataset`` and returns it with its timings."""
    course_lib.set_seed(seed)
    model = evaluators.build_evaluator(dataset)
    classifier = keras.Model(model.input, model.outputs[1])
    steps = epochs * int(np.ceil(train_images.shape[0] / BATCH_SIZE))
    warmup_steps = max(1, int(WARMUP_FRACTION * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup_steps, warmup_target=PEAK_LEARNING_RATE, warmup_steps=warmup_steps
    )
    classifier.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    generator = np.random.default_rng(seed)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        images = augment(dataset, train_images, generator)
        history = classifier.fit(images, train_labels, batch_size=BATCH_SIZE, epochs=1, verbose=0)
        print(
            f"[{dataset}] epoch {epoch + 1}/{epochs}: train accuracy "
            f"{history.history['accuracy'][-1]:.4f}, {time.perf_counter() - wall_start:.0f} s",
            flush=True,
        )
    timings = {
        "training_seconds_wall": round(time.perf_counter() - wall_start, 1),
        "training_seconds_cpu": round(time.process_time() - cpu_start, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    return model, timings


def accuracy(dataset, model, images, labels):
    """Returns the fraction of ``images`` whose most probable class is the label."""
    evaluator = evaluators.Evaluator(dataset, model)
    probabilities = evaluators.class_probabilities(evaluator, images)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def write_metadata(dataset, entry):
    metadata = evaluators.read_metadata()
    metadata.setdefault("format_version", 1)
    metadata["feature_layer"] = evaluators.FEATURE_LAYER_NAME
    metadata["num_features"] = evaluators.NUM_FEATURES
    metadata[dataset] = entry
    evaluators.WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(evaluators.METADATA_PATH, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
        handle.write("\n")


def train_dataset(dataset, epochs, seed):
    """Trains one evaluator, saves its files and records them in evaluators.json."""
    splits = load_splits(dataset)
    train_images, train_labels = splits["train"]
    model, timings = train_classifier(dataset, train_images, train_labels, epochs, seed)
    accuracies = {
        name: accuracy(dataset, model, *arrays) for name, arrays in splits["tests"].items()
    }
    print(f"[{dataset}] test accuracy: {accuracies}", flush=True)

    weights_file = evaluators.weights_path(dataset)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(weights_file))
    evaluator = evaluators.Evaluator(dataset, model)
    reference_mean, reference_covariance = quality.feature_statistics(
        evaluators.features(evaluator, splits["reference"])
    )
    stats_file = evaluators.reference_stats_path(dataset)
    np.savez(
        stats_file,
        mean=reference_mean,
        covariance=reference_covariance,
        num_images=np.int64(splits["reference"].shape[0]),
    )
    entry = {
        "architecture": {
            "stage_filters": list(evaluators.STAGE_FILTERS[dataset]),
            "convs_per_stage": evaluators.CONVS_PER_STAGE[dataset],
            "num_features": evaluators.NUM_FEATURES,
            "num_parameters": int(model.count_params()),
        },
        "test_accuracy": accuracies,
        "training_images": splits["train_description"],
        "num_training_images": int(train_images.shape[0]),
        "augmentation": AUGMENTATION[dataset],
        "reference_images": splits["reference_description"],
        "held_out_images": splits["held_out_description"]
        + " (never trained on; real upper reference of the calibration)",
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "peak_learning_rate": PEAK_LEARNING_RATE,
        "seed": seed,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": course_lib.device_info(),
        "weights_file": weights_file.name,
        "weights_bytes": weights_file.stat().st_size,
        "weights_sha256": evaluators.file_sha256(weights_file),
        "reference_stats_file": stats_file.name,
        "reference_stats_sha256": evaluators.file_sha256(stats_file),
        **timings,
    }
    write_metadata(dataset, entry)
    evaluators.clear_cache()
    print(f"[{dataset}] wrote {weights_file.name} ({entry['weights_bytes']} bytes)", flush=True)
    return entry


def summarize(values):
    values = np.asarray(values, dtype="float64")
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def calibrate_dataset(dataset, seeds, num_samples):
    """Measures every metric for each bad generator and for real held-out images."""
    splits = load_splits(dataset)
    training_images = splits["generator_training"]
    held_out = splits["held_out"]
    results = {}
    for name in bad_generators.BAD_GENERATOR_NAMES + (REAL_HELD_OUT_NAME,):
        per_seed = []
        for seed in seeds:
            if name == REAL_HELD_OUT_NAME:
                generator = np.random.default_rng(seed)
                rows = generator.choice(held_out.shape[0], num_samples, replace=False)
                samples = held_out[rows]
            else:
                samples = bad_generators.make_bad_samples(
                    name, dataset, num_samples, seed, training_images, held_out
                )
            report = quality.sample_quality_report(dataset, samples, training_images)
            per_seed.append({"seed": seed, **{metric: report[metric] for metric in METRICS}})
            distance = report["frechet_distance"]
            print(f"[{dataset}] {name} seed {seed}: FD {distance:.3f}", flush=True)
        results[name] = {
            "per_seed": per_seed,
            "summary": {metric: summarize([row[metric] for row in per_seed]) for metric in METRICS},
        }
    for name, images in splits.get("extra_real", {}).items():
        report = quality.sample_quality_report(dataset, images[:num_samples], training_images)
        row = {"seed": None, **{metric: report[metric] for metric in METRICS}}
        results[name] = {"per_seed": [row], "summary": {m: summarize([row[m]]) for m in METRICS}}
        print(f"[{dataset}] {name}: FD {report['frechet_distance']:.3f}", flush=True)
    return results


def calibrate(datasets, seeds, num_samples):
    baselines = {}
    if CALIBRATION_PATH.exists():
        with open(CALIBRATION_PATH, encoding="utf-8") as handle:
            baselines = json.load(handle)
    baselines["protocol"] = {
        "num_samples": num_samples,
        "seeds": list(seeds),
        "generator_training_images": f"train[0:{CALIBRATION_TRAINING_IMAGES}]",
        "nearest_neighbour": (
            f"per-pixel RMS distance to the closest of up to {quality.MAX_TRAINING_IMAGES} "
            f"generator training images; copy if <= {quality.COPY_RMS_THRESHOLD}"
        ),
        "real_held_out": "random subsets of the held-out images named in evaluators.json",
        "summary": "mean, sample std (ddof=1), min, max over seeds",
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": course_lib.device_info(),
    }
    for dataset in datasets:
        baselines[dataset] = calibrate_dataset(dataset, seeds, num_samples)
        with open(CALIBRATION_PATH, "w", encoding="utf-8") as handle:
            json.dump(baselines, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return baselines


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS + ("all",), default="all")
    parser.add_argument("--epochs", type=int, default=None, help="default: 3 (MNIST), 16 (CIFAR-10)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is faster on a busy machine",
    )
    parser.add_argument("--stage", choices=("train", "calibrate", "all"), default="train")
    parser.add_argument("--calibration-seeds", type=int, nargs="+", default=list(CALIBRATION_SEEDS))
    parser.add_argument("--num-samples", type=int, default=CALIBRATION_NUM_SAMPLES)
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    datasets = DATASETS if arguments.dataset == "all" else (arguments.dataset,)
    if arguments.threads is not None:
        import torch

        torch.set_num_threads(arguments.threads)
    print(course_lib.describe_device(), flush=True)
    if arguments.stage in ("train", "all"):
        for dataset in datasets:
            epochs = arguments.epochs or DEFAULT_EPOCHS[dataset]
            train_dataset(dataset, epochs, arguments.seed)
    if arguments.stage in ("calibrate", "all"):
        calibrate(datasets, arguments.calibration_seeds, arguments.num_samples)


if __name__ == "__main__":
    main()
