"""Measures the accuracies that lab1's thresholds are calibrated from.

For each seed, runs the solution notebook (solutions/lab1/lab1.ipynb, the same code a
student completes) in a grading kernel, with one cell added after the Setup cell that
sets `SEED` (every model of the notebook is built and trained after
`course_lib.set_seed(SEED)`); then runs the lab's probes and computes, as the checks do,
the accuracy of `model_bn` and `model_plain` on the 1,000 exact CIFAR-10 test images.

Usage:
    COURSE_DATA_DIR=/work/shared/data python scripts/calibrate_lab1.py --seeds 0 1 2 \
        --out /tmp/lab1-calibration.json [--profile full]
    # seeds run in separate processes, then summarized together:
    python scripts/calibrate_lab1.py --out all.json --combine seed0.json seed1.json ...

The output holds one record per seed (accuracies, run time); with
`--write-calibration` the profile's entry of autograder/calibration/lab1.json is written
from it (`quantities()` states the rule; the format is autograder/calibration.py's).
Generic helpers here are reused by calibrate_lab2.py.
"""

import pathlib
import statistics
import sys


COURSE_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(COURSE_ROOT))

sys.path.insert(0, str(COURSE_ROOT / "scripts"))

import course_lib  # noqa: E402,F401  (selects the torch backend before keras)
from autograder import calibration  # noqa: E402
from calibration_common import PROBE_SEED, seeds_main  # noqa: E402

# Threshold rule: the mean of the measured values minus a margin of three standard
# deviations, and at least MIN_MARGIN (a few seeds may underestimate the spread).
MIN_MARGIN = 0.03
SPREAD_FACTOR = 3.0
# The accuracy of an untrained or constant model on 10 balanced classes.
CHANCE_ACCURACY = 0.1
DESCRIPTION = "Accuracy thresholds of lab1's hidden checks, with the runs they come from."


def summarize(values, min_margin=MIN_MARGIN):
    """Mean, spread, margin and threshold (mean minus the margin) of measured values."""
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    margin = max(SPREAD_FACTOR * spread, min_margin)
    return {
        "values": [round(value, 4) for value in values],
        "mean": round(mean, 4),
        "std": round(spread, 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "margin": round(margin, 4),
        "threshold": round(mean - margin, 4),
    }


def tolerance_below_zero(differences, min_margin=MIN_MARGIN):
    """How far below 0 a difference may fall: max(3 std - mean, MIN_MARGIN).

    For "model_bn is not worse than model_plain by more than the margin": with the
    measured differences (BN minus plain), a correct notebook falls below -margin only
    three standard deviations under the mean.
    """
    mean = statistics.fmean(differences)
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return {
        "values": [round(value, 4) for value in differences],
        "mean": round(mean, 4),
        "std": round(spread, 4),
        "min": round(min(differences), 4),
        "margin": round(max(SPREAD_FACTOR * spread - mean, min_margin), 4),
    }


def lab1_accuracies(probes):
    """Accuracy of model_bn and model_plain on the exact test images, as the checks compute it."""
    import numpy as np
    from course_lib.data import load_cifar10

    _, labels = load_cifar10("test", limit=1000, exact_only=True)
    return {
        key: float(np.mean(probes.array("accuracy", f"{key}_predictions") == labels))
        for key in ("bn", "plain")
    }


def quantities(details):
    """lab1's calibrated quantities from the per-seed runs in `details` (see the module docstring)."""
    runs = details["runs"]
    bn = [run["bn_accuracy"] for run in runs]
    plain = [run["plain_accuracy"] for run in runs]
    differences = [b - p for b, p in zip(bn, plain)]
    bn_stats, difference_stats = summarize(bn), tolerance_below_zero(differences)
    seeds = f"the solution notebook, seeds {[run['seed'] for run in runs]}, probe seed {PROBE_SEED}"
    return {
        "min_bn_accuracy": calibration.quantity(
            "accuracy of model_bn on the 1,000 exact CIFAR-10 test images", "at_least",
            bn, seeds, {"untrained or constant model (chance)": CHANCE_ACCURACY},
            "no trained-but-poor model measured yet",
            "mean - max(3 std, 0.03) over the seeds", bn_stats["threshold"]),
        "min_bn_minus_plain": calibration.quantity(
            "accuracy of model_bn minus that of model_plain on the same images", "at_least",
            differences, seeds,
            {"untrained model_bn against the worst plain run": round(CHANCE_ACCURACY - min(plain), 4)},
            "a model_bn left untrained",
            "-(max(3 std - mean, 0.03)) of the per-seed differences", -difference_stats["margin"]),
    }


def lab1_run(probes):
    """One seed's values: the accuracies of model_bn and model_plain."""
    accuracies = lab1_accuracies(probes)
    return {"bn_accuracy": accuracies["bn"], "plain_accuracy": accuracies["plain"]}


def lab1_summary(runs):
    """The per-seed summary written to --out."""
    return {
        "bn_accuracy": summarize([run["bn_accuracy"] for run in runs]),
        "plain_accuracy": summarize([run["plain_accuracy"] for run in runs]),
        "bn_minus_plain": tolerance_below_zero([run["bn_accuracy"] - run["plain_accuracy"] for run in runs]),
    }


def main(argv=None):
    return seeds_main("lab1", argv, DESCRIPTION, lab1_run, quantities, lab1_summary)


if __name__ == "__main__":
    sys.exit(main())
