"""Measures the accuracies that lab2's thresholds are calibrated from.

For each seed, runs the solution notebook (solutions/lab2/lab2.ipynb) in a grading
kernel with `SEED` set after its Setup cell (see calibrate_lab1.py), then the lab's
probes, and computes the accuracy of `model` on the MNIST test digits the probe drew,
as the check does, with the freezing schedule the notebook recorded.

Usage:
    COURSE_DATA_DIR=/work/shared/data python scripts/calibrate_lab2.py --seeds 0 1 2 \
        --out /tmp/lab2-calibration.json [--profile full]
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from calibrate_lab1 import DEFAULT_PROFILE, combine, course_lib, run_seed, summarize  # noqa: E402


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
