"""Instructors who use `nbgrader autograde` and its gradebook see the grader's points.

A real nbgrader course is made in a temporary folder from this repository's source
notebook; the reference solution and the untouched student version are submitted and
autograded by nbgrader itself, and the gradebook's per-check scores are compared with
the autograder's checks.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from autograder.judge import check_points

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAB = "lab3"

pytestmark = pytest.mark.slow


def _nbgrader(course, *arguments):
    environment = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *arguments, f"--CourseDirectory.root={course}"],
        cwd=course, env=environment, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def gradebook(tmp_path_factory):
    from nbgrader.api import Gradebook

    course = tmp_path_factory.mktemp("nbgrader-course")
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)
    shutil.copytree(REPO_ROOT / "source" / LAB, course / "source" / LAB)
    _nbgrader(course, "generate_assignment", LAB, "--force")
    submissions = {
        "reference": REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb",
        "untouched": course / "assignments" / LAB / f"{LAB}.ipynb",
    }
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / LAB
        folder.mkdir(parents=True)
        shutil.copy(notebook, folder / f"{LAB}.ipynb")
    _nbgrader(course, "autograde", LAB, "--create", "--force")
    database = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(database) as book:
        scores = {}
        for student in submissions:
            submission = book.find_submission_notebook(LAB, LAB, student)
            scores[student] = {grade.name: (grade.score, grade.max_score) for grade in submission.grades
                               if grade.max_score}
    return scores


def test_reference_solution_gets_every_check_under_nbgrader(gradebook):
    expected = check_points(LAB)
    assert gradebook["reference"] == {name: (points, points) for name, points in expected.items()}


def test_untouched_student_version_gets_zero_under_nbgrader(gradebook):
    expected = check_points(LAB)
    assert gradebook["untouched"] == {name: (0.0, points) for name, points in expected.items()}
