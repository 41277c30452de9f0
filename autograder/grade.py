"""Grading one submission (a self-contained job) and batches of them."""

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

from autograder import calibration, execute, reports, sandbox
from autograder.judge import check_points, run_checks
from autograder.probes.assemble import export_cell, host_request, probe_module
from autograder.probes.definitions import top_level_definitions
from autograder.registry import LABS, PACKAGE_DIR, detect_lab, get_lab
from autograder.submission import (
    SubmissionError,
    code_imports,
    find_notebook,
    read_notebook,
    strip_hidden_tests,
)

DEFAULT_MEMORY_LIMIT_MB = 12_000
SECRET_ENV_VAR = "COURSE_GRADER_SECRET"
SECRET_FILE_ENV_VAR = "COURSE_GRADER_SECRET_FILE"
# Written by scripts/setup.sh; outside every folder a sandbox shows.
DEFAULT_SECRET_FILE = PACKAGE_DIR.parent / ".grader-secret"
MIN_SECRET_CHARS = 32
SCRATCH_ENV_VAR = "COURSE_GRADER_SCRATCH"
# Unix socket paths are limited to 107 bytes: scratch folders get short names of their own,
# whatever the submission or report folder is called.
MAX_SCRATCH_BASE_CHARS = 40
WORK_DIR_NAME = ".work"
SAFE_NAME = re.compile(r"[^\w.-]+")
MAX_NAME_CHARS = 80
PROBE_TIMEOUT_S = 900
PROBE_ITEM_TIMEOUT_S = 600


class GraderSetupError(RuntimeError):
    """The grader itself is not set up to grade (a missing secret, no usable sandbox)."""


def course_version():
    """A hash of everything that decides a grade: checks, probes, calibration, course_lib."""
    import course_lib

    digest = hashlib.sha256()
    roots = [PACKAGE_DIR, pathlib.Path(course_lib.__file__).resolve().parent]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".json", ".npz", ".h5") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def submission_name(submission_path):
    """The report folder name of a submission: its folder's name, or the file's stem."""
    path = pathlib.Path(submission_path)
    name = path.name if path.is_dir() else path.stem
    name = SAFE_NAME.sub("_", name).strip("._") or "submission"
    if len(name) > MAX_NAME_CHARS:  # long names get a short, still unique, folder name
        name = f"{name[:MAX_NAME_CHARS - 9]}-{_path_digest(path)}"
    return name


def _path_digest(path):
    return hashlib.sha256(os.path.abspath(str(path)).encode("utf-8", "surrogateescape")).hexdigest()[:8]


def grading_secret():
    """The course's grading secret: $COURSE_GRADER_SECRET, else the secret file.

    Raises:
        GraderSetupError: when there is none (or it is too short), saying how to make one.
    """
    secret = os.environ.get(SECRET_ENV_VAR, "").strip()
    source = f"${SECRET_ENV_VAR}"
    if not secret:
        path = pathlib.Path(os.environ.get(SECRET_FILE_ENV_VAR) or DEFAULT_SECRET_FILE)
        source = str(path)
        try:
            secret = path.read_text().strip()
        except OSError:
            secret = ""
    if len(secret) < MIN_SECRET_CHARS:
        raise GraderSetupError(
            f"No usable grading secret (looked at ${SECRET_ENV_VAR} and {source}; received "
            f"{len(secret)} characters, expected at least {MIN_SECRET_CHARS}). The probe inputs are drawn "
            f"from it, so it must exist and stay out of students' reach. Run `bash scripts/setup.sh` "
            f"(it writes {DEFAULT_SECRET_FILE.name} in the course folder), or set ${SECRET_ENV_VAR} (or "
            f"${SECRET_FILE_ENV_VAR} to a file) to e.g. the output of "
            f"`python -c 'import secrets; print(secrets.token_hex(32))'`; keep it the same on every runner."
        )
    return secret


def probe_seed(lab_name, fingerprint_text):
    """Probe inputs depend on the course secret, so no notebook can precompute answers."""
    secret = grading_secret()
    digest = hashlib.sha256(f"{secret}|{lab_name}|{fingerprint_text}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def _failed_report(name, lab_name, message, checks, fingerprint_text="", version=""):
    lab = LABS.get(lab_name)
    return {
        "submission": name,
        "lab": lab_name or "unknown",
        "lab_title": lab.title if lab else "",
        "score": 0.0,
        "max_score": float(sum(check["max_points"] for check in checks)),
        "status": "not graded",
        "summary": message,
        "checks": checks,
        "fingerprint": fingerprint_text,
        "course_version": version,
    }


def grade_submission(submission_path, out_dir, lab=None, profile="fast", timeout_s=None,
                     memory_limit_mb=DEFAULT_MEMORY_LIMIT_MB, data_dir=None, keep_work=False,
                     name=None, resume=False, kernel_threads=None):
    """Grades one submission; writes `out_dir/<name>/` and returns its report dict.

    Never raises for anything wrong with the submission: such problems are reported.
    """
    import course_lib

    name = name or submission_name(submission_path)
    folder = pathlib.Path(out_dir) / name
    version = course_version()
    started = time.time()
    try:
        notebook_path = find_notebook(submission_path, lab)
        notebook, raw = read_notebook(notebook_path)
        strip_hidden_tests(notebook)
        fingerprint_text = _fingerprint(raw, profile, version)
    except SubmissionError as error:
        lab_name = lab or detect_lab(submission_path)
        checks = _zero_checks(lab_name, str(error))
        report = _failed_report(name, lab_name, str(error), checks, version=version)
        reports.write_report_files(folder, report, None)
        return report
    lab_name = lab or detect_lab(notebook_path, notebook)
    if lab_name is None:
        message = (f"Could not tell which lab this notebook is (expected one of {sorted(LABS)} "
                   f"in its name or metadata). Received: {notebook_path.name}")
        report = _failed_report(name, None, message, [], fingerprint_text, version)
        reports.write_report_files(folder, report, None)
        return report
    if resume:
        previous = _previous_report(folder, fingerprint_text)
        if previous is not None:
            return previous
    timeout_s = timeout_s or course_lib.settings("grading", profile)["notebook_timeout_s"]
    isolation = sandbox.isolation_mode()
    seed = probe_seed(lab_name, fingerprint_text)
    scratch = _scratch_folder()
    try:
        result, probe_run, probe_dir = _run_and_probe(
            notebook, lab_name, scratch, seed, profile, timeout_s, memory_limit_mb, data_dir, kernel_threads,
            isolation,
        )
        if not result.kernel_started and result.stopped.startswith("kernel error"):
            raise GraderSetupError(
                f"The grading kernel could not start ({result.stopped}); this is a problem of the grading "
                f"machine, not of the submission. Isolation: {isolation}. Kernel log: see --keep-work."
            )
        context = {
            "imports": code_imports(notebook),
            "execution_error": _execution_problem(result, probe_run, timeout_s, memory_limit_mb),
        }
        checks = [check.to_dict() for check in run_checks(lab_name, probe_dir, profile, context=context)]
    finally:
        if keep_work:
            shutil.rmtree(folder / WORK_DIR_NAME, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(str(scratch), str(folder / WORK_DIR_NAME))
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    score = round(sum(check["points"] for check in checks), 4)
    report = {
        "submission": name,
        "lab": lab_name,
        "lab_title": get_lab(lab_name).title,
        "notebook": notebook_path.name,
        "score": score,
        "max_score": float(sum(check["max_points"] for check in checks)),
        "status": "graded",
        "summary": _summary(result, probe_run, timeout_s, memory_limit_mb),
        "checks": checks,
        "profile": profile,
        "seconds": round(time.time() - started, 1),
        "notebook_seconds": result.seconds,
        "probe_seconds": probe_run.seconds,
        "peak_memory_mb": max(result.peak_memory_mb, probe_run.peak_memory_mb),
        "cell_errors": result.errors[:20],
        "isolation": isolation,
        "calibration": _calibration_entry(lab_name, profile),
        "fingerprint": fingerprint_text,
        "course_version": version,
    }
    reports.write_report_files(folder, report, result.notebook)
    return report


def probe_notebook(notebook, lab_name, out_dir, seed, profile="fast", timeout_s=None,
                   memory_limit_mb=DEFAULT_MEMORY_LIMIT_MB, data_dir=None, kernel_threads=None):
    """Runs a notebook and its probes exactly as grading does; copies probe.json/.npz to `out_dir`.

    For calibration scripts, which judge the raw probe results themselves.

    Returns:
        (ExecutionResult, ProbeRun).
    """
    import course_lib

    timeout_s = timeout_s or course_lib.settings("grading", profile)["notebook_timeout_s"]
    scratch = _scratch_folder()
    try:
        result, probe_run, probe_dir = _run_and_probe(
            notebook, lab_name, scratch, seed, profile, timeout_s, memory_limit_mb, data_dir, kernel_threads,
            sandbox.isolation_mode(),
        )
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("probe.json", "probe.npz"):
            if (probe_dir / name).is_file():
                shutil.copy(probe_dir / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result, probe_run


def _scratch_folder():
    """A fresh, short, absolute scratch folder (sockets, kernel and probe files)."""
    base = os.environ.get(SCRATCH_ENV_VAR) or tempfile.gettempdir()
    base = os.path.realpath(base)
    if len(base) > MAX_SCRATCH_BASE_CHARS:
        raise GraderSetupError(
            f"The scratch folder's path is too long for the kernel's sockets (received {base!r}, "
            f"{len(base)} characters; expected at most {MAX_SCRATCH_BASE_CHARS}). Set ${SCRATCH_ENV_VAR} "
            f"to a short folder such as /tmp."
        )
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="cg-", dir=base))
    scratch.chmod(0o755)  # the sandbox's user must reach its own folders inside
    return scratch


def _readable_paths(data_dir):
    """What sandboxes show read-only besides the system: the Python env, course_lib, data."""
    paths = list(sandbox.default_readable())
    for folder in (data_dir, os.environ.get("TFDS_DATA_DIR")):
        if folder and os.path.isdir(folder):
            paths.append(os.path.realpath(folder))
    return paths


def withheld_paths(lab_name, stage="kernel"):
    """Files of the course's reference implementations that the lab's sandboxes must not show.

    Args:
        lab_name: the lab.
        stage: "kernel" (its `WITHHELD_MODULES`) or "probe" (those and `PROBE_WITHHELD_MODULES`:
            modules the notebook may use while it runs, but that hold the reference of a graded
            definition, which the probe process executes).
    """
    import importlib.util

    module = probe_module(lab_name)
    names = list(getattr(module, "WITHHELD_MODULES", ()))
    if stage == "probe":
        names += list(getattr(module, "PROBE_WITHHELD_MODULES", ()))
    paths = []
    for module_name in names:
        spec = importlib.util.find_spec(module_name)
        if spec is not None and spec.origin:
            paths.append(os.path.realpath(spec.origin))
    return paths


def _run_and_probe(notebook, lab_name, scratch, seed, profile, timeout_s, memory_limit_mb, data_dir,
                   kernel_threads, isolation, only=None):
    """Runs the notebook (kernel: export only), then the probe process. Returns (result, probe run, probe dir)."""
    data_dir = data_dir or os.environ.get("COURSE_DATA_DIR")
    data_dir = os.path.realpath(data_dir) if data_dir else None
    readable = _readable_paths(data_dir)
    hidden = withheld_paths(lab_name, "kernel")
    kernel_dir, probe_work, probe_dir = scratch / "kernel", scratch / "probe", scratch / "results"
    probe_dir.mkdir(mode=0o700)
    result = execute.execute_notebook(
        notebook,
        kernel_dir,
        lambda export_dir: export_cell(lab_name, export_dir),
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        environment=_kernel_environment(profile, data_dir, kernel_threads, kernel_dir),
        isolation=isolation,
        readable=readable,
        hidden=hidden,
    )
    # The grader's own copy: regular files only, whatever the kernel left behind.
    artefacts = scratch / "artefacts"
    execute.copy_export(result.export_dir, artefacts)
    writable = [probe_work / "home", probe_work / "tmp"]
    if isolation == "bwrap":
        writable += ["/tmp", "/dev/shm"]
    request = host_request(lab_name, seed, top_level_definitions(notebook), artefacts,
                           PROBE_ITEM_TIMEOUT_S, writable, own_pid_namespace=isolation == "bwrap", only=only)
    environment = _kernel_environment(profile, data_dir, kernel_threads, probe_work)
    environment["MPLBACKEND"] = "Agg"
    probe_run = execute.run_probe_process(
        request, probe_work, probe_dir, timeout_s=PROBE_TIMEOUT_S, memory_limit_mb=memory_limit_mb,
        environment=environment, isolation=isolation, readable=readable + [str(artefacts)],
        hidden=withheld_paths(lab_name, "probe"),
    )
    return result, probe_run, probe_dir


def _kernel_environment(profile, data_dir, kernel_threads, work_dir):
    """A sandboxed process's whole environment; `kernel_threads` caps torch's CPU threads (OMP/MKL)."""
    environment = execute.base_environment(profile, data_dir)
    work_dir = pathlib.Path(work_dir).resolve()
    environment.update(
        HOME=str(work_dir / "home"),
        TMPDIR=str(work_dir / "tmp"),
        MPLCONFIGDIR=str(work_dir / "home"),
        KERAS_HOME=str(work_dir / "home" / ".keras"),
    )
    if kernel_threads:
        environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(kernel_threads)
    return environment


# On a CPU, what a notebook trains depends on its kernel's thread count (the order of the
# float reductions changes the numbers, and SGD amplifies the difference), and the thresholds
# were measured with one thread per kernel. A grade must not depend on how many workers the
# grader ran. Measured on lab1's solution (seed 42, fast, this 2-core CPU, 2026-12-03): BN
# 42.2% / plain 34.4% with one thread (twice, identical), 35.6% / 34.0% with two (BN ahead by
# 1.6 points, below the 4.1-point threshold: 9/11 for the reference solution graded alone).
CPU_KERNEL_THREADS = 1


def kernel_threads_for(workers, gpu=None):
    """CPU threads per grading kernel when `workers` kernels share this machine.

    None (the user's own OMP_NUM_THREADS, which is passed on) when OMP_NUM_THREADS is set.
    Without a GPU: CPU_KERNEL_THREADS, whatever the number of workers, so that a submission
    gets the same grade alone or in a class. With a GPU (training runs there): the cores
    divided among the workers (None for one worker: torch's own choice).

    Args:
        workers: grading kernels run at the same time.
        gpu: whether kernels train on a GPU (default: whether torch sees one).
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    if gpu is None:
        gpu = _torch_sees_a_gpu()
    if not gpu:
        return CPU_KERNEL_THREADS
    if workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def _torch_sees_a_gpu():
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _calibration_entry(lab_name, profile):
    """Where the thresholds of this lab and profile were measured (report.json's `calibration`)."""
    try:
        return calibration.thresholds(lab_name, profile).describe()
    except calibration.CalibrationError as error:
        return {"lab": lab_name, "profile": profile, "measured": False, "note": str(error)}


def _zero_checks(lab_name, message):
    if lab_name not in LABS:
        return []
    return [
        {"name": check, "points": 0.0, "max_points": points, "passed": False, "message": message}
        for check, points in check_points(lab_name).items()
    ]


def _fingerprint(raw, profile, version):
    """What a report was graded from: the notebook's bytes, the profile and the course version."""
    return hashlib.sha256(raw + profile.encode() + version.encode()).hexdigest()


def finished_report(submission_path, folder, lab=None, profile="fast", version=None):
    """The report already in `folder` if it graded this very submission, else None.

    What `--resume` skips: a "graded" report of the same notebook bytes, profile and course
    version. Unreadable submissions are never skipped (they are cheap to check again).

    Args:
        submission_path: the notebook, or a folder holding one.
        folder: the submission's report folder.
        lab: the lab, when given on the command line.
        profile: the run profile.
        version: `course_version()`, when the caller has it already.
    """
    try:
        raw = read_notebook(find_notebook(submission_path, lab))[1]
    except SubmissionError:
        return None
    report = _previous_report(pathlib.Path(folder), _fingerprint(raw, profile, version or course_version()))
    return report if report is not None and report.get("status") == "graded" else None


def _previous_report(folder, fingerprint_text):
    path = folder / reports.REPORT_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if report.get("fingerprint") == fingerprint_text else None


def _execution_problem(result, probe_run, timeout_s, memory_limit_mb):
    problems = []
    if result.stopped == "timeout":
        problems.append(f"the notebook ran past its time limit of {timeout_s} s")
    elif result.stopped == "memory":
        problems.append(f"the notebook used more than {memory_limit_mb} MB of memory and was stopped")
    elif result.stopped:
        problems.append(f"the kernel stopped ({result.stopped}); was there a crash or an exit() call?")
    elif not result.exported:
        problems.append("the grader could not save the notebook's results after it ran")
    if not probe_run.ok:
        problems.append(probe_run.problem or "the grader could not inspect the notebook")
    return "; ".join(problems)


def _summary(result, probe_run, timeout_s, memory_limit_mb):
    parts = [f"The notebook ran for {result.seconds:.0f} s."]
    problem = _execution_problem(result, probe_run, timeout_s, memory_limit_mb)
    if problem:
        parts.append(f"Problem: {problem}.")
    if result.errors:
        first = result.errors[0]
        parts.append(f"{len(result.errors)} cell(s) raised an error; the first (cell {first['cell']}): {first['error']}")
    return " ".join(parts)


def _unique_names(submissions):
    """One report folder name per submission, never shared, the same in any order of the batch.

    Names that sanitize to the same string (`a b`, `a_b`) all get a digest of their path.
    """
    bases = [submission_name(submission) for submission in submissions]
    counts = {}
    for base in bases:
        counts[base.lower()] = counts.get(base.lower(), 0) + 1
    names = [base if counts[base.lower()] == 1 else f"{base}-{_path_digest(submission)}"
             for base, submission in zip(bases, submissions)]
    taken = {}
    for index, name in enumerate(names):
        if name.lower() in taken:  # the same path twice, or a digest that met a real name
            names[index] = f"{name}-{index}"
        taken[names[index].lower()] = index
    return names


def grader_error_report(name, lab_name, message):
    """The report of a submission the grader failed on (not the student's fault): status "grader error"."""
    report = _failed_report(name, lab_name, f"Internal grader error: {message}", [])
    report["status"] = "grader error"
    return report


def _grade_job(job):
    submission, name, options = job
    try:
        return grade_submission(submission, name=name, **options)
    except Exception as error:  # a grader bug must not stop the batch
        report = grader_error_report(name, options.get("lab"), f"{type(error).__name__}: {error}")
        reports.write_report_files(pathlib.Path(options["out_dir"]) / name, report, None)
        return report


def grade_batch(submissions, out_dir, workers=1, progress=print, overrides=None, **options):
    """Grades many submissions (in parallel with `workers` > 1) and writes grades.csv.

    Args:
        overrides: {submission path: {option: value}}: options of single submissions that
            differ from the batch's `options` (e.g. a shorter `timeout_s`); None for none.

    Returns:
        The list of reports, in the order of `submissions`.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = dict(options, out_dir=str(out_dir))
    options.setdefault("kernel_threads", kernel_threads_for(workers))
    overrides = {str(path): dict(changed) for path, changed in (overrides or {}).items()}
    unknown = sorted(set(overrides) - {str(path) for path in submissions})
    if unknown:
        raise ValueError(f"overrides name submissions that are not in the batch. Received: {unknown}")
    jobs = [(str(path), name, dict(options, **overrides.get(str(path), {})))
            for path, name in zip(submissions, _unique_names(submissions))]
    results = [None] * len(jobs)
    started = time.time()

    def announce(done, report):
        progress(
            f"[{done}/{len(jobs)}] {report['submission']}: {report['score']:g}/{report['max_score']:g} "
            f"({report['status']}, {time.time() - started:.0f} s elapsed)"
        )

    if workers <= 1:
        for index, job in enumerate(jobs):
            results[index] = _grade_job(job)
            announce(index + 1, results[index])
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_grade_job, job): index for index, job in enumerate(jobs)}
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                results[futures[future]] = future.result()
                announce(done, results[futures[future]])
    reports.write_class_csv(out_dir)
    return results
