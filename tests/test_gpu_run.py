"""The prepared GPU run's CPU path (`scripts/gpu_run.sh --tiny`), as CI can run it.

The same script runs on a GPU machine in the full profile; here it grades lab3's reference
solution through the real grader, runs one benchmark round and writes what the device tool
brings back (at most 8 plain files, named in letters, digits, '.', '_' and '-').
"""

import json
import os
import pathlib
import re
import subprocess
import tarfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_FILES_BACK = 8
PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out = elsewhere / "gpu out"  # a space: the script must quote its paths
    # Relative: taken from the caller's folder, not from the repository the script moves to.
    environment = dict(os.environ, OUT="gpu out")
    completed = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_run.sh"), "--tiny"], cwd=elsewhere,
                               env=environment, capture_output=True, text=True, timeout=1500)
    return completed, out


@pytest.mark.slow
def test_tiny_run_grades_lab3_at_full_marks_and_reports_its_figures(tiny_run):
    completed, out = tiny_run
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "tiny" and summary["profile"] == "fast"
    assert summary["device"]["cuda_available"] is False and summary["device"]["isolation"] in ("bwrap", "process")
    lab3 = summary["labs"]["lab3"]
    assert lab3["full_marks"] and lab3["failed_checks"] == {}
    assert 0 < lab3["notebook_seconds"] < lab3["grading_seconds"] <= lab3["wall_seconds"]
    assert lab3["gpu_peak_memory_mb"] is None  # no nvidia-smi here: said, not invented
    # The calibrated quantities the checks measured, for calibrating a profile from this run.
    quality = lab3["measured_quantities"]["test_sample_quality"]
    assert set(quality) == {"max_frechet_distance", "min_classifier_score"}
    assert all(entry["holds"] for entry in quality.values())
    assert lab3["calibration"]["profile"] == "fast" and lab3["calibration"]["measured"] is True
    assert summary["benchmark"]["exit_code"] == 0
    benchmark = json.loads((out / "benchmarks.json").read_text())
    assert "lab3_dense_vae" in json.dumps(benchmark)
    assert "| lab3 | 20/20 |" in (out / "summary.md").read_text().replace(".0/", "/")


@pytest.mark.slow
def test_tiny_run_leaves_only_what_the_device_tool_brings_back(tiny_run):
    _, out = tiny_run
    files = sorted(path for path in out.rglob("*") if path.is_file())
    assert len(files) <= MAX_FILES_BACK, files
    assert {path.name for path in files} >= {"summary.json", "summary.md", "grades.tar.gz", "log.txt"}
    assert all(PLAIN_NAME.match(path.name) and path.parent == out for path in files), files
    with tarfile.open(out / "grades.tar.gz") as archive:
        names = archive.getnames()
    assert any(name.endswith("lab3/lab3/report.json") for name in names), names[:10]


def test_without_wheels_or_a_venv_it_says_what_to_run(tmp_path):
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "gpu_run.sh"
    script.write_text((REPO_ROOT / "scripts" / "gpu_run.sh").read_text())
    completed = subprocess.run(["bash", str(script), "--tiny"], cwd=tmp_path, env=dict(os.environ, OUT=str(tmp_path / "o")),
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "scripts/gpu_pack.sh" in completed.stderr and "scripts/setup.sh" in completed.stderr
