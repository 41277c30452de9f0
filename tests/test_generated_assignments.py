"""The student versions and solutions are generated from source/ and up to date.

Also: no solution or hidden-test text reaches assignments/, and every hidden check cell of
a source notebook matches a check of the autograder (same name, same points).
"""

import json
import pathlib
import subprocess
import sys

import pytest

from autograder.judge import check_points
from autograder.registry import LABS

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE_NOTEBOOKS = sorted((REPO_ROOT / "source").glob("*/*.ipynb"))
LAB_NOTEBOOKS = [path for path in SOURCE_NOTEBOOKS if path.parent.name in LABS]
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS",
                    "run_hidden_check")


def _code_cells(path):
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def _solution_lines(cell):
    """Lines between the solution markers of a source cell (what students must write)."""
    lines, inside = [], False
    for line in "".join(cell["source"]).splitlines():
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def test_every_lab_has_a_source_notebook():
    assert sorted(path.parent.name for path in LAB_NOTEBOOKS) == sorted(LABS)


@pytest.mark.slow
def test_generated_folders_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "generate_assignments.py"), "--check"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", LAB_NOTEBOOKS, ids=lambda path: path.parent.name)
def test_student_version_has_no_solution_or_hidden_text(source):
    student = REPO_ROOT / "assignments" / source.parent.name / source.name
    student_text = "\n".join("".join(cell["source"]) for cell in json.loads(student.read_text())["cells"])
    for marker in SOLUTION_MARKERS:
        assert marker not in student_text, f"{student} contains {marker!r}"
    # Solution lines in the student's code cells; the instructions may quote a line.
    student_code = "\n".join("".join(cell["source"]) for cell in _code_cells(student))
    leaked = [line for cell in _code_cells(source) for line in _solution_lines(cell)
              if len(line) > 25 and line in student_code]
    assert leaked == [], f"solution lines in {student}: {leaked[:3]}"
    assert "NotImplementedError" in student_text


@pytest.mark.parametrize("source", LAB_NOTEBOOKS, ids=lambda path: path.parent.name)
def test_hidden_check_cells_match_the_autograder(source):
    lab = source.parent.name
    cells = {}
    for cell in _code_cells(source):
        metadata = cell["metadata"].get("nbgrader", {})
        if metadata.get("grade"):
            cells[metadata["grade_id"]] = (metadata["points"], "".join(cell["source"]))
    expected = check_points(lab)
    assert sorted(cells) == sorted(expected)
    for name, (points, text) in cells.items():
        assert float(points) == expected[name], name
        assert f'run_hidden_check("{lab}", "{name}", globals())' in text


@pytest.mark.parametrize("source", SOURCE_NOTEBOOKS, ids=lambda path: path.parent.name)
def test_notebooks_use_the_python3_kernel_and_import_course_lib_first(source):
    notebook = json.loads(source.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    first_code = "".join(_code_cells(source)[0]["source"])
    assert "import course_lib" in first_code
    before_keras = first_code.split("import keras")[0]
    assert "import course_lib" in before_keras
