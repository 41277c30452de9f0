"""The grading CLI as a TA runs it: another working directory, relative paths, odd folder names,
a data folder and the Python environment reached through symlinks, one batch for a whole class
folder.

Every submission is a small lab3 notebook (a numpy KL, correct or with the sign flipped, and a
line that loads MNIST), so each report can be matched to its own notebook.
"""

import csv
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
KL_CHECK = "test_kl_closed_form"
_CORPUS = importlib.util.spec_from_file_location("make_corpus", REPO_ROOT / "tests" / "hostile_corpus" / "make_corpus.py")
make_corpus = importlib.util.module_from_spec(_CORPUS)
_CORPUS.loader.exec_module(make_corpus)
CORRECT_KL, FLIPPED_KL = make_corpus.CORRECT_KL, make_corpus.FLIPPED_KL
LOAD_DATA = """from course_lib.data import load_mnist
images, _ = load_mnist("test", limit=5)
print("DATA-OK", images.shape, "MARKER-{marker}")
"""
# Folder name -> whether its KL is correct. The first three sanitize alike ("a_b").
STUDENTS = {
    "a b": True,
    "a_b": False,
    "a_b-2": True,
    ".dotted": False,
    "élève ü": True,
    "x" * 150: False,
}

pytestmark = pytest.mark.slow


def _linked_python(base):
    """This Python, started through a symlink to its environment's folder (a linked venv or home)."""
    from autograder import sandbox

    prefix, executable = os.path.realpath(sys.prefix), sandbox.interpreter()
    if os.path.commonpath([prefix, executable]) != prefix:
        return sys.executable  # not inside its environment's folder: nothing to link
    link = base / "env-link"
    link.symlink_to(prefix, target_is_directory=True)
    return str(link / os.path.relpath(executable, prefix))


def _notebook(correct, marker):
    book = nbformat.v4.new_notebook()
    kl = CORRECT_KL if correct else FLIPPED_KL
    book.cells = [nbformat.v4.new_code_cell(kl), nbformat.v4.new_code_cell(LOAD_DATA.format(marker=marker))]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("ta")
    class_dir = base / "class folder"
    for index, name in enumerate(STUDENTS):
        folder = class_dir / name
        folder.mkdir(parents=True)
        nbformat.write(_notebook(STUDENTS[name], index), str(folder / "lab3.ipynb"))
    (class_dir / ".DS_Store").write_bytes(b"\x00\x01")
    data_link = base / "data-link"
    data_link.symlink_to(os.environ["COURSE_DATA_DIR"])
    cwd = base / "elsewhere"
    cwd.mkdir()
    environment = dict(os.environ, COURSE_DATA_DIR=os.path.relpath(data_link, cwd))
    python = _linked_python(base)
    result = subprocess.run(
        [python, "-m", "autograder", "grade", os.path.relpath(class_dir, cwd), "--expand", "--lab", "lab3",
         "--out", "reports/out", "--workers", "2", "--timeout", "90"],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=900,
    )
    out_dir = cwd / "reports" / "out"
    reports = {}
    for path in out_dir.glob("*/report.json"):
        report = json.loads(path.read_text())
        reports[report["submission"]] = report
    return {"result": result, "out_dir": out_dir, "reports": reports, "python": python}


def test_the_cli_succeeds_and_says_what_it_skipped(graded):
    result = graded["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ".DS_Store" in result.stdout and "Skipped" in result.stdout
    assert f"Grading {len(STUDENTS)} submission(s)" in result.stdout


def test_one_report_per_submission_never_shared(graded):
    reports = graded["reports"]
    assert len(reports) == len(STUDENTS), sorted(reports)
    rows = list(csv.DictReader((graded["out_dir"] / "grades.csv").open()))
    assert len(rows) == len(STUDENTS)
    assert len({row["submission"] for row in rows}) == len(STUDENTS)
    assert all(len(name) <= 100 for name in reports)


def test_each_report_grades_its_own_notebook_with_the_data(graded):
    """The marker printed by each notebook lands in its own feedback; its KL verdict is its own."""
    seen = set()
    for name, report in graded["reports"].items():
        feedback = (graded["out_dir"] / name / "feedback.ipynb").read_text()
        markers = [index for index in range(len(STUDENTS)) if f"MARKER-{index}" in feedback]
        assert len(markers) == 1, (name, markers)
        student = list(STUDENTS)[markers[0]]
        seen.add(student)
        assert "DATA-OK" in feedback, (name, report["summary"])
        kl = {check["name"]: check for check in report["checks"]}[KL_CHECK]
        assert kl["passed"] == STUDENTS[student], (student, kl["message"])
        assert report["status"] == "graded"
    assert seen == set(STUDENTS)


def test_a_linked_python_environment_keeps_the_sandbox(graded):
    """Through a linked environment folder the kernels get the isolation the real path gets."""
    if "env-link" not in graded["python"]:
        pytest.skip(f"this Python ({sys.executable}) is not inside its environment's folder ({sys.prefix})")
    from autograder import sandbox

    expected = subprocess.run(
        [sandbox.interpreter(), "-c", "from autograder import sandbox; print(sandbox.isolation_mode())"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True).stdout.split()[-1]
    assert {report["isolation"] for report in graded["reports"].values()} == {expected}
    assert expected == "process" or "WITHOUT bubblewrap" not in graded["result"].stderr, graded["result"].stderr[-2000:]
