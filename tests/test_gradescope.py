"""Gradescope: results.json per the autograder specification, the bundle, run_autograder."""

import json
import os
import pathlib
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest

from autograder import reports

VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}
OUTPUT_FORMATS = {"text", "html", "simple_format", "md", "ansi"}


def assert_gradescope_results(results):
    """Checks `results` against the Gradescope results.json specification (fields and types)."""
    assert isinstance(results["score"], (int, float)) and not isinstance(results["score"], bool)
    assert isinstance(results["execution_time"], int)
    assert isinstance(results["output"], str)
    assert results["output_format"] in OUTPUT_FORMATS
    assert results["visibility"] in VISIBILITIES
    assert results["stdout_visibility"] in VISIBILITIES
    assert isinstance(results["tests"], list)
    for test in results["tests"]:
        assert isinstance(test["name"], str)
        assert isinstance(test["score"], float) and isinstance(test["max_score"], float)
        assert test["status"] in {"passed", "failed"}
        assert isinstance(test["output"], str)
        assert test["output_format"] in OUTPUT_FORMATS
        assert test["visibility"] in VISIBILITIES


def report():
    return {
        "submission": "eve", "lab": "lab3", "score": 2, "max_score": 5.0, "status": "graded",
        "summary": "The notebook ran for 3 s.", "seconds": 12.7,
        "checks": [
            {"name": "test_a", "points": 2, "max_points": 2, "passed": True, "message": "ok"},
            {"name": "test_b", "points": 0.0, "max_points": 3.0, "passed": False,
             "message": "\x1b[31mwrong\x1b[0m <b>shape</b>"},
        ],
    }


def test_results_follow_the_specification_with_the_default_visibility(monkeypatch):
    monkeypatch.delenv(reports.VISIBILITY_ENV_VAR, raising=False)
    results = reports.gradescope_results(report())
    assert_gradescope_results(results)
    assert results["score"] == 2.0 and results["execution_time"] == 12
    assert results["visibility"] == "visible" and results["stdout_visibility"] == "hidden"
    assert [test["visibility"] for test in results["tests"]] == ["after_due_date"] * 2
    assert [test["status"] for test in results["tests"]] == ["passed", "failed"]
    assert results["tests"][1]["output"] == "wrong <b>shape</b>"  # plain text, no ANSI codes
    assert {test["output_format"] for test in results["tests"]} == {"text"}


@pytest.mark.parametrize("value", sorted(VISIBILITIES))
def test_visibility_comes_from_the_environment(monkeypatch, value):
    monkeypatch.setenv(reports.VISIBILITY_ENV_VAR, value)
    results = reports.gradescope_results(report())
    assert {test["visibility"] for test in results["tests"]} == {value}
    assert results["visibility"] == "visible"


def test_visibility_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(reports.VISIBILITY_ENV_VAR, "hidden")
    results = reports.gradescope_results(report(), visibility="visible")
    assert {test["visibility"] for test in results["tests"]} == {"visible"}


def test_invalid_visibility_is_refused_with_the_allowed_values(monkeypatch):
    monkeypatch.setenv(reports.VISIBILITY_ENV_VAR, "after_deadline")
    with pytest.raises(ValueError, match="after_deadline") as caught:
        reports.gradescope_results(report())
    assert all(value in str(caught.value) for value in VISIBILITIES)
    assert reports.VISIBILITY_ENV_VAR in str(caught.value)
    with pytest.raises(ValueError, match="'Visible'"):
        reports.gradescope_results(report(), visibility="Visible")


# --------------------------------------------------------------------------------------- bundle


def environment(**extra):
    env = dict(os.environ)
    env.pop(reports.VISIBILITY_ENV_VAR, None)
    env.pop("COURSE_GRADE_COMMAND", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Built with the real CLI, from another working directory, with a relative --out."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    completed = subprocess.run(
        [sys.executable, "-m", "autograder", "gradescope-bundle", "--lab", "lab3",
         "--out", "out/lab3-autograder.zip", "--visibility", "hidden"],
        cwd=cwd, env=environment(), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    path = cwd / "out" / "lab3-autograder.zip"
    assert path.is_file(), completed.stdout
    return path


def test_bundle_holds_the_course_and_nothing_secret(bundle):
    with zipfile.ZipFile(bundle) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        config = json.loads(archive.read("gradescope.json"))
    names = set(infos)
    assert {"setup.sh", "run_autograder", "pyproject.toml", "README.md", "gradescope.json"} <= names
    assert "autograder/checks/test_lab3.py" in names and "autograder/calibration/lab3.json" in names
    assert "course_lib/__init__.py" in names and "autograder/gradescope.py" in names
    tops = {name.split("/")[0] for name in names}
    assert not tops & {"source", "solutions", "tests", ".git", "build", ".venv", "assignments", "scripts"}
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    for script in ("setup.sh", "run_autograder"):
        mode = infos[script].external_attr >> 16
        assert mode & stat.S_IXUSR, f"{script} is not executable in the zip (mode {oct(mode)})"
    assert config["lab"] == "lab3" and config["profile"] == "fast" and config["visibility"] == "hidden"


def test_bundle_refuses_a_bad_visibility(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "autograder", "gradescope-bundle", "--lab", "lab3",
         "--out", "b.zip", "--visibility", "sometimes"],
        cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    assert "sometimes" in completed.stderr and "after_due_date" in completed.stderr
    assert not (tmp_path / "b.zip").exists()


def gradescope_tree(bundle, root):
    """Unzips the bundle as Gradescope does: source/, run_autograder copied to the root."""
    (root / "source").mkdir(parents=True)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
        for info in archive.infolist():  # zipfile drops permissions; unzip keeps them
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / "source" / info.filename, mode & 0o777)
    runner = root / "run_autograder"
    runner.write_bytes((root / "source" / "run_autograder").read_bytes())
    runner.chmod(0o755)
    return root


def run_autograder(root, **extra):
    env = environment(GRADESCOPE_ROOT=str(root), COURSE_PYTHON=sys.executable, **extra)
    completed = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    path = root / "results" / "results.json"
    assert path.is_file(), completed.stdout + completed.stderr
    results = json.loads(path.read_text())
    assert_gradescope_results(results)
    return results, completed


FAKE_GRADER = textwrap.dedent("""
    import json, os, pathlib, sys
    from autograder import reports
    submission, out = sys.argv[1], sys.argv[sys.argv.index("--out") + 1]
    lab = sys.argv[sys.argv.index("--lab") + 1]
    folder = pathlib.Path(out) / "submission"
    folder.mkdir(parents=True)
    notebooks = sorted(p.name for p in pathlib.Path(submission).glob("*.ipynb"))
    report = {"lab": lab, "score": 3.0, "max_score": 20.0, "summary": "fake: " + ",".join(notebooks),
              "seconds": 1, "checks": [{"name": "test_fake", "points": 3.0, "max_points": 20.0,
                                       "passed": False, "message": os.environ["COURSE_PROFILE"]}]}
    (folder / "results.json").write_text(json.dumps(reports.gradescope_results(report)))
""")


def test_run_autograder_copies_the_graders_results(bundle, tmp_path):
    root = gradescope_tree(bundle, tmp_path / "autograder")
    (root / "submission" / "lab3.ipynb").write_text("{}")
    script = tmp_path / "fake_grader.py"
    script.write_text(FAKE_GRADER)
    results, _ = run_autograder(root, COURSE_GRADE_COMMAND=f"{sys.executable} {script}")
    assert results["score"] == 3.0 and results["output"] == "fake: lab3.ipynb"
    # The bundle's visibility and profile reach the grader.
    assert results["tests"][0]["visibility"] == "hidden" and results["tests"][0]["output"] == "fast"


def test_a_crash_in_grading_still_gives_score_zero_and_the_error(bundle, tmp_path):
    root = gradescope_tree(bundle, tmp_path / "autograder")
    (root / "submission" / "lab3.ipynb").write_text("{}")
    script = tmp_path / "crashing_grader.py"
    script.write_text("import sys\nprint('Traceback: RuntimeError: boom in the grader')\nsys.exit(3)\n")
    results, _ = run_autograder(root, COURSE_GRADE_COMMAND=f"{sys.executable} {script}")
    assert results["score"] == 0 and results["tests"] == []
    assert "boom in the grader" in results["output"] and "status 3" in results["output"]
    assert results["visibility"] == "visible"


def test_python_that_cannot_start_still_gives_a_results_file(bundle, tmp_path):
    root = gradescope_tree(bundle, tmp_path / "autograder")
    env = environment(GRADESCOPE_ROOT=str(root), COURSE_PYTHON=str(tmp_path / "no-such-python"))
    completed = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    assert_gradescope_results(results)
    assert results["score"] == 0 and "could not start" in results["output"]


def test_real_grader_on_an_invalid_notebook(bundle, tmp_path):
    """The real `python -m autograder grade` (no kernel: the notebook is not JSON)."""
    root = gradescope_tree(bundle, tmp_path / "autograder")
    (root / "submission" / "lab3.ipynb").write_text("{not json")
    results, completed = run_autograder(root)
    assert results["score"] == 0 and "not valid JSON" in results["output"]
    assert results["tests"] and {test["visibility"] for test in results["tests"]} == {"hidden"}
    assert {test["status"] for test in results["tests"]} == {"failed"}
    assert "python -m autograder grade" in completed.stdout or "autograder grade" in completed.stdout
    assert list((root / "results").iterdir()) == [root / "results" / "results.json"]
