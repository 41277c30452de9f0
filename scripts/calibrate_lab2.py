"""Measures the accuracies that lab2's thresholds are calibrated from.

For each seed, runs the solution notebook (solutions/lab2/lab2.ipynb) in a grading
kernel with `SEED` set after its Setup cell (see calibrate_lab1.py), then the lab's
probes, and computes the accuracy of `model` on the MNIST test digits the probe drew,
as the check does, with the freezing schedule the notebook recorded.

Usage:
    COURSE_DATA_DIR=/work/shared/data python scripts/calibrate_lab2.py --seeds 0 1 2 \
        --out /tmp/lab2-calibration.json [--profile full] [--write-calibration]

    # known-poor, trained and graded like a student's notebook (VARIANTS):
    python scripts/calibrate_lab2.py --seeds --poor tenth_of_budget backbone_never_unfrozen \
        --poor-seeds 0 1 --out /tmp/lab2-poor.json
    python scripts/calibrate_lab2.py --combine /tmp/lab2-calibration.json /tmp/lab2-poor.json \
        --out /tmp/lab2-all.json --write-calibration

With `--write-calibration` the profile's entry of autograder/calibration/lab2.json is
written (`quantities()` states the rule): the known-poor side is the trained variants
below and the untrained model (backbone and head at their initial weights) of each seed.
"""

import pathlib
import sys

import numpy as np

COURSE_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(COURSE_ROOT))
sys.path.insert(0, str(COURSE_ROOT / "scripts"))

import course_lib  # noqa: E402  (selects the torch backend before keras)
from autograder import calibration  # noqa: E402
from calibration_common import seeds_main, summarize  # noqa: E402

DESCRIPTION = "Accuracy threshold of lab2's hidden checks, with the runs it comes from."
TEST_EXAMPLES = 1000
SETUP_CELL = 'SETTINGS = course_lib.settings("lab2")'
BUDGET_FRACTION = 10
MNIST_TRAIN_EXAMPLES = 60000  # what `train_examples=None` (the full profile) means

# Known-poor notebooks: each one cell inserted into the solution (calibration_common.seeded_notebook).
VARIANTS = {
    "tenth_of_budget": {
        "what": f"the solution trained on 1/{BUDGET_FRACTION} of the profile's training digits",
        "after": SETUP_CELL,
        "source": f"SETTINGS = dict(SETTINGS, train_examples=(SETTINGS['train_examples'] or "
                  f"{MNIST_TRAIN_EXAMPLES}) // {BUDGET_FRACTION})",
    },
    "backbone_never_unfrozen": {
        "what": "phase 2 leaves the backbone frozen: only the head trains, in both phases",
        "replace": ("backbone.trainable = True", "backbone.trainable = False"),
    },
}


def untrained_accuracies(seeds, profile):
    """{name: accuracy} of each seed's model as the notebook builds it, before any training."""
    from course_lib.data import load_mnist
    from course_lib.resnet import CIFAR10_WEIGHTS, build_mnist_resnet18

    settings = course_lib.settings("lab2", profile)
    images, labels = load_mnist("test", limit=TEST_EXAMPLES)
    accuracies = {}
    for seed in seeds:
        course_lib.set_seed(seed)
        model = build_mnist_resnet18(settings["image_size"], weights=str(CIFAR10_WEIGHTS), verbose=False,
                                     stages=settings["backbone_stages"])
        predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
        accuracies[f"untrained_model_seed_{seed}"] = round(float(np.mean(predictions == labels)), 4)
    return accuracies


def quantities(details):
    """lab2's calibrated quantity from the runs and the untrained models in `details`."""
    accuracies = [run["accuracy"] for run in details["runs"]]
    poor = dict(details["untrained_models"])
    poor.update({f"{run['variant']} (seed {run['seed']})": run["accuracy"]
                 for run in details.get("poor_runs", [])})
    trained = sorted({run["variant"] for run in details.get("poor_runs", [])})
    poor_what = "; ".join(
        [f"{name}: {VARIANTS[name]['what']}" for name in trained]
        + ["the untrained model (the pretrained backbone and a new head, before any training) of each seed"])
    return {
        "min_accuracy": calibration.quantity(
            "accuracy of `model` on the MNIST test digits the probe draws", "at_least",
            accuracies, f"the solution notebook, seeds {[run['seed'] for run in details['runs']]}",
            poor, poor_what,
            "midpoint between the best known-poor and the worst known-good accuracy",
            round((max(poor.values()) + min(accuracies)) / 2.0, 4)),
    }


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


def untrained_details(seeds, profile):
    """The known-poor side, measured with the runs: the untrained model of each seed."""
    return {"untrained_models": untrained_accuracies(seeds, profile)}


def lab2_summary(runs):
    return {"accuracy": summarize([run["accuracy"] for run in runs])}


def main(argv=None):
    return seeds_main("lab2", argv, DESCRIPTION, lab2_facts, quantities, lab2_summary, untrained_details,
                      VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
