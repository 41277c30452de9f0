"""Pieces shared by the calibration scripts that run a lab's solution code per seed."""

import argparse
import json
import os
import pathlib
import re
import shutil
import tempfile

import nbformat

# One definition of each (autograder/calibration.py); re-exported for the scripts.
from autograder.calibration import geometric_midpoint, summary as summarize  # noqa: F401

SEED_LINE = re.compile(r"^SEED = \d+$", re.MULTILINE)


def notebook_code_cells(notebook_path):
    """The code cells of a source notebook, without the graded check cells and magics.

    Raises:
        RuntimeError: if no cell sets `SEED = <int>` (the scripts replace that line).
    """
    notebook = nbformat.read(str(notebook_path), as_version=4)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("grade"):
            continue
        # IPython magics (e.g. %matplotlib inline) are not Python.
        lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    if not any(SEED_LINE.search(source) for source in cells):
        raise RuntimeError(f"No line `SEED = <int>` in {notebook_path}; cannot set the training seed.")
    return cells


COURSE_ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBE_SEED = 0
TIMEOUT_S = 6 * 3600
MEMORY_LIMIT_MB = 12_000


def seeded_notebook(lab, seed, variant=None):
    """The solution notebook with `SEED = seed` set right after its Setup cell.

    The graded test cells are left out: they check, they do not train.

    Args:
        lab: "lab1", ...
        seed: the training seed.
        variant: optional known-poor variant (a planted bug, a smaller training budget),
            run exactly as a student's notebook would be: `{"after": text, "source": code}`
            inserts a cell with `code` right after the first code cell containing `text`;
            `{"replace": (old, new)}` replaces `old` by `new` in the one code cell holding it.

    Raises:
        RuntimeError: if no code cell holds the variant's `after` text, or not exactly one
            holds its `replace` text.
    """
    notebook = nbformat.read(COURSE_ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    notebook.cells = [cell for cell in notebook.cells if not cell.metadata.get("nbgrader", {}).get("grade")]
    first_code = next(index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    cell = nbformat.v4.new_code_cell(f"SEED = {int(seed)}\ncourse_lib.set_seed(SEED)")
    notebook.cells.insert(first_code + 1, cell)
    if variant is None:
        return notebook
    text = variant["replace"][0] if "replace" in variant else variant["after"]
    where = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code" and text in cell.source]
    if "replace" in variant:
        if len(where) != 1:
            raise RuntimeError(f"{len(where)} code cells of {lab}'s solution contain {text!r} (expected 1); "
                               "cannot plant the variant.")
        notebook.cells[where[0]].source = notebook.cells[where[0]].source.replace(*variant["replace"])
    elif not where:
        raise RuntimeError(f"No code cell of {lab}'s solution contains {text!r}; cannot insert the variant.")
    else:
        notebook.cells.insert(where[0] + 1, nbformat.v4.new_code_cell(variant["source"]))
    return notebook


def budget_cell(train_examples, epochs):
    """A variant's cell that shrinks the notebook's training budget (its `SETTINGS` dict)."""
    return f"SETTINGS = dict(SETTINGS, train_examples={train_examples}, epochs={epochs})"


def run_seed(lab, seed, data_dir, profile, variant=None, kernel_threads=None):
    """Executes the seeded notebook in a grading kernel, then its probes (the grader's own path).

    `variant`: see `seeded_notebook`. `kernel_threads`: torch's CPU threads in the kernel
    (None: all cores).

    Returns:
        (ProbeResults, notebook seconds).

    Raises:
        RuntimeError: if the notebook or the probes failed.
    """
    from autograder.checking import ProbeResults
    from autograder.grade import probe_notebook

    notebook = seeded_notebook(lab, seed, variant)
    probe_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"calibrate-{lab}-{seed}-"))
    result, probe_run = probe_notebook(notebook, lab, probe_dir, PROBE_SEED, profile=profile, timeout_s=TIMEOUT_S,
                                       memory_limit_mb=MEMORY_LIMIT_MB, data_dir=data_dir,
                                       kernel_threads=kernel_threads)
    if result.errors or not result.exported or not probe_run.ok:
        raise RuntimeError(f"{lab} seed {seed}: the notebook failed: "
                           f"{result.errors or result.stopped or probe_run.problem}")
    return ProbeResults(probe_dir, profile=profile, lab=lab), result.seconds


# Where and when a run was measured: kept in each run record, so that an entry written later
# from combined runs (another process, day or machine) describes the runs, not the combiner.
RUN_ORIGIN_KEYS = ("measured_on", "date", "load_average_1min")


def run_origin(kernel_threads=None):
    """The machine line, date and 1-minute load of a run measured now, in this process's kernels.

    `kernel_threads`: torch's CPU threads in the grading kernel, written into the machine line
    in place of this process's own count (None: the kernel's default, this process's count).
    """
    import datetime

    import course_lib

    line = course_lib.describe_device()
    if kernel_threads:
        line = re.sub(r"threads=\d+$", f"threads={kernel_threads}", line)
    return {"measured_on": line, "date": datetime.date.today().isoformat(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def entry_origin(runs):
    """(measured_on, date, load_average) of an entry written from `runs`.

    The runs' own records where they have them (distinct machine lines joined by "; ", the
    latest date, the highest load); runs without a record (measured before runs kept one)
    are described by this process, as before.
    """
    here = run_origin()
    origins = [{key: run.get(key, here[key]) for key in RUN_ORIGIN_KEYS} for run in runs] or [here]
    lines = list(dict.fromkeys(origin["measured_on"] for origin in origins))
    loads = [origin["load_average_1min"] for origin in origins if origin["load_average_1min"] is not None]
    return "; ".join(lines), max(origin["date"] for origin in origins), (max(loads) if loads else None)


RUN_FILE = "run.json"


def keep_probes(probes, folder, variant, seed, seconds):
    """Copies one run's probe files to `folder`/<variant or "reference">-seed<seed>/ with its run.json."""
    kept = pathlib.Path(folder) / f"{variant or 'reference'}-seed{seed}"
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("probe.json", "probe.npz"):
        shutil.copy(probes.probe_dir / name, kept / name)
    run = {"variant": variant, "seed": seed, "notebook_seconds": seconds, "profile": probes.profile}
    (kept / RUN_FILE).write_text(json.dumps(run, indent=2))
    return kept


def kept_runs(folders, lab, profile):
    """The runs kept by `keep_probes` in `folders`: [(run.json dict, ProbeResults)], in order.

    Raises:
        RuntimeError: if a folder holds no kept run, or a run of another profile.
    """
    from autograder.checking import ProbeResults

    found = []
    for folder in folders:
        runs = sorted(pathlib.Path(folder).glob(f"*/{RUN_FILE}"))
        if not runs:
            raise RuntimeError(f"No kept runs (*/{RUN_FILE}) in {folder}; expected the --keep-probes folder of "
                               "an earlier run.")
        for path in runs:
            run = json.loads(path.read_text())
            if run["profile"] != profile:
                raise RuntimeError(f"{path.parent} is a {run['profile']!r} run; expected --profile {profile}.")
            found.append((run, ProbeResults(path.parent, profile=profile, lab=lab)))
    return found


def combine(paths, profile, key="runs"):
    """The runs (or, with key="poor_runs", the known-poor runs) of several files, in order.

    Each file is an output of `--out`, or a calibration file (`autograder/calibration/<lab>.json`),
    whose `profile` entry gives the runs it keeps (measured, or `measured_so_far`).

    Raises:
        RuntimeError: if an output file is of another profile, or two files hold the same run
            (variant and seed).
    """
    from autograder import calibration

    runs = []
    for path in paths:
        content = json.loads(pathlib.Path(path).read_text())
        if "profiles" in content:
            runs += calibration.runs_of(path, profile, key)
            continue
        if content.get("profile", profile) != profile:
            raise RuntimeError(f"{path} holds {content['profile']!r} runs; expected --profile {profile}.")
        runs += content.get(key, [])
    names = [(run.get("variant") or "reference", run["seed"]) for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RuntimeError(f"The same run is in more than one of {[str(path) for path in paths]}: "
                           f"{[f'{variant} seed {seed}' for variant, seed in repeated]}.")
    return sorted(runs, key=lambda run: (run.get("variant", ""), run["seed"]))


def seeds_main(lab, argv, description, measure, quantities, summary, poor_details=None, variants=None,
               measure_poor=None):
    """The command line of a script that calibrates `lab` from its seeded solution, graded per seed.

    Args:
        lab: "lab1", ...
        argv: the arguments (None: sys.argv).
        description: the calibration file's description.
        measure: `ProbeResults -> {value name: value}` of one seed's run.
        quantities: `details -> {threshold name: calibration.quantity(...)}` (the lab's rule).
        summary: `runs -> dict` written to --out beside the runs.
        poor_details: optional `(seeds, profile) -> dict` of known-poor measurements that
            need no training (crude generators), added to the details.
        variants: optional `{name: {"what", "after", "source"}}`: known-poor notebooks (a
            planted bug, a fraction of the budget) that `--poor NAME ...` trains and grades
            exactly as the reference (seeds `--poor-seeds`); their measurements go to `poor_runs`.
        measure_poor: `ProbeResults -> dict` of a known-poor run (default: `measure`).
    """
    import course_lib
    from autograder import calibration

    variants = variants or {}
    parser = argparse.ArgumentParser(description=f"Calibrates {lab}'s thresholds from seeded runs of its solution.")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--profile", choices=sorted(course_lib.profiles.PROFILES), default="fast")
    parser.add_argument("--poor", nargs="*", default=[], choices=sorted(variants) or None,
                        help="known-poor variants to train and grade (one run per --poor-seeds seed)")
    parser.add_argument("--poor-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=pathlib.Path, help="the per-seed runs (JSON; needed unless --defer-measure)")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="summarize the runs of earlier outputs (--out files, or a calibration file: "
                             "the runs its profile keeps) instead of running seeds")
    parser.add_argument("--write-calibration", action="store_true",
                        help=f"also write the profile's entry of autograder/calibration/{lab}.json (with fewer "
                             f"than {calibration.MIN_KNOWN_GOOD_RUNS} reference runs: kept as measured_so_far, "
                             "the profile stays unmeasured)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in each grading kernel")
    parser.add_argument("--keep-probes", type=pathlib.Path, metavar="DIR",
                        help="keep each run's probe files in DIR (to measure them again later)")
    parser.add_argument("--defer-measure", action="store_true",
                        help="with --keep-probes: train and probe only (for example while an evaluator is retrained)")
    parser.add_argument("--from-probes", type=pathlib.Path, nargs="+", metavar="DIR",
                        help="measure the runs kept in these --keep-probes folders instead of training")
    parser.add_argument("--retire", metavar="WHAT_CHANGED",
                        help="turn --profile's thresholds back into a fallback to another measured profile, "
                             "saying what changed in the lab since they were measured (no training)")
    arguments = parser.parse_args(argv)
    if arguments.retire is not None:
        path = calibration.calibration_path(lab)
        calibration.retire_profile(path, lab, f"scripts/calibrate_{lab}.py", description, arguments.profile,
                                   arguments.retire)
        print(f"the {arguments.profile} entry of {path} now falls back to "
              f"{calibration.load(lab)['profiles'][arguments.profile]['fallback']!r}")
        return 0
    if arguments.defer_measure and not arguments.keep_probes:
        parser.error("--defer-measure needs --keep-probes DIR (the runs would be lost)")
    if not arguments.out and not arguments.defer_measure:
        parser.error("the following arguments are required: --out (where the measured runs go)")
    data_dir = os.environ.get("COURSE_DATA_DIR")
    runs = combine(arguments.combine, arguments.profile) if arguments.combine else []
    poor_runs = combine(arguments.combine, arguments.profile, "poor_runs") if arguments.combine else []

    def record(variant, seed, probes, seconds):
        if arguments.keep_probes:
            keep_probes(probes, arguments.keep_probes, variant, seed, seconds)
        if arguments.defer_measure:
            return
        origin = {} if arguments.from_probes else run_origin(arguments.threads)
        if variant is None:
            runs.append({"seed": seed, **measure(probes), "notebook_seconds": seconds, **origin})
        else:
            poor_runs.append({"variant": variant, "seed": seed, **(measure_poor or measure)(probes),
                              "notebook_seconds": seconds, **origin})
        print(json.dumps((runs if variant is None else poor_runs)[-1]), flush=True)

    if arguments.from_probes:
        for run, probes in kept_runs(arguments.from_probes, lab, arguments.profile):
            if run["variant"] is not None and run["variant"] not in variants:
                raise RuntimeError(f"Kept run of unknown variant {run['variant']!r}; known: {sorted(variants)}")
            record(run["variant"], run["seed"], probes, run["notebook_seconds"])
    trains = not (arguments.combine or arguments.from_probes)
    for seed in arguments.seeds if trains else []:
        record(None, seed, *run_seed(lab, seed, data_dir, arguments.profile, kernel_threads=arguments.threads))
    for seed in arguments.poor_seeds if trains else []:
        for name in arguments.poor:
            record(name, seed, *run_seed(lab, seed, data_dir, arguments.profile, variants[name],
                                         kernel_threads=arguments.threads))
    if arguments.defer_measure:
        print(f"kept the runs in {arguments.keep_probes}; measure them with --from-probes {arguments.keep_probes}")
        return 0
    report = {"profile": arguments.profile, "settings": course_lib.settings(lab, arguments.profile), "runs": runs,
              **({"poor_runs": poor_runs} if poor_runs else {}), **(summary(runs) if runs else {})}
    arguments.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {arguments.out}")
    if arguments.write_calibration:
        seeds = [run["seed"] for run in runs]
        details = {"runs": runs, **({"poor_runs": poor_runs} if poor_runs else {}),
                   **(poor_details(seeds, arguments.profile) if poor_details else {})}
        path = calibration.calibration_path(lab)
        if len(runs) < calibration.MIN_KNOWN_GOOD_RUNS:
            measured_on, date, load = entry_origin(runs)
            partial = calibration.partial_entry(course_lib.settings(lab, arguments.profile), seeds, details,
                                                measured_on, date=date, load_average=load)
            calibration.write_partial(path, lab, f"scripts/calibrate_{lab}.py", description, arguments.profile,
                                      partial)
            print(f"{len(runs)} reference run(s) (seeds {seeds}), fewer than the "
                  f"{calibration.MIN_KNOWN_GOOD_RUNS} a threshold needs: kept in the {arguments.profile} "
                  f"entry's measured_so_far of {path}; that profile stays unmeasured.")
            return 0
        measured_on, date, load = entry_origin(runs)
        entry = calibration.profile_entry(quantities(details), course_lib.settings(lab, arguments.profile), seeds,
                                          details, measured_on, date=date, load_average=load)
        calibration.write_profile(path, lab, f"scripts/calibrate_{lab}.py", description, arguments.profile, entry)
        print(f"wrote the {arguments.profile} entry of {path}")
    return 0
