"""Overhead of the Ray engine against the local engine, per job and per batch.

    python -m benchmarks.fleet_overhead [--jobs 20] [--workers 2]

Each submission is a notebook that is not valid JSON: the grader rejects it without starting a
kernel, so a job costs almost nothing and what is timed is the engine. Four timings, one run:
the local pool (`--workers N`, including its start), the local engine in-process (`--workers 1`:
the bare cost of a job), starting a local Ray cluster, and the same batch through Ray on the
started cluster (after a warm-up batch that starts its workers). Prints a Markdown table with
the machine's load.
"""

import argparse
import os
import pathlib
import tempfile
import time

BROKEN_NOTEBOOK = '{"cells": ['
DEFAULT_JOBS, DEFAULT_WORKERS = 20, 2


def make_submissions(folder, count):
    """`count` trivially failing lab3 notebooks in `folder`."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"lab3-student{index:03d}.ipynb"
        path.write_text(BROKEN_NOTEBOOK)
        paths.append(path)
    return paths


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def measure(jobs, workers):
    """{label: seconds} of the four timings (see the module's docstring)."""
    from autograder.fleet import connect, grade_fleet, import_ray
    from autograder.grade import grade_batch

    options = {"lab": "lab3", "profile": "fast", "progress": lambda line: None}
    results = {}
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        batch, warm_up = make_submissions(work / "in", jobs), make_submissions(work / "warm", workers)
        results["pool"], _ = _timed(grade_batch, batch, work / "pool", workers=workers, **options)
        results["in_process"], _ = _timed(grade_batch, batch, work / "serial", workers=1, **options)
        ray = import_ray()
        results["ray_start"], _ = _timed(connect, ray, num_cpus=workers)
        try:
            grade_fleet(warm_up, work / "ray-warm", **options)
            results["ray"], reports = _timed(grade_fleet, batch, work / "ray", **options)
        finally:
            ray.shutdown()
        assert len(reports) == jobs and all(report["status"] == "not graded" for report in reports)
    return results


def markdown(results, jobs, workers, load_before, load_after):
    per_job = {label: seconds / jobs for label, seconds in results.items()}
    lines = [
        f"Load average (1 min) {load_before:.2f} before, {load_after:.2f} after; {os.cpu_count()} cores; "
        f"{jobs} trivially failing submissions; {workers} jobs at a time for the pool and Ray.",
        "",
        "| engine | batch s | s per job |",
        "|---|---|---|",
        f"| local pool, --workers {workers} (its start included) | {results['pool']:.1f} | {per_job['pool']:.2f} |",
        f"| local, in-process (--workers 1) | {results['in_process']:.1f} | {per_job['in_process']:.2f} |",
        f"| Ray: starting a local cluster ({workers} CPUs) | {results['ray_start']:.1f} | |",
        f"| Ray, on the started cluster | {results['ray']:.1f} | {per_job['ray']:.2f} |",
        "",
        f"Ray / in-process per job: {per_job['ray'] / per_job['in_process']:.1f}x; Ray's batch with its cluster "
        f"start / the pool's: {(results['ray'] + results['ray_start']) / results['pool']:.1f}x.",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="submissions per batch")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="jobs at a time")
    arguments = parser.parse_args(argv)
    if arguments.jobs < 1 or arguments.workers < 1:
        parser.error(f"expected --jobs and --workers of at least 1; received {arguments.jobs} and {arguments.workers}")
    load_before = os.getloadavg()[0]
    results = measure(arguments.jobs, arguments.workers)
    print(markdown(results, arguments.jobs, arguments.workers, load_before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
