"""The prepared GPU run: one command that grades and measures everything a GPU runner needs to know.

Run through `scripts/gpu_run.sh` (which installs what travels). Stages, each within what is
left of a time budget (a stage that does not fit is recorded as skipped, never half-run):

1. device: torch, CUDA, the GPU's name and memory, the isolation the grader will use.
2. grade: each lab's reference solution through the real grader CLI, in the profile given
   (cheapest lab first), with the GPU memory peak sampled from `nvidia-smi`; per lab: score,
   wall/notebook/probe seconds, host and GPU memory peaks, kernels that fit on one GPU, and
   every calibrated quantity the checks measured (report.json's `measured`).
3. share: SHARE_KERNELS copies of one lab's solution graded at once on the same GPU.
4. benchmark: the Keras/PyTorch step-time benchmark (`python -m benchmarks`) on the GPU, with
   its levers: channels-first (built into the course models), bf16 mixed precision, jit_compile.

Outputs in --out (at most 8 files, as the device tool returns): summary.json, summary.md,
grades.tar.gz (every report folder), benchmarks.json, benchmarks.md; gpu_run.sh adds log.txt.

    python scripts/gpu_run.py --out DIR [--tiny] [--budget-s 540]
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Cheapest first: a budget that runs out still measures the most labs.
LABS = ("lab3", "lab2", "lab1", "lab5", "lab4")
TINY_LABS = ("lab3",)
SHARE_LAB = "lab3"
SHARE_KERNELS = 4
DEFAULT_BUDGET_S = 540  # one 10-minute device command, with room for the install and the transfers
TINY_BUDGET_S = 1800  # the CPU check only proves the path; a loaded 2-core CI machine is slow
# A stage starts only with at least this much left; the grader's timeout is capped to what is left.
MIN_STAGE_S = 45
SAMPLE_INTERVAL_S = 0.25
# The benchmark's levers, most important first, each its own process (a timeout loses one):
# channels-first is in the course models themselves (lab1_cnn_bn) against the students'
# channels-last lab1_student_cnn_bn; bf16 mixed precision; jit_compile (torch.compile).
BENCHMARK_RUNS = (
    ("--models", "all", "--how", "fit", "--precision", "float32", "--rounds", "3"),
    ("--models", "all", "--how", "fit", "--precision", "mixed_bfloat16", "--rounds", "3"),
    ("--models", "all", "--how", "jit", "--precision", "float32", "--rounds", "3"),
)
TINY_BENCHMARK_RUNS = (("--models", "lab3_dense_vae", "--how", "fit", "--rounds", "1", "--steps", "5"),)


class Budget:
    """Seconds left of the run's budget."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds

    def left(self):
        return self.deadline - time.monotonic()


class GpuMemorySampler:
    """Samples the GPU's used memory (MiB, all processes) with nvidia-smi while a stage runs."""

    def __init__(self):
        self.available = shutil.which("nvidia-smi") is not None
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def read():
        """Used memory in MiB of the first GPU, or None without nvidia-smi."""
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            return float(out.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def __enter__(self):
        if self.available:
            self.baseline = self.read()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            value = self.read()
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *_):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def peak_mb(self):
        """The peak above the memory in use before the stage, or None without samples."""
        if not self.samples or self.baseline is None:
            return None
        return round(max(self.samples) - self.baseline, 1)


def device_facts():
    """What the run sees: torch, CUDA, GPU, grader isolation."""
    import torch

    facts = {"python": sys.version.split()[0], "torch": torch.__version__,
             "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if facts["cuda_available"]:
        properties = torch.cuda.get_device_properties(0)
        facts.update(gpu=properties.name, gpu_memory_mb=round(properties.total_memory / 2**20),
                     cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    import course_lib
    from autograder import sandbox

    facts["course_device"] = course_lib.describe_device()
    facts["isolation"] = sandbox.isolation_mode()
    return facts


def grade(notebooks, out_dir, profile, workers, timeout_s):
    """Grades `notebooks` with the real CLI; returns (reports, wall seconds, GPU peak MiB, exit code)."""
    command = [sys.executable, "-m", "autograder", "grade", *map(str, notebooks), "--out", str(out_dir),
               "--profile", profile, "--workers", str(workers), "--timeout", str(int(timeout_s))]
    started = time.monotonic()
    with GpuMemorySampler() as sampler:
        completed = subprocess.run(command, cwd=REPO_ROOT)
    seconds = round(time.monotonic() - started, 1)
    reports = [json.loads(path.read_text()) for path in sorted(pathlib.Path(out_dir).glob("*/report.json"))]
    return reports, seconds, sampler.peak_mb(), completed.returncode


def lab_figures(report, wall_s, gpu_peak_mb, gpu_memory_mb):
    """The figures of one graded reference solution."""
    measured = {check["name"]: check["measured"] for check in report["checks"] if check.get("measured")}
    fits = int(gpu_memory_mb // gpu_peak_mb) if gpu_peak_mb and gpu_memory_mb else None
    return {
        "score": report["score"], "max_score": report["max_score"],
        "full_marks": report["score"] == report["max_score"] > 0,
        "wall_seconds": wall_s, "grading_seconds": report["seconds"],
        "notebook_seconds": report["notebook_seconds"], "probe_seconds": report["probe_seconds"],
        "host_peak_memory_mb": report["peak_memory_mb"], "gpu_peak_memory_mb": gpu_peak_mb,
        "kernels_per_gpu_by_memory": fits, "isolation": report["isolation"],
        "calibration": report.get("calibration"), "measured_quantities": measured,
        "failed_checks": {c["name"]: c["message"] for c in report["checks"] if not c["passed"]},
    }


def stage_grade(labs, profile, work, budget, facts):
    figures = {}
    for lab in labs:
        if budget.left() < MIN_STAGE_S:
            figures[lab] = {"skipped": f"out of time ({budget.left():.0f} s left)"}
            continue
        out_dir = work / "grades" / lab
        reports, wall_s, gpu_peak, code = grade([REPO_ROOT / "solutions" / lab / f"{lab}.ipynb"], out_dir,
                                                profile, 1, budget.left() - 15)
        if not reports:
            figures[lab] = {"error": f"the grader wrote no report (exit code {code})"}
            continue
        figures[lab] = lab_figures(reports[0], wall_s, gpu_peak, facts.get("gpu_memory_mb"))
        print(f"gpu_run: {lab}: {json.dumps(figures[lab])[:400]}", flush=True)
    return figures


def stage_share(profile, work, budget):
    """SHARE_KERNELS copies of SHARE_LAB's solution graded at once (one GPU shared)."""
    if budget.left() < 3 * MIN_STAGE_S:
        return {"skipped": f"out of time ({budget.left():.0f} s left)"}
    folder = work / "share-input"
    folder.mkdir(parents=True)
    source = REPO_ROOT / "solutions" / SHARE_LAB / f"{SHARE_LAB}.ipynb"
    copies = []
    for index in range(SHARE_KERNELS):
        copies.append(folder / f"{SHARE_LAB}-copy{index}.ipynb")
        shutil.copy(source, copies[-1])
    reports, wall_s, gpu_peak, code = grade(copies, work / "grades" / "share", profile, SHARE_KERNELS,
                                            budget.left() - 15)
    return {"lab": SHARE_LAB, "kernels": SHARE_KERNELS, "graded": len(reports), "exit_code": code,
            "all_full_marks": len(reports) == SHARE_KERNELS and all(r["score"] == r["max_score"] > 0 for r in reports),
            "wall_seconds": wall_s, "gpu_peak_memory_mb": gpu_peak,
            "notebook_seconds": [r["notebook_seconds"] for r in reports]}


def stage_benchmark(runs, out, budget):
    """Runs each benchmark configuration in turn; merges their tables and results into `out`."""
    done, tables, results = [], [], []
    for arguments in runs:
        if budget.left() < MIN_STAGE_S:
            done.append({"arguments": " ".join(arguments), "skipped": f"out of time ({budget.left():.0f} s left)"})
            continue
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "benchmarks", *arguments, "--out", f"{folder}/b.md",
                       "--json", f"{folder}/b.json"]
            started = time.monotonic()
            try:
                code = subprocess.run(command, cwd=REPO_ROOT, timeout=max(budget.left() - 5, 1)).returncode
            except subprocess.TimeoutExpired:
                code = "timed out"
            if code == 0:
                tables.append(pathlib.Path(folder, "b.md").read_text())
                results.append(json.loads(pathlib.Path(folder, "b.json").read_text()))
        done.append({"arguments": " ".join(arguments), "exit_code": code,
                     "seconds": round(time.monotonic() - started, 1)})
    if results:
        (out / "benchmarks.md").write_text("\n\n".join(tables))
        (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    return {"runs": done, "exit_code": 0 if all(run.get("exit_code") == 0 for run in done) else 1}


def write_summary(out, summary):
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# GPU run ({summary['mode']}, profile {summary['profile']})", "",
             f"Device: {json.dumps(summary['device'])}", "",
             "| lab | score | wall s | notebook s | probe s | GPU peak MiB | kernels/GPU | isolation |",
             "|---|---|---|---|---|---|---|---|"]
    for lab, row in summary["labs"].items():
        if "score" not in row:
            lines.append(f"| {lab} | {row.get('skipped') or row.get('error')} | | | | | | |")
            continue
        lines.append(f"| {lab} | {row['score']:g}/{row['max_score']:g} | {row['wall_seconds']} | "
                     f"{row['notebook_seconds']} | {row['probe_seconds']} | {row['gpu_peak_memory_mb']} | "
                     f"{row['kernels_per_gpu_by_memory']} | {row['isolation']} |")
    lines += ["", f"Sharing: {json.dumps(summary['share'])}", "", f"Benchmark: {json.dumps(summary['benchmark'])}",
              f"Total: {summary['seconds']} s"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU check of this script: fast profile, lab3, 1 round")
    parser.add_argument("--profile", help="default: full (fast with --tiny)")
    parser.add_argument("--budget-s", type=float, help=f"default {DEFAULT_BUDGET_S} ({TINY_BUDGET_S} with --tiny)")
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    arguments.budget_s = arguments.budget_s or (TINY_BUDGET_S if arguments.tiny else DEFAULT_BUDGET_S)
    budget = Budget(arguments.budget_s)
    profile = arguments.profile or ("fast" if arguments.tiny else "full")
    arguments.out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu-run-"))
    facts = device_facts()
    print(f"gpu_run: {json.dumps(facts)}", flush=True)
    labs = stage_grade(TINY_LABS if arguments.tiny else LABS, profile, work, budget, facts)
    share = {"skipped": "tiny mode"} if arguments.tiny else stage_share(profile, work, budget)
    benchmark = stage_benchmark(TINY_BENCHMARK_RUNS if arguments.tiny else BENCHMARK_RUNS, arguments.out, budget)
    with tarfile.open(arguments.out / "grades.tar.gz", "w:gz") as archive:
        if (work / "grades").is_dir():
            archive.add(work / "grades", arcname="grades")
    summary = {"mode": "tiny" if arguments.tiny else "full", "profile": profile, "device": facts, "labs": labs,
               "share": share, "benchmark": benchmark, "budget_s": arguments.budget_s,
               "seconds": round(time.monotonic() - started, 1)}
    write_summary(arguments.out, summary)
    shutil.rmtree(work, ignore_errors=True)
    graded = [row for row in labs.values() if "score" in row]
    print(f"gpu_run: done in {summary['seconds']} s; {sum(r['full_marks'] for r in graded)}/{len(labs)} labs at full marks")
    return 0 if graded and all(r["full_marks"] for r in graded) else 1


if __name__ == "__main__":
    sys.exit(main())
