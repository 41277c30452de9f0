"""Calibrates lab5's trend thresholds and writes autograder/calibration/lab5.json.

Usage (from the repository root):

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python scripts/calibrate_lab5.py --seeds 1337 0 1 2

For every training seed it runs the code cells of the source notebook (the reference
solution; the graded check cells are skipped) with `SEED` set to that seed, then runs the
grader's `trained` probe and measures, per beta, exactly what the hidden checks measure:
the reconstruction error (nats per image, decoded from z_mean), the total KL, the
number of active latent dimensions (mean KL > 0.1 nats) and the MIG of z_mean against
the varying factors.

Known-bad submissions: "beta ignored" (the loss does not weight the KL, so every model is
the beta=1 model; the notebook trains every beta from the same seed, so the models are
identical; pairs of beta=1 models of different seeds are measured too), and the
notebook's own model before training. The ratio thresholds lie at the geometric midpoint
between the worst reference run and the best known-bad value, the MIG rise threshold at
the arithmetic midpoint (a rise can be negative); the script fails unless every
reference run passes every trend check and every known-bad submission fails one.

Only the active profile (`$COURSE_PROFILE`, default fast) is measured; the other
profile's entry is kept from the existing file or, when never measured, set to the
measured thresholds and marked `"measured": false`.
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

from autograder import calibration  # noqa: E402
from autograder.checks import test_lab5 as lab5_checks  # noqa: E402
from autograder.probes.assemble import run_probes_in_process  # noqa: E402
from calibration_common import (  # noqa: E402
    SEED_LINE,
    geometric_midpoint,
    notebook_code_cells,
    summarize,
)
from course_lib import disentanglement  # noqa: E402

LAB = "lab5"
NOTEBOOK = REPO_ROOT / "source" / LAB / f"{LAB}.ipynb"
CALIBRATION_FILE = calibration.calibration_path(LAB)
DESCRIPTION = "Trend thresholds of lab5's hidden checks, with the measurements they come from."
PROBE_SEED = 0
THRESHOLD_RULE = (
    "Each ratio threshold is the geometric midpoint between the worst reference run and the "
    "best known-bad value: 'beta ignored' (every model equal to a beta=1 model, same or other "
    "seed) for the two ratios, the untrained model for the smallest beta's reconstruction "
    "error. The MIG rise (largest beta minus smallest beta) threshold is the arithmetic "
    "midpoint between the smallest reference rise and the largest 'beta ignored' rise (two "
    "beta=1 models of different seeds)."
)


def probe_trained(models):
    """Runs the grader's `trained` probe on `{beta: model}`; returns facts and arrays."""
    with tempfile.TemporaryDirectory() as folder:
        items = run_probes_in_process(LAB, {"models": models}, folder, seed=PROBE_SEED, only=["trained"])
        if not items["trained"]["ok"]:
            raise RuntimeError(f"The trained probe failed: {items['trained']['error']}")
        with np.load(pathlib.Path(folder) / "probe.npz") as data:
            arrays = {key.split("/", 1)[1]: data[key] for key in data.files}
    return items["trained"]["facts"], arrays


def measure_models(models):
    """Per beta (ascending): what the checks measure, plus the MIG for the record."""
    facts, arrays = probe_trained(models)
    rows = {}
    for index, beta in enumerate(facts["betas"]):
        z_mean, z_log_var = arrays[f"z_mean_{index}"], arrays[f"z_log_var_{index}"]
        kl = disentanglement.kl_per_dimension(z_mean, z_log_var)
        rows[repr(beta)] = {
            "reconstruction_error": round(float(arrays[f"reconstruction_error_{index}"].mean()), 4),
            "total_kl": round(float(kl.sum()), 4),
            "kl_per_dimension": [round(float(value), 4) for value in kl],
            "active_dims": int(np.sum(kl > lab5_checks.ACTIVE_KL_NATS)),
            "mig": round(disentanglement.mutual_information_gap(z_mean, arrays["factors"]), 4),
            "mig_per_factor": [round(float(v), 4) for v in disentanglement.mig_per_factor(z_mean, arrays["factors"])],
        }
    return rows


def trends(rows):
    """The ratios the trend checks threshold, from per-beta rows (smallest vs largest beta)."""
    betas = sorted(rows, key=float)
    low, high = rows[betas[0]], rows[betas[-1]]
    return {
        "reconstruction_error_ratio": round(high["reconstruction_error"] / low["reconstruction_error"], 4),
        "kl_ratio": round(high["total_kl"] / max(low["total_kl"], 1e-9), 4),
        "fewer_active_dims": high["active_dims"] < low["active_dims"],
        "mig_difference": round(high["mig"] - low["mig"], 4),
        "smallest_beta_reconstruction_error": low["reconstruction_error"],
    }


def run_reference(seed):
    """Runs the notebook with `SEED = seed`; returns the namespace and the seconds it took."""
    namespace = {"__name__": "__main__"}
    started = time.time()
    for source in notebook_code_cells(NOTEBOOK):
        source = SEED_LINE.sub(f"SEED = {seed}", source)
        exec(compile(source, f"<{LAB} cell>", "exec"), namespace)
    return namespace, round(time.time() - started, 1)


def verdicts(trend, thresholds):
    return {
        "test_mig_rises_with_beta": trend["mig_difference"] >= thresholds["min_mig_rise"],
        "test_trained_models": trend["smallest_beta_reconstruction_error"]
        <= thresholds["max_reconstruction_error_smallest_beta"],
        "test_reconstruction_rises_with_beta": trend["reconstruction_error_ratio"]
        >= thresholds["min_reconstruction_error_ratio"],
        "test_kl_falls_with_beta": trend["kl_ratio"] <= thresholds["max_kl_ratio"] and trend["fewer_active_dims"],
    }


def derive_thresholds(reference_runs, bad):
    """Thresholds and margins from the reference runs and the known-bad submissions.

    Raises:
        RuntimeError: if no threshold separates the reference runs from the known-bad
            submissions, or a reference run fails a check or a known-bad one passes all.
    """
    good = [run["trends"] for run in reference_runs.values()]
    ignored = [entry["trends"] for name, entry in bad.items() if name.startswith("beta_ignored")]
    worst_good_ratio = min(t["reconstruction_error_ratio"] for t in good)
    best_bad_ratio = max(t["reconstruction_error_ratio"] for t in ignored)
    worst_good_kl = max(t["kl_ratio"] for t in good)
    best_bad_kl = min(t["kl_ratio"] for t in ignored)
    worst_good_error = max(t["smallest_beta_reconstruction_error"] for t in good)
    untrained_error = bad["untrained"]["trends"]["smallest_beta_reconstruction_error"]
    worst_good_mig_rise = min(t["mig_difference"] for t in good)
    best_bad_mig_rise = max(t["mig_difference"] for t in ignored)
    if not (best_bad_ratio < worst_good_ratio and worst_good_kl < best_bad_kl and worst_good_error < untrained_error
            and best_bad_mig_rise < worst_good_mig_rise):
        raise RuntimeError("The reference runs and the known-bad submissions overlap; no threshold separates them.")
    thresholds = {
        "min_reconstruction_error_ratio": round(geometric_midpoint(best_bad_ratio, worst_good_ratio), 3),
        "max_kl_ratio": round(geometric_midpoint(worst_good_kl, best_bad_kl), 3),
        "max_reconstruction_error_smallest_beta": round(geometric_midpoint(worst_good_error, untrained_error), 3),
        "min_mig_rise": round((worst_good_mig_rise + best_bad_mig_rise) / 2.0, 3),
    }
    margins = {
        "reconstruction_error_ratio": {
            "worst_reference": worst_good_ratio, "best_beta_ignored": best_bad_ratio,
            "worst_reference_over_threshold": round(worst_good_ratio / thresholds["min_reconstruction_error_ratio"], 3),
        },
        "kl_ratio": {
            "worst_reference": worst_good_kl, "best_beta_ignored": best_bad_kl,
            "threshold_over_worst_reference": round(thresholds["max_kl_ratio"] / worst_good_kl, 3),
        },
        "mig_rise": {
            "worst_reference": worst_good_mig_rise, "best_beta_ignored": best_bad_mig_rise,
            "worst_reference_minus_threshold": round(worst_good_mig_rise - thresholds["min_mig_rise"], 4),
        },
        "smallest_beta_reconstruction_error": {
            "worst_reference": worst_good_error, "untrained": untrained_error,
            "threshold_over_worst_reference": round(thresholds["max_reconstruction_error_smallest_beta"] / worst_good_error, 3),
        },
    }
    failures = [f"reference seed {seed} fails {name}" for seed, run in reference_runs.items()
                for name, passed in verdicts(run["trends"], thresholds).items() if not passed]
    failures += [f"known-bad {name} passes" for name, entry in bad.items() if all(verdicts(entry["trends"], thresholds).values())]
    if failures:
        raise RuntimeError("; ".join(failures))
    return thresholds, margins


def quantities(details):
    """lab5's calibrated quantities, derived from the stored runs in `details`."""
    runs, bad = details["reference_runs"], details["known_bad"]
    thresholds, _ = derive_thresholds(runs, bad)
    good = [run["trends"] for run in runs.values()]
    ignored = {name: entry["trends"] for name, entry in bad.items() if name.startswith("beta_ignored")}
    what = f"the solution notebook, seeds {sorted(runs)}"
    ignored_what = "every model equal to a beta=1 model (the loss ignores beta), same or other seeds"

    def entry(name, description, direction, key, poor, poor_what):
        return calibration.quantity(description, direction, [t[key] for t in good], what,
                                    {n: t[key] for n, t in poor.items()}, poor_what, THRESHOLD_RULE,
                                    thresholds[name])

    return {
        "min_reconstruction_error_ratio": entry(
            "min_reconstruction_error_ratio", "reconstruction error of the largest beta over the smallest's",
            "at_least", "reconstruction_error_ratio", ignored, ignored_what),
        "max_kl_ratio": entry(
            "max_kl_ratio", "total KL of the largest beta over the smallest's", "at_most", "kl_ratio",
            ignored, ignored_what),
        "max_reconstruction_error_smallest_beta": entry(
            "max_reconstruction_error_smallest_beta", "reconstruction error (nats per image) of the smallest beta",
            "at_most", "smallest_beta_reconstruction_error", {"untrained": bad["untrained"]["trends"]},
            "the untrained model"),
        "min_mig_rise": entry(
            "min_mig_rise", "MIG of the largest beta minus that of the smallest", "at_least", "mig_difference",
            ignored, ignored_what),
    }


def write_calibration(path, profile, details, budget, seeds, measured_on, load_average=None, date=None):
    """Writes `profile`'s entry (thresholds derived from `details`), keeping the other profile's."""
    entry = calibration.profile_entry(quantities(details), budget, seeds, details, measured_on,
                                      date=date, load_average=load_average)
    calibration.write_profile(path, LAB, "scripts/calibrate_lab5.py", DESCRIPTION, profile, entry)
    return entry["thresholds"]


def rederive(path, profile):
    """Recomputes `profile`'s thresholds from the measurements stored in `path` (no training)."""
    stored = json.loads(path.read_text())["profiles"][profile]
    details = stored["details"]
    details["margins"] = derive_thresholds(details["reference_runs"], details["known_bad"])[1]
    return write_calibration(path, profile, details, stored["budget"], stored["seeds"], stored["measured_on"],
                             load_average=stored.get("load_average_1min"), date=stored["date"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 0, 1, 2])
    parser.add_argument("--out", type=pathlib.Path, default=CALIBRATION_FILE)
    parser.add_argument(
        "--rederive", action="store_true",
        help="recompute the active profile's thresholds from the runs stored in --out, without training",
    )
    arguments = parser.parse_args(argv)
    profile = course_lib.active_profile()
    if arguments.rederive:
        print(f"thresholds ({profile}, rederived): {rederive(arguments.out, profile)}")
        return 0
    settings = course_lib.settings(LAB, profile)
    betas = sorted(float(beta) for beta in settings["betas"])

    reference_runs, smallest_beta_models, untrained = {}, {}, None
    for seed in arguments.seeds:
        namespace, seconds = run_reference(seed)
        models = namespace["models"]
        rows = measure_models(models)
        reference_runs[str(seed)] = {"notebook_seconds": seconds, "per_beta": rows, "trends": trends(rows)}
        smallest_beta_models[seed] = models[betas[0]]
        if untrained is None:
            course_lib.set_seed(seed)
            fresh = namespace["BetaVAE"](
                namespace["build_encoder"](namespace["LATENT_DIM"]), namespace["build_decoder"](namespace["LATENT_DIM"])
            )
            untrained = measure_models({beta: fresh for beta in betas})
        print(f"seed {seed}: {json.dumps(reference_runs[str(seed)])}", flush=True)

    bad = {}
    for seed, model in smallest_beta_models.items():
        # The notebook seeds every beta alike: with beta ignored, every model is this one.
        rows = measure_models({beta: model for beta in betas})
        bad[f"beta_ignored_seed_{seed}"] = {"per_beta": rows, "trends": trends(rows)}
    seeds = list(smallest_beta_models)
    for first, second in zip(seeds, seeds[1:] + seeds[:1]):
        if first == second:
            continue
        models = {betas[0]: smallest_beta_models[first], betas[-1]: smallest_beta_models[second]}
        models.update({beta: smallest_beta_models[first] for beta in betas[1:-1]})
        rows = measure_models(models)
        bad[f"beta_ignored_seeds_{first}_{second}"] = {"per_beta": rows, "trends": trends(rows)}
    bad["untrained"] = {"per_beta": untrained, "trends": trends(untrained)}
    for name, entry in bad.items():
        print(f"known bad {name}: {json.dumps(entry['trends'])}", flush=True)

    thresholds, margins = derive_thresholds(reference_runs, bad)
    good = [run["trends"] for run in reference_runs.values()]

    per_beta_summary = {}
    for beta in (repr(beta) for beta in betas):
        per_beta_summary[beta] = {
            metric: summarize([run["per_beta"][beta][metric] for run in reference_runs.values()])
            for metric in ("mig", "reconstruction_error", "total_kl", "active_dims")
        }
    mig_rises = [run["trends"]["mig_difference"] > 0 for run in reference_runs.values()]
    details = {
        "probe_seed": PROBE_SEED,
        "reference_runs": reference_runs,
        "per_beta_summary": per_beta_summary,
        "trend_summary": {
            name: summarize([t[name] for t in good])
            for name in ("reconstruction_error_ratio", "kl_ratio", "mig_difference")
        },
        "mig_rises_in_runs": f"{sum(mig_rises)} of {len(mig_rises)}",
        "known_bad": bad,
        "margins": margins,
    }
    write_calibration(arguments.out, profile, details, settings, arguments.seeds, course_lib.describe_device(),
                      load_average=round(os.getloadavg()[0], 2))
    print(f"thresholds ({profile}): {thresholds}")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
