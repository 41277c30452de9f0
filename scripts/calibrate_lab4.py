"""Calibrates the lab4 thresholds (sample quality, reconstructions) from measured runs.

Two stages, so that the slow one can run per seed, in parallel or on another machine:

    # 1. Train the reference solution (the code cells of source/lab4/lab4.ipynb, SEED
    #    replaced) and measure it exactly as the grader does; one JSON per seed.
    python scripts/calibrate_lab4.py train --profile fast --seed 0 --work-dir /tmp/calibrate_lab4
    # 2. Measure the known-bad generators, combine, choose thresholds, write the file.
    python scripts/calibrate_lab4.py summarize --profile fast --work-dir /tmp/calibrate_lab4

`summarize` rewrites only the given profile's entry of autograder/calibration/lab4.json
(format: autograder/calibration.py; `quantities()` derives the thresholds from the stored
runs). A profile never measured stays marked unmeasured, with its fallback profile.
Thresholds: the midpoint between the seeds' worst value and the best known-bad
generator, so that both sides keep the same margin. The script stops unless that margin
is at least `MIN_RELATIVE_MARGIN` of the threshold and at least `SPREAD_MARGIN` standard
deviations of the seeds (a correct notebook then falls past the threshold only far out in
the tail of its seed-to-seed spread).
"""

import argparse
import json
import os
import pathlib
import platform
import re
import sys
import tempfile
import time

COURSE_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(COURSE_ROOT))

from autograder import calibration  # noqa: E402

NOTEBOOK = COURSE_ROOT / "source" / "lab4" / "lab4.ipynb"
CALIBRATION_FILE = COURSE_ROOT / "autograder" / "calibration" / "lab4.json"
DESCRIPTION = "Sample-quality and reconstruction thresholds of lab4's hidden checks, with the runs they come from."
SEED_LINE = re.compile(r"^SEED = \d+$", re.MULTILINE)
MARKER_LINE = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$", re.MULTILINE)
PROBE_SEED = 0
BAD_SEED = 0
MIN_RELATIVE_MARGIN = 0.05  # seeds and bad generators each 5 % or more from the threshold
SPREAD_MARGIN = 3.0  # ... and at least 3 standard deviations of the seeds
MAX_COPY_FRACTION = 0.05
# Bad generators judged by the copy fraction rather than by the Fréchet distance.
COPY_GENERATORS = ("training_copies",)


def solution_source(seed):
    """The notebook's code cells (solution included, check cells left out), SEED replaced."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("grade"):
            continue
        cells.append(MARKER_LINE.sub("", cell.source))
    source = "\n\n".join(cells)
    if len(SEED_LINE.findall(source)) != 1:
        raise ValueError(f"Expected one `SEED = <int>` line in {NOTEBOOK}.")
    return SEED_LINE.sub(f"SEED = {int(seed)}", source)


def training_images(profile):
    import course_lib
    from course_lib.data import load_cifar10

    return load_cifar10("train", limit=course_lib.settings("lab4", profile)["train_examples"])[0]


def exact_test_images():
    from course_lib.data import load_cifar10

    return load_cifar10("test", exact_only=True)[0]


def measure_samples(samples, profile):
    from autograder.quality import sample_quality_report

    return sample_quality_report("cifar10", samples, training_images(profile))


def reconstruction_mse(reconstructions):
    import numpy as np

    return float(np.mean((np.clip(reconstructions, 0.0, 1.0) - exact_test_images()) ** 2))


def train_one_seed(profile, seed, work_dir):
    """Runs the solution with `seed`, probes it like the grader, writes seed<seed>.json."""
    os.environ["COURSE_PROFILE"] = profile
    os.environ.setdefault("MPLBACKEND", "Agg")
    import numpy as np

    from autograder.probes.assemble import run_probes_in_process

    namespace = {"__name__": "__main__"}
    started = time.time()
    exec(compile(solution_source(seed), f"<{NOTEBOOK.name} seed {seed}>", "exec"), namespace)
    run_seconds = time.time() - started
    with tempfile.TemporaryDirectory() as probe_dir:
        statuses = run_probes_in_process(
            "lab4", namespace, probe_dir, seed=PROBE_SEED, only=["samples", "reconstructions"]
        )
        failed = {name: status["error"] for name, status in statuses.items() if not status["ok"]}
        if failed:
            raise RuntimeError(f"Probes failed: {failed}")
        with np.load(pathlib.Path(probe_dir) / "probe.npz") as arrays:
            samples = arrays["samples/samples"]
            reconstructions = arrays["reconstructions/reconstructions"]
    work_dir = pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        work_dir / f"{profile}_seed{seed}.npz", samples=samples, reconstructions=reconstructions
    )
    result = {
        "seed": int(seed),
        "profile": profile,
        "notebook_code_seconds": round(run_seconds, 1),
        "final_training_loss": float(namespace["history"].history["loss"][-1]),
        "machine": machine_description(),
    }
    (work_dir / f"{profile}_seed{seed}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


def machine_description():
    import course_lib

    return f"{course_lib.describe_device()}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def bad_generator_values(profile):
    """Sample quality of every known-bad generator, and reconstruction MSE of bad reconstructors."""
    import numpy as np

    import course_lib
    from autograder.bad_generators import BAD_GENERATOR_NAMES, make_bad_samples

    num_samples = course_lib.settings("grading", profile)["num_samples"]
    train = training_images(profile)
    test = exact_test_images()
    samples = {}
    for name in BAD_GENERATOR_NAMES:
        images = make_bad_samples(name, "cifar10", num_samples, BAD_SEED, train, test)
        samples[name] = measure_samples(images, profile)
    shuffled = test[np.random.default_rng(BAD_SEED).permutation(len(test))]
    reconstructions = {
        "mean_training_image": reconstruction_mse(np.repeat(train.mean(axis=0, keepdims=True), len(test), axis=0)),
        "uniform_noise": reconstruction_mse(np.random.default_rng(BAD_SEED).random(test.shape, dtype=np.float32)),
        "another_test_image": reconstruction_mse(shuffled),
        "untrained_model": untrained_reconstruction_mse(),
    }
    return {"samples": samples, "reconstructions": reconstructions, "num_samples": num_samples}


def untrained_reconstruction_mse():
    """Reconstruction MSE of the notebook's model before training (its decoder's start)."""
    import numpy as np

    import course_lib
    from course_lib import vae as vae_lib

    course_lib.set_seed(BAD_SEED)
    namespace = {"__name__": "__main__"}
    source = solution_source(BAD_SEED)
    # Everything up to the training cell: the functions and classes the notebook defines.
    exec(compile(source.split("encoder = vae_lib.build_encoder")[0], "<lab4 untrained>", "exec"), namespace)
    encoder = vae_lib.build_encoder((32, 32, 3), namespace["LATENT_DIM"], seed=BAD_SEED)
    decoder = namespace["build_cifar_decoder"](namespace["LATENT_DIM"])
    test = exact_test_images()
    z_mean = encoder.predict(test, verbose=0)[0]
    return reconstruction_mse(np.asarray(decoder.predict(z_mean, verbose=0)))


def measure_run(profile, work_dir, seed):
    """Measures the saved samples and reconstructions of one seed, as the checks do."""
    import numpy as np

    work_dir = pathlib.Path(work_dir)
    run = json.loads((work_dir / f"{profile}_seed{seed}.json").read_text())
    with np.load(work_dir / f"{profile}_seed{seed}.npz") as arrays:
        run["sample_quality"] = measure_samples(arrays["samples"], profile)
        run["reconstruction_mse"] = reconstruction_mse(arrays["reconstructions"])
    return run


def summary(values):
    import numpy as np

    values = np.asarray(values, dtype="float64")
    return {
        "per_seed": [round(float(value), 4) for value in values],
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
        "worst": None,
    }


def _midpoint_threshold(worst, best_bad, spread, what, values):
    """The midpoint between the worst seed and the best bad value, if it keeps its margins."""
    threshold = (worst + best_bad) / 2.0
    margin = abs(best_bad - worst) / 2.0
    enough = margin >= MIN_RELATIVE_MARGIN * abs(threshold) and margin >= SPREAD_MARGIN * spread
    if not enough:
        raise SystemExit(
            f"{what}: cannot separate the seeds (worst {worst:.4g}, std {spread:.3g}) from the "
            f"bad generators (best {best_bad:.4g}) with the required margins: {values}"
        )
    return threshold, margin


def upper_threshold(seed_values, bad_values, what):
    """A "lower is better" threshold between the worst seed and the best bad generator."""
    stats = summary(seed_values)
    worst, best_bad = max(seed_values), min(bad_values.values())
    if best_bad <= worst:
        raise SystemExit(f"{what}: a bad generator ({bad_values}) is as good as a seed ({worst:.4g}).")
    threshold, margin = _midpoint_threshold(worst, best_bad, stats["std"], what, bad_values)
    stats.update(worst=round(worst, 4), margin=round(margin, 4), threshold=round(threshold, 4),
                 best_bad=round(best_bad, 4), bad_over_threshold=round(best_bad / threshold, 3))
    return stats


def lower_threshold(seed_values, bad_values, what):
    """A "higher is better" threshold between the worst seed and the best bad generator."""
    stats = summary(seed_values)
    worst, best_bad = min(seed_values), max(bad_values.values())
    if best_bad >= worst:
        raise SystemExit(f"{what}: a bad generator ({bad_values}) is as good as a seed ({worst:.4g}).")
    threshold, margin = _midpoint_threshold(worst, best_bad, stats["std"], what, bad_values)
    stats.update(worst=round(worst, 4), margin=round(margin, 4), threshold=round(threshold, 4),
                 best_bad=round(best_bad, 4))
    return stats


def quantities(details):
    """lab4's calibrated quantities, derived from the stored seed runs and bad generators."""
    runs, bad = details["seed_runs"], details["bad_generators"]
    samples = bad["samples"]
    fd_bad = {name: report["frechet_distance"] for name, report in samples.items() if name not in COPY_GENERATORS}
    score_bad = {name: report["classifier_score"] for name, report in samples.items()
                 if name in ("mean_image", "repeated_sample")}
    copies_bad = {name: samples[name]["copy_fraction"] for name in COPY_GENERATORS}
    frechet = upper_threshold([run["sample_quality"]["frechet_distance"] for run in runs], fd_bad, "Fréchet distance")
    score = lower_threshold([run["sample_quality"]["classifier_score"] for run in runs], score_bad, "classifier score")
    mse = upper_threshold([run["reconstruction_mse"] for run in runs], bad["reconstructions"], "reconstruction MSE")
    what = f"the solution notebook, seeds {[run['seed'] for run in runs]}, probe seed {details['probe_seed']}"
    poor = "autograder/bad_generators.py (training copies excluded: they are real images)"
    midpoint = "arithmetic midpoint between the worst seed and the best bad generator (margin >= 3 std and >= 5%)"
    return {
        "max_frechet_distance": calibration.quantity(
            "Fréchet distance of the prior samples in the CIFAR-10 evaluator's features", "at_most",
            [run["sample_quality"]["frechet_distance"] for run in runs], what, fd_bad, poor, midpoint,
            frechet["threshold"]),
        "min_classifier_score": calibration.quantity(
            "classifier score of the prior samples (CIFAR-10 evaluator)", "at_least",
            [run["sample_quality"]["classifier_score"] for run in runs], what, score_bad,
            "the mean image and one sample repeated", midpoint, score["threshold"]),
        "max_copy_fraction": calibration.quantity(
            "fraction of samples that are near copies of real images", "at_most",
            [run["sample_quality"]["copy_fraction"] for run in runs], what, copies_bad,
            "generators that copy real images", "fixed at 5%, checked to lie between both sides",
            MAX_COPY_FRACTION),
        "max_reconstruction_mse": calibration.quantity(
            "mean squared error of the VAE's reconstructions of test images", "at_most",
            [run["reconstruction_mse"] for run in runs], what, bad["reconstructions"],
            "constant, noisy or unrelated reconstructions and the untrained model", midpoint, mse["threshold"]),
    }


def summarize(profile, work_dir, seeds):
    import course_lib

    runs = [measure_run(profile, work_dir, seed) for seed in seeds]
    details = {"probe_seed": PROBE_SEED, "seed_runs": runs, "bad_generators": bad_generator_values(profile)}
    details["num_samples"] = details["bad_generators"]["num_samples"]
    entry = calibration.profile_entry(
        quantities(details), course_lib.settings("lab4", profile), seeds, details, runs[0]["machine"],
        load_average=round(os.getloadavg()[0], 2))
    calibration.write_profile(CALIBRATION_FILE, "lab4", "scripts/calibrate_lab4.py", DESCRIPTION, profile, entry)
    print(f"Wrote the {profile} entry of {CALIBRATION_FILE}")
    print(json.dumps(entry["thresholds"], indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["train", "summarize"])
    parser.add_argument("--profile", default="fast", choices=["fast", "full"])
    parser.add_argument("--seed", type=int, default=0, help="train: the seed of this run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="summarize: seeds to combine")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "calibrate_lab4"))
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    arguments = parser.parse_args(argv)
    import course_lib  # noqa: F401  (torch backend before keras)

    if arguments.threads:
        import torch

        torch.set_num_threads(arguments.threads)
    if arguments.stage == "train":
        train_one_seed(arguments.profile, arguments.seed, arguments.work_dir)
    else:
        summarize(arguments.profile, arguments.work_dir, arguments.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
