"""Overhead of the Ray engine against the local pool, per job and per batch.

    python -m benchmarks.fleet_overhead [--small 4] [--large 20] [--workers 2]

Each submission is a notebook that is not valid JSON: the grader rejects it without starting a
kernel, so a job costs almost nothing and what is timed is the engine (starting the pool or the
cluster, shipping the job, writing the report folder). Each engine grades a small and a large
batch, each from a fresh start; the slope between them is the cost of one more job, the rest is
the fixed cost of a batch. Prints a Markdown table with the machine's load.
"""

import argparse
import os
import pathlib
import tempfile
import time

BROKEN_NOTEBOOK = '{"cells": ['
DEFAULT_SMALL, DEFAULT_LARGE, DEFAULT_WORKERS = 4, 20, 2


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


def time_batch(engine, submissions, out_dir, workers):
    """Seconds to grade `submissions` with `engine` ("local" or "ray"), from a fresh pool or cluster."""
    options = {"lab": "lab3", "profile": "fast", "progress": lambda line: None}
    started = time.perf_counter()
    if engine == "local":
        from autograder.grade import grade_batch

        reports = grade_batch(submissions, out_dir, workers=workers, **options)
    else:
        from autograder.fleet import grade_fleet

        reports = grade_fleet(submissions, out_dir, local_cpus=workers, **options)
    seconds = time.perf_counter() - started
    assert len(reports) == len(submissions) and all(report["status"] == "not graded" for report in reports)
    return seconds


def measure(small, large, workers):
    """{engine: (small batch s, large batch s, s per extra job, fixed s)}."""
    results = {}
    with tempfile.TemporaryDirectory() as work:
        batches = {size: make_submissions(pathlib.Path(work) / f"in-{size}", size) for size in (small, large)}
        for engine in ("local", "ray"):
            times = {size: time_batch(engine, batches[size], pathlib.Path(work) / f"out-{engine}-{size}", workers)
                     for size in (small, large)}
            per_job = (times[large] - times[small]) / (large - small)
            results[engine] = (times[small], times[large], per_job, times[small] - small * per_job)
    return results


def markdown(results, small, large, workers, load_before, load_after):
    lines = [
        f"Load average (1 min) {load_before:.2f} before, {load_after:.2f} after; {os.cpu_count()} cores; "
        f"{workers} jobs at a time (local pool: --workers {workers}; Ray: a local cluster of {workers} CPUs).",
        "",
        f"| engine | {small} jobs s | {large} jobs s | s per extra job | fixed s per batch |",
        "|---|---|---|---|---|",
    ]
    for engine, (small_s, large_s, per_job, fixed) in results.items():
        lines.append(f"| {engine} | {small_s:.1f} | {large_s:.1f} | {per_job:.2f} | {fixed:.1f} |")
    local, ray = results["local"], results["ray"]
    lines += ["", f"Ray / local: {ray[2] / local[2]:.2f}x per extra job, {ray[3] / local[3]:.2f}x fixed cost."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=DEFAULT_SMALL, help="jobs in the small batch")
    parser.add_argument("--large", type=int, default=DEFAULT_LARGE, help="jobs in the large batch")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="jobs at a time")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.small < arguments.large:
        parser.error(f"expected 0 < --small < --large; received {arguments.small} and {arguments.large}")
    load_before = os.getloadavg()[0]
    results = measure(arguments.small, arguments.large, arguments.workers)
    print(markdown(results, arguments.small, arguments.large, arguments.workers, load_before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
