"""Calibrates lab5's trend thresholds (autograder/calibration/lab5.json).

Every run goes through the grader's own path (`calibration_common.run_seed`): the
solution notebook with `SEED` set is executed in a grading kernel and its exported
models are probed in the sandboxed probe process (`trained` item, probe seed
`PROBE_SEED`). Per beta it records what the hidden checks measure: the reconstruction
error (nats per image, decoded from z_mean), the total KL, the active latent dimensions
(mean KL > 0.1 nats) and the MIG of z_mean against the varying factors.

Usage (from the repository root, `source scripts/env.sh` first):

    # known-good: the solution, one run per training seed
    python scripts/calibrate_lab5.py --profile fast --seeds 1337 0 1 2 --out /tmp/l5-good.json
    # known-poor, trained and graded like a student's notebook
    python scripts/calibrate_lab5.py --profile fast --seeds --poor beta_ignored untrained \\
        --poor-seeds 1337 --out /tmp/l5-poor.json
    # the thresholds, from both files (no training)
    python scripts/calibrate_lab5.py --profile fast --combine /tmp/l5-good.json /tmp/l5-poor.json \\
        --out /tmp/l5.json --write-calibration

Known-poor: "beta ignored" (the loss does not weight the KL: the notebook trains every beta
from the same seed, so all its models are the smallest beta's model; trained as a variant,
and also formed from the reference runs: each run's smallest-beta model in every place, and
pairs of smallest-beta models of two seeds, which show the seed-to-seed spread), and the
notebook's models before training. The ratio thresholds lie at the geometric midpoint
between the worst reference run and the best known-poor value, the MIG rise threshold at
the arithmetic midpoint (a rise can be negative); `derive_thresholds` refuses thresholds
under which a reference run fails a check or a known-poor model passes them all.
"""

import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import course_lib  # noqa: E402, F401  (torch backend before keras)

from autograder import calibration  # noqa: E402
from autograder.checks import test_lab5 as lab5_checks  # noqa: E402
from calibration_common import PROBE_SEED, geometric_midpoint, seeds_main, summarize  # noqa: E402
from course_lib import disentanglement  # noqa: E402

LAB = "lab5"
DESCRIPTION = "Trend thresholds of lab5's hidden checks, with the measurements they come from."
LOSS_CELL = "def beta_vae_loss("
TRAINING_CELL = "models, histories = {}, {}"
THRESHOLD_RULE = (
    "Each ratio threshold is the geometric midpoint between the worst reference run and the "
    "best known-poor value: 'beta ignored' (every model equal to a beta=1 model: trained so, "
    "or formed from the reference runs of one seed or of two seeds) for the two ratios, the "
    "untrained models for the smallest beta's reconstruction error. The MIG rise (largest beta "
    "minus smallest beta) threshold is the arithmetic midpoint between the smallest reference "
    "rise and the largest 'beta ignored' rise."
)
VARIANTS = {
    "beta_ignored": {
        "what": "a loss that weights the KL by 1 whatever the model's beta",
        "after": LOSS_CELL,
        "source": ("_solution_beta_vae_loss = beta_vae_loss\n\n\n"
                   "def beta_vae_loss(images, reconstructions, z_mean, z_log_var, beta):  # planted: beta ignored\n"
                   "    return _solution_beta_vae_loss(images, reconstructions, z_mean, z_log_var, 1.0)\n"),
    },
    "untrained": {
        "what": "the notebook's models as built, before any training (same seed)",
        "after": TRAINING_CELL,
        "source": ("for beta in models:  # planted: the models before training\n"
                   "    course_lib.set_seed(SEED)\n"
                   "    models[beta] = BetaVAE(build_encoder(LATENT_DIM), build_decoder(LATENT_DIM), beta=beta)\n"),
    },
}


def per_beta_rows(betas, arrays):
    """Per beta (ascending): what the checks measure, plus the MIG for the record.

    Args:
        betas: the probe's betas, in its order.
        arrays: `{name: array}` of the `trained` probe item (z_mean_i, z_log_var_i,
            reconstruction_error_i, factors).
    """
    rows = {}
    for index, beta in enumerate(betas):
        z_mean, z_log_var = arrays[f"z_mean_{index}"], arrays[f"z_log_var_{index}"]
        kl = disentanglement.kl_per_dimension(z_mean, z_log_var)
        rows[repr(float(beta))] = {
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


def measure(probes):
    """One graded run: the per-beta rows of the `trained` probe and their trends."""
    facts = probes.facts("trained")
    prefix = "trained/"
    arrays = {key[len(prefix):]: value for key, value in probes.arrays.items() if key.startswith(prefix)}
    rows = per_beta_rows(facts["betas"], arrays)
    return {"per_beta": rows, "trends": trends(rows)}


def beta_ignored_from_runs(runs):
    """"Beta ignored" models formed from reference runs: {name: trends}.

    With beta ignored every model is the smallest beta's model of the same seed, so each
    run gives one (all rows its smallest beta's); pairs of seeds (cycling through the runs
    sorted by seed) put one seed's smallest-beta model at the smallest beta and another's
    at the largest, the seed-to-seed spread a trend must exceed.
    """
    runs = sorted(runs, key=lambda run: run["seed"])
    lowest = [run["per_beta"][min(run["per_beta"], key=float)] for run in runs]
    highest_beta = [max(run["per_beta"], key=float) for run in runs]
    ignored = {}
    for run, low, high_beta in zip(runs, lowest, highest_beta):
        low_beta = min(run["per_beta"], key=float)
        ignored[f"beta_ignored_seed_{run['seed']}"] = trends({low_beta: low, high_beta: low})
    for index, (first, second) in enumerate(zip(runs, runs[1:] + runs[:1])):
        if first is second:
            continue
        low_beta = min(first["per_beta"], key=float)
        ignored[f"beta_ignored_seeds_{first['seed']}_{second['seed']}"] = trends(
            {low_beta: lowest[index], highest_beta[index]: lowest[(index + 1) % len(runs)]})
    return ignored


def _poor(details, variant):
    return {f"{variant} (seed {run['seed']})": run["trends"] for run in details.get("poor_runs", [])
            if run["variant"] == variant}


def verdicts(trend, thresholds):
    return {
        "test_mig_rises_with_beta": trend["mig_difference"] >= thresholds["min_mig_rise"],
        "test_trained_models": trend["smallest_beta_reconstruction_error"]
        <= thresholds["max_reconstruction_error_smallest_beta"],
        "test_reconstruction_rises_with_beta": trend["reconstruction_error_ratio"]
        >= thresholds["min_reconstruction_error_ratio"],
        "test_kl_falls_with_beta": trend["kl_ratio"] <= thresholds["max_kl_ratio"] and trend["fewer_active_dims"],
    }


def derive_thresholds(details):
    """Thresholds from the reference runs and the known-poor models in `details`.

    Raises:
        calibration.CalibrationError: if no threshold separates them, a reference run fails
            a check, or a known-poor model passes them all.
    """
    good = {run["seed"]: run["trends"] for run in details["runs"]}
    ignored = {**beta_ignored_from_runs(details["runs"]), **_poor(details, "beta_ignored")}
    untrained = _poor(details, "untrained")
    if not untrained:
        raise calibration.CalibrationError("lab5 needs an `untrained` known-poor run (--poor untrained).")
    worst = {
        "ratio": min(t["reconstruction_error_ratio"] for t in good.values()),
        "kl": max(t["kl_ratio"] for t in good.values()),
        "error": max(t["smallest_beta_reconstruction_error"] for t in good.values()),
        "mig": min(t["mig_difference"] for t in good.values()),
    }
    best = {
        "ratio": max(t["reconstruction_error_ratio"] for t in ignored.values()),
        "kl": min(t["kl_ratio"] for t in ignored.values()),
        "error": min(t["smallest_beta_reconstruction_error"] for t in untrained.values()),
        "mig": max(t["mig_difference"] for t in ignored.values()),
    }
    if not (best["ratio"] < worst["ratio"] and worst["kl"] < best["kl"] and worst["error"] < best["error"]
            and best["mig"] < worst["mig"]):
        raise calibration.CalibrationError(
            f"lab5: the reference runs (worst {worst}) and the known-poor models (best {best}) overlap; "
            "no threshold separates them.")
    thresholds = {
        "min_reconstruction_error_ratio": round(geometric_midpoint(best["ratio"], worst["ratio"]), 3),
        "max_kl_ratio": round(geometric_midpoint(worst["kl"], best["kl"]), 3),
        "max_reconstruction_error_smallest_beta": round(geometric_midpoint(worst["error"], best["error"]), 3),
        "min_mig_rise": round((worst["mig"] + best["mig"]) / 2.0, 3),
    }
    failures = [f"reference seed {seed} fails {name}" for seed, trend in good.items()
                for name, passed in verdicts(trend, thresholds).items() if not passed]
    failures += [f"known-poor {name} passes" for name, trend in {**ignored, **untrained}.items()
                 if all(verdicts(trend, thresholds).values())]
    if failures:
        raise calibration.CalibrationError("lab5: " + "; ".join(failures))
    return thresholds, ignored, untrained


def quantities(details):
    """lab5's calibrated quantities, derived from the stored runs in `details`."""
    thresholds, ignored, untrained = derive_thresholds(details)
    good = [run["trends"] for run in details["runs"]]
    what = f"the solution notebook, seeds {[run['seed'] for run in details['runs']]}, probe seed {details['probe_seed']}"
    ignored_what = ("every model equal to a beta=1 model: trained with the KL weighted by 1 "
                    f"({VARIANTS['beta_ignored']['what']}), or formed from the reference runs of one or two seeds")

    def entry(name, description, direction, key, poor, poor_what):
        return calibration.quantity(description, direction, [t[key] for t in good], what,
                                    {n: t[key] for n, t in poor.items()}, poor_what, details["rule"],
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
            "at_most", "smallest_beta_reconstruction_error", untrained, VARIANTS["untrained"]["what"]),
        "min_mig_rise": entry(
            "min_mig_rise", "MIG of the largest beta minus that of the smallest", "at_least", "mig_difference",
            ignored, ignored_what),
    }


def details_extra(seeds, profile):
    """What every lab5 entry records beside the runs (no crude generators: the trends need models)."""
    return {"probe_seed": PROBE_SEED, "rule": THRESHOLD_RULE}


def run_summary(runs):
    """Per beta and per trend: mean, spread and range over the runs (written to --out)."""
    betas = sorted(runs[0]["per_beta"], key=float)
    return {
        "per_beta": {beta: {metric: summarize([run["per_beta"][beta][metric] for run in runs])
                            for metric in ("mig", "reconstruction_error", "total_kl", "active_dims")}
                     for beta in betas},
        "trends": {name: summarize([run["trends"][name] for run in runs])
                   for name in ("reconstruction_error_ratio", "kl_ratio", "mig_difference")},
        "mig_rises_in_runs": f"{sum(run['trends']['mig_difference'] > 0 for run in runs)} of {len(runs)}",
    }


def main(argv=None):
    return seeds_main(LAB, argv, DESCRIPTION, measure, quantities, run_summary, details_extra, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
