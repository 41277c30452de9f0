"""Calibrates lab3's sample-quality thresholds and writes autograder/calibration/lab3.json.

Usage (from the repository root, with $COURSE_DATA_DIR set):

    python scripts/calibrate_lab3.py --seeds 0 1 2 --probe-seeds 0 1

For every training seed it runs the code cells of the source notebook (the reference
solution, the same code students complete; the graded check cells are skipped) with
`SEED` set to that seed, then runs the grader's `samples` probe with several probe seeds
and measures the decoded prior samples exactly as the hidden checks do. It also measures
known-bad generators (`autograder/bad_generators.py`, plus the notebook's own decoder
before training) and real held-out digits. A threshold lies at the geometric midpoint
between the worst reference run and the best bad generator it must reject; the script
fails unless every reference run passes every check and every bad generator fails one.

Only the active profile (`$COURSE_PROFILE`, default fast) is measured (in the format of
autograder/calibration.py; `quantities()` derives the thresholds from the stored
measurements). The other profile's entry is kept, or, when it was never measured, marked
unmeasured with this profile as its fallback.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import course_lib  # noqa: E402  (torch backend before keras)

from autograder import bad_generators, evaluators  # noqa: E402
from autograder.probes.assemble import run_probes_in_process  # noqa: E402
from autograder import calibration  # noqa: E402
from calibration_common import (  # noqa: E402
    SEED_LINE,
    geometric_midpoint,
    notebook_code_cells,
    summarize,
)
from autograder.quality import sample_quality_report  # noqa: E402
from course_lib.data import load_mnist  # noqa: E402

LAB = "lab3"
DATASET = "mnist"
NOTEBOOK = REPO_ROOT / "source" / LAB / f"{LAB}.ipynb"
CALIBRATION_FILE = calibration.calibration_path(LAB)
DESCRIPTION = "Sample-quality thresholds of lab3's hidden checks, with the measurements they come from."
TRAINING_CELL_MARKER = "vae.fit("
HELD_OUT_EXAMPLES = 5000
# Bad generators that must fail test_sample_quality; training copies must instead fail
# test_samples_are_not_copies (their images are real digits, so they pass the first).
COPY_GENERATORS = ("training_copies",)
# Share of (near) copies allowed. Fixed rather than midway: the copy check compares with a
# random 10,000 of the training images (autograder.quality.MAX_TRAINING_IMAGES), so a pure
# copier shows ~83% copies in the fast profile (12,000 training images) but only ~17% in
# the full one (60,000); 5% rejects it in both, while a VAE's samples are far from copies.
MAX_COPY_FRACTION = 0.05
RECORDED_METRICS = (
    "frechet_distance",
    "classifier_score",
    "marginal_entropy_fraction",
    "mean_max_confidence",
    "copy_fraction",
    "nn_mean_distance",
)
# The run times below include building the figures; the notebook's graded check cells are skipped.


def probe_samples(namespace, probe_seed):
    """Runs the grader's `samples` probe and returns the decoded images."""
    with tempfile.TemporaryDirectory() as folder:
        items = run_probes_in_process(LAB, namespace, folder, seed=probe_seed, only=["samples"])
        if not items["samples"]["ok"]:
            raise RuntimeError(f"The samples probe failed: {items['samples']['error']}")
        with np.load(pathlib.Path(folder) / "probe.npz") as data:
            return data["samples/images"]


def measure(images, training_images):
    report = sample_quality_report(DATASET, images, training_images)
    return {name: round(float(report[name]), 6) for name in RECORDED_METRICS}


def run_reference(seed, probe_seeds, training_images, keep_untrained=False):
    """Runs the notebook with `SEED = seed`; returns per-probe-seed metrics (and more)."""
    namespace = {"__name__": "__main__"}
    untrained = None
    started = time.time()
    for source in notebook_code_cells(NOTEBOOK):
        source = SEED_LINE.sub(f"SEED = {seed}", source)
        if keep_untrained and TRAINING_CELL_MARKER in source:
            untrained = probe_samples(namespace, probe_seeds[0])
        exec(compile(source, f"<{LAB} cell>", "exec"), namespace)
    seconds = time.time() - started
    history = {name: [round(float(value), 3) for value in values] for name, values in namespace["history"].history.items()}
    per_probe_seed = {}
    for probe_seed in probe_seeds:
        per_probe_seed[str(probe_seed)] = measure(probe_samples(namespace, probe_seed), training_images)
    return {"notebook_seconds": round(seconds, 1), "final_epoch": {k: v[-1] for k, v in history.items()},
            "probe_seeds": per_probe_seed}, untrained


THRESHOLD_RULE = (
    "max_frechet_distance and min_classifier_score: geometric midpoint between the worst "
    "reference run (all training seeds x probe seeds) and the best bad generator (training "
    "copies excluded: they are real digits); max_copy_fraction: fixed at 0.05 (a copier is "
    "found at ~83% with 12,000 training images and ~17% with 60,000, since 10,000 of them "
    "are compared), checked to lie between the reference runs and the copier."
)


def choose_thresholds(reference_runs, bad):
    """Picks each threshold between the reference runs and the bad generators."""
    good = [metrics for run in reference_runs.values() for metrics in run["probe_seeds"].values()]
    non_copies = {name: metrics for name, metrics in bad.items() if name not in COPY_GENERATORS}
    worst_good_distance = max(metrics["frechet_distance"] for metrics in good)
    best_bad_distance = min(metrics["frechet_distance"] for metrics in non_copies.values())
    worst_good_score = min(metrics["classifier_score"] for metrics in good)
    # Scores of generators the Fréchet distance does not already reject decide nothing here.
    best_bad_score = max(metrics["classifier_score"] for metrics in non_copies.values())
    worst_good_copies = max(metrics["copy_fraction"] for metrics in good)
    best_bad_copies = min(bad[name]["copy_fraction"] for name in COPY_GENERATORS)
    if not (worst_good_distance < best_bad_distance and worst_good_copies < MAX_COPY_FRACTION < best_bad_copies):
        raise RuntimeError("The reference runs and the bad generators overlap; no threshold separates them.")
    thresholds = {
        "max_frechet_distance": round(geometric_midpoint(worst_good_distance, best_bad_distance), 3),
        "min_classifier_score": round(geometric_midpoint(max(best_bad_score, 1.0), worst_good_score), 3)
        if best_bad_score < worst_good_score
        else round(worst_good_score / 1.25, 3),
        "max_copy_fraction": MAX_COPY_FRACTION,
    }
    margins = {
        "frechet_distance": {
            "worst_reference": worst_good_distance,
            "best_bad_generator": best_bad_distance,
            "threshold_over_worst_reference": round(thresholds["max_frechet_distance"] / worst_good_distance, 3),
            "best_bad_over_threshold": round(best_bad_distance / thresholds["max_frechet_distance"], 3),
        },
        "classifier_score": {
            "worst_reference": worst_good_score,
            "best_bad_generator_except_copies": best_bad_score,
            "worst_reference_over_threshold": round(worst_good_score / thresholds["min_classifier_score"], 3),
        },
        "copy_fraction": {
            "worst_reference": worst_good_copies,
            "best_copying_generator": best_bad_copies,
        },
    }
    return thresholds, margins


def quantities(details):
    """lab3's calibrated quantities, derived from the stored measurements in `details`."""
    runs, bad = details["reference_runs"], details["bad_generators"]
    thresholds, _ = choose_thresholds(runs, bad)
    good = [metrics for run in runs.values() for metrics in run["probe_seeds"].values()]
    what = (f"the solution notebook, training seeds {sorted(runs)} x probe seeds "
            f"{details['probe_seeds']}, {details['num_samples']} samples each")
    non_copies = {name: metrics for name, metrics in bad.items() if name not in COPY_GENERATORS}
    poor_what = "autograder/bad_generators.py and the notebook's decoder before training (copies excluded)"
    rule = details["rule"]
    return {
        "max_frechet_distance": calibration.quantity(
            "Fréchet distance of the prior samples in the MNIST evaluator's features", "at_most",
            [m["frechet_distance"] for m in good], what,
            {name: m["frechet_distance"] for name, m in non_copies.items()}, poor_what, rule,
            thresholds["max_frechet_distance"]),
        "min_classifier_score": calibration.quantity(
            "classifier score of the prior samples (MNIST evaluator)", "at_least",
            [m["classifier_score"] for m in good], what,
            {name: m["classifier_score"] for name, m in non_copies.items()}, poor_what, rule,
            thresholds["min_classifier_score"]),
        "max_copy_fraction": calibration.quantity(
            "fraction of samples that are near copies of real images", "at_most",
            [m["copy_fraction"] for m in good], what,
            {name: bad[name]["copy_fraction"] for name in COPY_GENERATORS}, "generators that copy real digits",
            rule, thresholds["max_copy_fraction"]),
    }


def verdicts(metrics, thresholds):
    quality = (
        metrics["frechet_distance"] <= thresholds["max_frechet_distance"]
        and metrics["classifier_score"] >= thresholds["min_classifier_score"]
    )
    return {"test_sample_quality": quality, "test_samples_are_not_copies": metrics["copy_fraction"] <= thresholds["max_copy_fraction"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--bad-seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=CALIBRATION_FILE)
    arguments = parser.parse_args(argv)
    profile = course_lib.active_profile()
    num_samples = course_lib.settings("grading", profile)["num_samples"]
    train_examples = course_lib.settings(LAB, profile)["train_examples"]
    training_images, _ = load_mnist("train", limit=train_examples)
    all_training_images, _ = load_mnist("train")
    # Real digits no evaluator trained on (see scripts/train_evaluators.py) and, in the
    # fast profile, no reference VAE either.
    held_out_images = all_training_images[-HELD_OUT_EXAMPLES:]

    reference_runs, untrained = {}, None
    for index, seed in enumerate(arguments.seeds):
        run, samples = run_reference(seed, arguments.probe_seeds, training_images, keep_untrained=index == 0)
        reference_runs[str(seed)] = run
        untrained = samples if samples is not None else untrained
        print(f"seed {seed}: {json.dumps(run)}", flush=True)

    bad = {"untrained_notebook_decoder": measure(untrained, training_images)}
    for name in bad_generators.BAD_GENERATOR_NAMES:
        images = bad_generators.make_bad_samples(
            name, DATASET, num_samples, arguments.bad_seed, training_images, held_out_images
        )
        bad[name] = measure(images, training_images)
        print(f"bad generator {name}: {bad[name]}", flush=True)
    real = measure(held_out_images[:num_samples], training_images)
    print(f"real held-out digits: {real}", flush=True)

    thresholds, margins = choose_thresholds(reference_runs, bad)
    failures = []
    for seed, run in reference_runs.items():
        for probe_seed, metrics in run["probe_seeds"].items():
            if not all(verdicts(metrics, thresholds).values()):
                failures.append(f"reference seed {seed} (probe seed {probe_seed}) fails")
    for name, metrics in bad.items():
        if all(verdicts(metrics, thresholds).values()):
            failures.append(f"bad generator {name} passes")
    if failures:
        raise RuntimeError("; ".join(failures))

    good = [metrics for run in reference_runs.values() for metrics in run["probe_seeds"].values()]
    details = {
        "evaluator_weights_sha256": evaluators.read_metadata()[DATASET]["weights_sha256"],
        "num_samples": num_samples,
        "train_examples": train_examples,
        "probe_seeds": arguments.probe_seeds,
        "reference_runs": reference_runs,
        "reference_summary": {name: summarize([m[name] for m in good]) for name in RECORDED_METRICS},
        "bad_generators": bad,
        "real_held_out_digits": real,
        "margins": margins,
        "rule": THRESHOLD_RULE,
    }
    entry = calibration.profile_entry(
        quantities(details), course_lib.settings(LAB, profile), arguments.seeds, details,
        course_lib.describe_device(), load_average=round(os.getloadavg()[0], 2))
    calibration.write_profile(arguments.out, LAB, "scripts/calibrate_lab3.py", DESCRIPTION, profile, entry)
    print(f"thresholds ({profile}): {thresholds}")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
