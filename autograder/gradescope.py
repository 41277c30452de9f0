"""Gradescope: the autograder zip for a lab, and what its run_autograder does.

`write_bundle` (``python -m autograder gradescope-bundle``) writes a zip holding ``setup.sh``,
``run_autograder``, ``gradescope.json`` (the lab, profile, visibility and probe secret chosen
when building it) and the course files grading needs (course_lib/, autograder/, pyproject.toml,
README.md; optionally data/). No source notebooks, solutions, tests or repository metadata.

On Gradescope, ``run_autograder`` calls ``python -m autograder.gradescope run``, i.e.
`run_autograder` below: it grades /autograder/submission with ``python -m autograder grade``
into a scratch folder and copies that submission's results.json to
/autograder/results/results.json. Whatever goes wrong, a results.json (score 0 and the error
in "output") is left for the student.

Environment (all optional):
    GRADESCOPE_ROOT: the Gradescope tree (default /autograder).
    COURSE_PYTHON: the Python that run_autograder uses (default the venv setup.sh creates,
        $GRADESCOPE_ROOT/course-venv/bin/python).
    COURSE_GRADE_COMMAND: replaces ``python -m autograder grade`` (split like a shell
        command line; the submission and the --out/--lab/--profile options are appended).
    COURSE_GRADESCOPE_VISIBILITY: default visibility of the per-check results at bundle time.
"""

import argparse
import json
import os
import pathlib
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile

from autograder import reports
from autograder.registry import LABS, PACKAGE_DIR

ROOT_ENV_VAR = "GRADESCOPE_ROOT"
DEFAULT_ROOT = "/autograder"
PYTHON_ENV_VAR = "COURSE_PYTHON"
GRADE_COMMAND_ENV_VAR = "COURSE_GRADE_COMMAND"
CONFIG_FILE = "gradescope.json"
VENV_NAME = "course-venv"
PROFILES = ("fast", "full")
BUNDLE_DIRS = ("course_lib", "autograder")
BUNDLE_FILES = ("pyproject.toml", "README.md")
EXCLUDED_PARTS = {"__pycache__", ".work", ".ipynb_checkpoints", ".pytest_cache", ".git"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
EXECUTABLE = 0o100755 << 16
REGULAR = 0o100644 << 16
OUTPUT_TAIL_CHARS = 3000

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope image setup for the course autograder (written by
# `python -m autograder gradescope-bundle`). Mirrors the course's scripts/setup.sh: a venv,
# the CPU build of torch (Gradescope has no GPU), the course package, bubblewrap for the
# grading sandbox.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="${COURSE_VENV:-$ROOT/course-venv}"
CPU_TORCH="${COURSE_CPU_TORCH:-torch==2.13.0}"
TORCH_INDEX="${COURSE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
export DEBIAN_FRONTEND=noninteractive

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing python3-venv and bubblewrap (grading sandbox)"
  apt-get update -q
  apt-get install -y -q python3 python3-venv python3-pip bubblewrap
fi

[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pip_install --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing the CPU build of torch ($CPU_TORCH)"
  # The CPU-only wheels first (PyPI's Linux wheels pull in CUDA); plain PyPI otherwise.
  pip_install "$CPU_TORCH" --index-url "$TORCH_INDEX" || pip_install "$CPU_TORCH"
fi

# Editable, as in scripts/setup.sh: the checks and calibration files stay in $SOURCE.
if ls "$SOURCE"/data/*.npz >/dev/null 2>&1; then
  echo "setup: installing the course package (data bundled in $SOURCE/data)"
  pip_install -e "$SOURCE"
else
  echo "setup: installing the course package; no data bundled: preparing it with tensorflow-datasets"
  pip_install -e "$SOURCE[prepare]"
  mkdir -p "$ROOT/tfds"
  TFDS_DATA_DIR="$ROOT/tfds" "$VENV/bin/python" -c "
from course_lib import data
for name in ('mnist', 'cifar10'):
    print('setup: prepared', name, 'in', data.prepare_with_tfds(name))
" || echo "setup: WARNING: data could not be prepared; grading will try again at run time"
fi
"$VENV/bin/python" -c "import course_lib, autograder; print('setup: ready:', course_lib.describe_device())"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope entry point (written by `python -m autograder gradescope-bundle`): grades the
# notebook in $ROOT/submission and writes $ROOT/results/results.json, always.
ROOT="${GRADESCOPE_ROOT:-/autograder}"
PYTHON="${COURSE_PYTHON:-$ROOT/course-venv/bin/python}"
mkdir -p "$ROOT/results"
if [ -d "$ROOT/tfds" ] && [ -z "${TFDS_DATA_DIR:-}" ]; then export TFDS_DATA_DIR="$ROOT/tfds"; fi
export GRADESCOPE_ROOT="$ROOT" KERAS_BACKEND=torch
"$PYTHON" -m autograder.gradescope run --root "$ROOT"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
  # Python itself could not start: still tell the student something.
  printf '%s\n' "{\"score\": 0.0, \"execution_time\": 0, \"output\": \"The autograder could not start (exit status $status). Your submission was not graded; please tell the course staff.\", \"output_format\": \"text\", \"visibility\": \"visible\", \"stdout_visibility\": \"hidden\", \"tests\": []}" > "$ROOT/results/results.json"
fi
exit 0
"""


def repository_root():
    """The course checkout this package runs from (where pyproject.toml is).

    Returns:
        The Path of the checkout.

    Raises:
        FileNotFoundError: if the package is not in a checkout (an installed copy only).
    """
    root = PACKAGE_DIR.parent
    missing = [name for name in BUNDLE_DIRS + BUNDLE_FILES if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"The autograder package is not inside a course checkout: {root} lacks {missing}. "
            "Expected a checkout with course_lib/, autograder/, pyproject.toml and README.md "
            "(an editable install, as scripts/setup.sh makes)."
        )
    return root


def bundle_members(repo_root):
    """The course files that go into the bundle, as (name in the zip, Path) pairs.

    Args:
        repo_root: the course checkout.

    Returns:
        A sorted list of (str, Path): course_lib/ and autograder/ (without caches and
        scratch folders), pyproject.toml and README.md.
    """
    repo_root = pathlib.Path(repo_root)
    members = [(name, repo_root / name) for name in BUNDLE_FILES]
    for folder in BUNDLE_DIRS:
        for path in sorted((repo_root / folder).rglob("*")):
            relative = path.relative_to(repo_root)
            if not path.is_file() or path.suffix in EXCLUDED_SUFFIXES:
                continue
            if any(part in EXCLUDED_PARTS or part.endswith(".egg-info") for part in relative.parts):
                continue
            members.append((relative.as_posix(), path))
    return sorted(members)


def _data_members(data_dir):
    data_dir = pathlib.Path(data_dir)
    files = sorted(path for path in data_dir.glob("*.npz") if path.is_file()) if data_dir.is_dir() else []
    if not files:
        raise ValueError(f"--data-dir must be a folder holding the course's .npz data files "
                         f"(mnist.npz, cifar10.npz). Received: {data_dir} (no .npz file in it)")
    return [(f"data/{path.name}", path) for path in files]


def _add_text(archive, name, text, mode):
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = mode
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, text)


def write_bundle(lab, out, profile="fast", visibility=None, data_dir=None, repo_root=None):
    """Writes the Gradescope autograder zip for one lab.

    Args:
        lab: the lab name ("lab1" ... ), one of the registry's labs.
        out: the zip file to write (relative paths are to the working directory); its
            folder is created if missing.
        profile: the run profile the grader uses on Gradescope, "fast" or "full".
        visibility: Gradescope visibility of the per-check results; None reads
            $COURSE_GRADESCOPE_VISIBILITY (default "after_due_date").
        data_dir: optional folder of .npz data files to include (as data/).
        repo_root: the course checkout to bundle (default: the one this package is in).

    Returns:
        The Path of the written zip.

    Raises:
        ValueError: for an unknown lab or profile, an invalid visibility, or a data folder
            without .npz files.
        FileNotFoundError: if there is no course checkout to bundle.
    """
    if lab not in LABS:
        raise ValueError(f"Unknown lab. Expected one of {sorted(LABS)}. Received: {lab!r}")
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile. Expected one of {list(PROFILES)}. Received: {profile!r}")
    visibility = reports.gradescope_visibility(visibility)
    repo_root = pathlib.Path(repo_root) if repo_root else repository_root()
    members = bundle_members(repo_root)
    if data_dir is not None:
        members += _data_members(data_dir)
    config = {
        "lab": lab,
        "profile": profile,
        "visibility": visibility,
        "data": data_dir is not None,
        # The probe inputs depend on this secret; the zip is for the course staff only.
        "grader_secret": secrets.token_hex(16),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = pathlib.Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            _add_text(archive, "setup.sh", SETUP_SH, EXECUTABLE)
            _add_text(archive, "run_autograder", RUN_AUTOGRADER, EXECUTABLE)
            _add_text(archive, CONFIG_FILE, json.dumps(config, indent=2) + "\n", REGULAR)
            for name, path in members:
                if path.resolve() == out:
                    continue
                archive.write(path, name)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------ run_autograder


def failure_results(message, seconds=0.0):
    """A results.json content for a submission that could not be graded: score 0.

    Args:
        message: what went wrong (plain text, shown to the student).
        seconds: how long the attempt took.

    Returns:
        A dict following the Gradescope results.json specification.
    """
    return {
        "score": 0.0,
        "execution_time": int(seconds),
        "output": message,
        "output_format": reports.OUTPUT_FORMAT,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
    }


def _write_results(path, results):
    reports.write_atomic(path, json.dumps(results, indent=2) + "\n")


def read_config(root):
    """Reads the bundle's gradescope.json under `root`/source.

    Args:
        root: the Gradescope tree (Path).

    Returns:
        The config dict (lab, profile, visibility, data, grader_secret).

    Raises:
        ValueError: if the file is missing, not JSON, or its lab/profile/visibility is invalid.
    """
    path = pathlib.Path(root) / "source" / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"The autograder bundle's {CONFIG_FILE} could not be read at {path}: {error}. "
                         "Expected the file written by `python -m autograder gradescope-bundle`.") from error
    if not isinstance(config, dict) or config.get("lab") not in LABS or config.get("profile") not in PROFILES:
        raise ValueError(f"{path} must name a lab (one of {sorted(LABS)}) and a profile "
                         f"(one of {list(PROFILES)}). Received: {config!r}")
    reports.gradescope_visibility(config.get("visibility"))
    return config


def grade_command(submission, out_dir, lab, profile):
    """The command that grades one submission (``$COURSE_GRADE_COMMAND`` can replace its start).

    Args:
        submission: the submission folder or notebook.
        out_dir: the report folder to write.
        lab: the lab name.
        profile: "fast" or "full".

    Returns:
        The argument list.
    """
    override = os.environ.get(GRADE_COMMAND_ENV_VAR, "").strip()
    start = shlex.split(override) if override else [sys.executable, "-m", "autograder", "grade"]
    return start + [str(submission), "--out", str(out_dir), "--lab", lab, "--profile", profile]


def _valid_results(path):
    results = json.loads(pathlib.Path(path).read_text())
    if not isinstance(results, dict) or not isinstance(results.get("score"), (int, float)):
        raise ValueError(f"{path} is not a Gradescope results file (expected an object with a "
                         f"numeric score). Received: {str(results)[:200]}")
    if not isinstance(results.get("tests", []), list):
        raise ValueError(f"{path}: 'tests' must be a list. Received: {results['tests']!r}")
    return results


def _tail(text):
    text = text.strip()
    return text if len(text) <= OUTPUT_TAIL_CHARS else "..." + text[-OUTPUT_TAIL_CHARS:]


def run_autograder(root=None):
    """Grades the Gradescope submission under `root` and writes `root`/results/results.json.

    A placeholder results.json (score 0, "grading did not finish") is written first, so a
    run that Gradescope stops still leaves an explanation; it is replaced by the grader's
    results, or by score 0 with the error when grading fails.

    Args:
        root: the Gradescope tree; default $GRADESCOPE_ROOT or /autograder.

    Returns:
        The results dict written.
    """
    root = pathlib.Path(root or os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT)
    results_path = root / "results" / reports.GRADESCOPE_FILE
    results_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _write_results(results_path, failure_results(
        "Grading did not finish (it was stopped, probably for running too long). "
        "Your submission was not graded; please tell the course staff."))
    output = ""
    try:
        config = read_config(root)
        environment = dict(os.environ)
        environment.update({
            reports.VISIBILITY_ENV_VAR: config["visibility"],
            "COURSE_PROFILE": config["profile"],
            "KERAS_BACKEND": "torch",
        })
        environment.setdefault("COURSE_GRADER_SECRET", config.get("grader_secret", ""))
        if config.get("data"):
            environment["COURSE_DATA_DIR"] = str(root / "source" / "data")
        with tempfile.TemporaryDirectory(prefix="course-grading-") as scratch:
            command = grade_command(root / "submission", scratch, config["lab"], config["profile"])
            print("run_autograder:", shlex.join(command), flush=True)
            completed = subprocess.run(command, env=environment, cwd=root, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, errors="replace", check=False)
            output = completed.stdout or ""
            print(output, flush=True)
            found = sorted(pathlib.Path(scratch).glob(f"*/{reports.GRADESCOPE_FILE}"))
            if len(found) != 1:
                raise RuntimeError(f"grading exited with status {completed.returncode} and left "
                                   f"{len(found)} results files (expected 1)")
            results = _valid_results(found[0])
    except Exception as error:  # whatever happens, the student gets a results.json
        message = f"The autograder failed while grading your submission: {type(error).__name__}: {error}"
        if output:
            message += f"\n\nGrader output (end):\n{_tail(output)}"
        message += "\n\nYour score is 0 for now; please tell the course staff."
        results = failure_results(message, time.time() - started)
    _write_results(results_path, results)
    print(f"run_autograder: score {results['score']:g}, results in {results_path}", flush=True)
    return results


def main(argv=None):
    """``python -m autograder.gradescope run [--root DIR]``: what run_autograder calls.

    Args:
        argv: the arguments (default sys.argv[1:]).

    Returns:
        The exit status: 0 (a results.json is always written).
    """
    parser = argparse.ArgumentParser(prog="python -m autograder.gradescope", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="grade the Gradescope submission (what run_autograder calls)")
    run.add_argument("--root", help=f"the Gradescope tree (default ${ROOT_ENV_VAR} or {DEFAULT_ROOT})")
    arguments = parser.parse_args(argv)
    run_autograder(arguments.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
