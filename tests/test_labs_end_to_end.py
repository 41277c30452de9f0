"""Every lab end to end with a real Jupyter kernel, in the fast profile.

The reference solutions are graded by the README's main command (`bash scripts/main.sh`,
which `scripts/test.sh` runs before pytest and which fails unless they all get full marks);
these tests read its reports: no cell error and every figure drawn. The untouched student
version runs up to its first stub, which must raise NotImplementedError (no syntax or other
error before it), and scores 0 without crashing the grader.
"""

import json
import pathlib

import pytest

from autograder.grade import grade_batch
from autograder.registry import LABS

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MAIN_REPORTS = REPO_ROOT / "build" / "reference-grades"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grades the student versions in one batch (two workers)."""
    out_dir = tmp_path_factory.mktemp("lab-reports")
    keys = [("assignments", lab) for lab in sorted(LABS)]
    submissions = [REPO_ROOT / folder / lab / f"{lab}.ipynb" for folder, lab in keys]
    reports = grade_batch(submissions, out_dir, workers=2, progress=print, profile="fast")
    return {"reports": dict(zip(keys, reports)), "out_dir": out_dir}


@pytest.mark.parametrize("lab", sorted(LABS))
def test_solution_scores_full_marks_and_draws_its_figures(lab):
    path = MAIN_REPORTS / lab / "report.json"
    if not path.is_file():
        pytest.skip(f"no report of the main command at {path}: run `bash scripts/main.sh` (scripts/test.sh does)")
    report = json.loads(path.read_text())
    assert report["isolation"] in ("bwrap", "process")
    failed = {check["name"]: check["message"] for check in report["checks"] if not check["passed"]}
    assert failed == {}, report["summary"]
    assert report["score"] == report["max_score"] > 0
    assert report["cell_errors"] == [], report["cell_errors"]
    feedback = json.loads((MAIN_REPORTS / report["submission"] / "feedback.ipynb").read_text())
    images = [output for cell in feedback["cells"] for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, f"{lab}: the solution drew no figure"


@pytest.mark.parametrize("lab", sorted(LABS))
def test_untouched_student_version_runs_to_its_first_stub_and_scores_zero(graded, lab):
    report = graded["reports"][("assignments", lab)]
    assert report["status"] == "graded"
    assert report["score"] == 0, [c for c in report["checks"] if c["passed"]]
    assert report["cell_errors"], "the student version should stop at a stub"
    first_error = report["cell_errors"][0]["error"]
    assert first_error.startswith("NotImplementedError"), first_error
