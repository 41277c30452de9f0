"""The main command's report folder (`COURSE_OUT`): it is emptied before grading, so it must
never be a folder that holds something else. Each refusal happens before any setup or grading,
and a relative `COURSE_OUT` is taken from the caller's folder (here: tmp_path, not the
repository; were it taken from the repository, the folder would not exist and the command would
go on to grade instead of refusing)."""

import os
import pathlib
import subprocess

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MAIN = REPO_ROOT / "scripts" / "main.sh"


def _main(course_out, cwd):
    return subprocess.run(["bash", str(MAIN)], cwd=cwd, env={**os.environ, "COURSE_OUT": str(course_out)},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("relative", [True, False])
def test_a_folder_of_other_files_is_refused_and_kept(tmp_path, relative):
    folder = tmp_path / "my notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    completed = _main("my notes" if relative else folder, tmp_path)
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "refusing to delete them" in completed.stderr and str(folder) in completed.stderr
    assert (folder / "thesis.tex").read_text() == "precious"


def test_the_repository_and_its_parents_are_refused(tmp_path):
    for target in (REPO_ROOT, REPO_ROOT.parent):
        completed = _main(target, tmp_path)
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert "holds the repository" in completed.stderr
    assert (REPO_ROOT / "scripts" / "main.sh").is_file()


def test_a_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "grades"
    path.write_text("keep me")
    completed = _main("grades", tmp_path)
    assert completed.returncode == 2 and "is a file, not a folder" in completed.stderr
    assert path.read_text() == "keep me"
