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
import time

from autograder import execute, reports, sandbox
from autograder.judge import check_points, run_checks
from autograder.probes.assemble import probe_cell
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
WORK_DIR_NAME = ".work"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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
    return SAFE_NAME.sub("_", name).strip("._") or "submission"


def probe_seed(lab_name, fingerprint_text):
    """Probe inputs depend on a course secret, so no notebook can precompute answers."""
    secret = os.environ.get(SECRET_ENV_VAR, "")
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
        fingerprint_text = hashlib.sha256(raw + profile.encode() + version.encode()).hexdigest()
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
    work_dir = folder / WORK_DIR_NAME
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    seed = probe_seed(lab_name, fingerprint_text)
    result = execute.execute_notebook(
        notebook,
        work_dir,
        lambda probe_dir: probe_cell(lab_name, probe_dir, seed),
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        environment=_kernel_environment(profile, data_dir, kernel_threads),
    )
    context = {
        "imports": code_imports(notebook),
        "execution_error": _execution_problem(result, timeout_s, memory_limit_mb),
    }
    checks = [check.to_dict() for check in run_checks(lab_name, result.probe_dir, profile, context=context)]
    score = round(sum(check["points"] for check in checks), 4)
    report = {
        "submission": name,
        "lab": lab_name,
        "lab_title": get_lab(lab_name).title,
        "notebook": notebook_path.name,
        "score": score,
        "max_score": float(sum(check["max_points"] for check in checks)),
        "status": "graded",
        "summary": _summary(result, timeout_s, memory_limit_mb),
        "checks": checks,
        "profile": profile,
        "seconds": round(time.time() - started, 1),
        "notebook_seconds": result.seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "cell_errors": result.errors[:20],
        "isolation": sandbox.isolation_mode(),
        "fingerprint": fingerprint_text,
        "course_version": version,
    }
    reports.write_report_files(folder, report, result.notebook)
    if not keep_work:
        shutil.rmtree(work_dir, ignore_errors=True)
    return report


def _kernel_environment(profile, data_dir, kernel_threads):
    """The kernel's environment; `kernel_threads` caps torch's CPU threads (OMP/MKL)."""
    environment = execute.base_environment(profile, data_dir or os.environ.get("COURSE_DATA_DIR"))
    if kernel_threads:
        environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(kernel_threads)
    return environment


def kernel_threads_for(workers):
    """CPU threads per kernel when `workers` kernels share this machine's cores.

    None (torch's own choice) for one worker or when OMP_NUM_THREADS is set already;
    otherwise the cores divided among the workers, so that parallel kernels do not
    oversubscribe the CPU (two 2-thread kernels on 2 cores run slower than two 1-thread ones).
    """
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def _zero_checks(lab_name, message):
    if lab_name not in LABS:
        return []
    return [
        {"name": check, "points": 0.0, "max_points": points, "passed": False, "message": message}
        for check, points in check_points(lab_name).items()
    ]


def _previous_report(folder, fingerprint_text):
    path = folder / reports.REPORT_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if report.get("fingerprint") == fingerprint_text else None


def _execution_problem(result, timeout_s, memory_limit_mb):
    if result.stopped == "timeout":
        return f"the notebook ran past its time limit of {timeout_s} s"
    if result.stopped == "memory":
        return f"the notebook used more than {memory_limit_mb} MB of memory and was stopped"
    if result.stopped:
        return f"the kernel stopped ({result.stopped}); was there a crash or an exit() call?"
    if not result.probe_ran:
        return "the grader could not inspect the notebook after it ran"
    return ""


def _summary(result, timeout_s, memory_limit_mb):
    parts = [f"The notebook ran for {result.seconds:.0f} s."]
    problem = _execution_problem(result, timeout_s, memory_limit_mb)
    if problem:
        parts.append(f"Problem: {problem}.")
    if result.errors:
        first = result.errors[0]
        parts.append(f"{len(result.errors)} cell(s) raised an error; the first (cell {first['cell']}): {first['error']}")
    return " ".join(parts)


def _unique_names(submissions):
    names, seen = [], {}
    for submission in submissions:
        base = submission_name(submission)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _grade_job(job):
    submission, name, options = job
    try:
        return grade_submission(submission, name=name, **options)
    except Exception as error:  # a grader bug must not stop the batch
        report = _failed_report(name, options.get("lab"), f"Internal grader error: {type(error).__name__}: {error}", [])
        report["status"] = "grader error"
        reports.write_report_files(pathlib.Path(options["out_dir"]) / name, report, None)
        return report


def grade_batch(submissions, out_dir, workers=1, progress=print, **options):
    """Grades many submissions (in parallel with `workers` > 1) and writes grades.csv.

    Returns:
        The list of reports, in the order of `submissions`.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = dict(options, out_dir=str(out_dir))
    options.setdefault("kernel_threads", kernel_threads_for(workers))
    jobs = [(str(path), name, options) for path, name in zip(submissions, _unique_names(submissions))]
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
