"""Measures the accuracies that lab2's thresholds are calibrated from.

For each seed, runs the solution notebook (solutions/lab2/lab2.ipynb) in a grading
kernel with `SEED` set after its Setup cell (see calibrate_lab1.py), then the lab's
probes, and computes the accuracy of `model` on the MNIST test digits the probe drew,
as the check does, with the freezing schedule the notebook recorded.

Usage:
    COURSE_DATA_DIR=/work/shared/data python scripts/calibrate_lab2.py --seeds 0 1 2 \
        --out /tmp/lab2-calibration.json [--profile full] [--write-calibration]

With `--write-calibration` the profile's entry of autograder/calibration/lab2.json is
written (`quantities()` states the rule): the known-poor side is the untrained model
(backbone and head at their initial weights) of each seed, measured here too.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from calibrate_lab1 import DEFAULT_PROFILE, combine, course_lib, run_seed, summarize  # noqa: E402
from autograder import calibration  # noqa: E402

DESCRIPTION = "Accuracy threshold of lab2's hidden checks, with the runs it comes from."
TEST_EXAMPLES = 1000


def untrained_accuracies(seeds, image_size=32):
    """{name: accuracy} of the untrained model of each seed on the first test digits."""
    from course_lib.data import load_mnist
    from course_lib.resnet import build_mnist_resnet18

    images, labels = load_mnist("test", limit=TEST_EXAMPLES)
    accuracies = {}
    for seed in seeds:
        course_lib.set_seed(seed)
        model = build_mnist_resnet18(image_size, verbose=False)
        predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
        accuracies[f"untrained_model_seed_{seed}"] = round(float(np.mean(predictions == labels)), 4)
    return accuracies


def quantities(details):
    """lab2's calibrated quantity from the runs and the untrained models in `details`."""
    accuracies = [run["accuracy"] for run in details["runs"]]
    poor = details["untrained_models"]
    return {
        "min_accuracy": calibration.quantity(
            "accuracy of `model` on the MNIST test digits the probe draws", "at_least",
            accuracies, f"the solution notebook, seeds {[run['seed'] for run in details['runs']]}",
            poor, "the untrained model (backbone and head at their initial weights) of each seed",
            "midpoint between the best known-poor and the worst known-good accuracy",
            round((max(poor.values()) + min(accuracies)) / 2.0, 4)),
    }


def write_calibration(profile, runs):
    """Writes `profile`'s entry of autograder/calibration/lab2.json (measures the known-poor side)."""
    seeds = [run["seed"] for run in runs]
    details = {"runs": runs, "untrained_models": untrained_accuracies(seeds)}
    entry = calibration.profile_entry(
        quantities(details), course_lib.settings("lab2", profile), seeds, details,
        course_lib.describe_device(), load_average=round(os.getloadavg()[0], 2))
    calibration.write_profile(calibration.calibration_path("lab2"), "lab2", "scripts/calibrate_lab2.py",
                              DESCRIPTION, profile, entry)


def lab2_facts(probes):
    """Accuracy of the final model on the probe's test digits, and the recorded schedule."""
    from course_lib.data import load_mnist

    _, labels = load_mnist("test")
    indices = probes.array("accuracy", "indices")
    predictions = probes.array("accuracy", "predictions")
    schedule = probes.facts("schedule")["phases"]
    return {
        "accuracy": float(np.mean(predictions == labels[indices])),
        "pretrained": probes.facts("accuracy")["pretrained"],
        "schedule": schedule,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", choices=["fast", "full"], default=DEFAULT_PROFILE)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="summarize the runs of earlier outputs instead of running seeds")
    parser.add_argument("--write-calibration", action="store_true",
                        help="also write the profile's entry of autograder/calibration/lab2.json")
    arguments = parser.parse_args(argv)
    data_dir = os.environ.get("COURSE_DATA_DIR")
    runs = combine(arguments.combine) if arguments.combine else []
    for seed in [] if arguments.combine else arguments.seeds:
        probes, seconds = run_seed("lab2", seed, data_dir, arguments.profile)
        facts = lab2_facts(probes)
        runs.append({"seed": seed, **facts, "notebook_seconds": seconds})
        print(json.dumps(runs[-1]), flush=True)
    report = {
        "profile": arguments.profile,
        "settings": course_lib.settings("lab2", arguments.profile),
        "runs": runs,
        "accuracy": summarize([run["accuracy"] for run in runs]),
    }
    arguments.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {arguments.out}")
    if arguments.write_calibration:
        write_calibration(arguments.profile, runs)
        print(f"wrote the {arguments.profile} entry of {calibration.calibration_path('lab2')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
