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

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile

import nbformat

COURSE_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(COURSE_ROOT))

import course_lib  # noqa: E402  (selects the torch backend before keras)
from autograder import calibration  # noqa: E402
from autograder.checking import ProbeResults  # noqa: E402
from autograder.grade import probe_notebook  # noqa: E402

DEFAULT_PROFILE = "fast"
PROBE_SEED = 0
TIMEOUT_S = 6 * 3600
MEMORY_LIMIT_MB = 12_000
# Threshold rule: the mean of the measured values minus a margin of three standard
# deviations, and at least MIN_MARGIN (a few seeds may underestimate the spread).
MIN_MARGIN = 0.03
SPREAD_FACTOR = 3.0
# The accuracy of an untrained or constant model on 10 balanced classes.
CHANCE_ACCURACY = 0.1
DESCRIPTION = "Accuracy thresholds of lab1's hidden checks, with the runs they come from."


def seeded_notebook(lab, seed):
    """The solution notebook with `SEED = seed` set right after its Setup cell.

    The graded test cells are left out: they check, they do not train.
    """
    notebook = nbformat.read(COURSE_ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    notebook.cells = [cell for cell in notebook.cells if not cell.metadata.get("nbgrader", {}).get("grade")]
    first_code = next(index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    cell = nbformat.v4.new_code_cell(f"SEED = {int(seed)}\ncourse_lib.set_seed(SEED)")
    notebook.cells.insert(first_code + 1, cell)
    return notebook


def run_seed(lab, seed, data_dir, profile=DEFAULT_PROFILE):
    """Executes the seeded notebook and its probes; returns (ProbeResults, notebook seconds)."""
    notebook = seeded_notebook(lab, seed)
    probe_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"calibrate-{lab}-{seed}-"))
    result, probe_run = probe_notebook(notebook, lab, probe_dir, PROBE_SEED, profile=profile, timeout_s=TIMEOUT_S,
                                       memory_limit_mb=MEMORY_LIMIT_MB, data_dir=data_dir)
    if result.errors or not result.exported or not probe_run.ok:
        raise RuntimeError(f"{lab} seed {seed}: the notebook failed: "
                           f"{result.errors or result.stopped or probe_run.problem}")
    probes = ProbeResults(probe_dir, profile=profile)
    return probes, result.seconds


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


def combine(paths):
    """The runs of several per-seed output files, in seed order."""
    runs = [run for path in paths for run in json.loads(pathlib.Path(path).read_text())["runs"]]
    return sorted(runs, key=lambda run: run["seed"])


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


def write_calibration(profile, runs, details_extra=None):
    """Writes `profile`'s entry of autograder/calibration/lab1.json from the per-seed runs."""
    details = dict(details_extra or {}, runs=runs)
    entry = calibration.profile_entry(
        quantities(details), course_lib.settings("lab1", profile), [run["seed"] for run in runs], details,
        course_lib.describe_device(), load_average=round(os.getloadavg()[0], 2))
    calibration.write_profile(calibration.calibration_path("lab1"), "lab1", "scripts/calibrate_lab1.py",
                              DESCRIPTION, profile, entry)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", choices=["fast", "full"], default=DEFAULT_PROFILE)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="summarize the runs of earlier outputs instead of running seeds")
    parser.add_argument("--write-calibration", action="store_true",
                        help="also write the profile's entry of autograder/calibration/lab1.json")
    arguments = parser.parse_args(argv)
    data_dir = os.environ.get("COURSE_DATA_DIR")
    runs = combine(arguments.combine) if arguments.combine else []
    for seed in [] if arguments.combine else arguments.seeds:
        probes, seconds = run_seed("lab1", seed, data_dir, arguments.profile)
        accuracies = lab1_accuracies(probes)
        runs.append({"seed": seed, "bn_accuracy": accuracies["bn"], "plain_accuracy": accuracies["plain"],
                     "notebook_seconds": seconds})
        print(json.dumps(runs[-1]), flush=True)
    report = {
        "profile": arguments.profile,
        "settings": course_lib.settings("lab1", arguments.profile),
        "runs": runs,
        "bn_accuracy": summarize([run["bn_accuracy"] for run in runs]),
        "plain_accuracy": summarize([run["plain_accuracy"] for run in runs]),
        "bn_minus_plain": tolerance_below_zero([run["bn_accuracy"] - run["plain_accuracy"] for run in runs]),
    }
    arguments.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {arguments.out}")
    if arguments.write_calibration:
        write_calibration(arguments.profile, runs)
        print(f"wrote the {arguments.profile} entry of {calibration.calibration_path('lab1')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
