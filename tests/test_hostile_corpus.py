"""Grades the corpus of hostile and broken submissions (tests/hostile_corpus) as one batch.

Every case has its expected outcome in `expected.json`; the batch runs with two workers and
must give the same grades as one worker does for the same submissions, and resume without
regrading finished submissions.
"""

import json
import pathlib
import shutil
import time

import psutil
import pytest

from autograder.grade import grade_batch
from autograder.reports import CLASS_CSV, REPORT_FILE

CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "hostile_corpus"
LIMITS = json.loads((CORPUS_DIR / "limits.json").read_text())
CASES = sorted(path.name for path in CORPUS_DIR.iterdir() if (path / "expected.json").is_file())

pytestmark = pytest.mark.slow


def _submission_of(case, destination):
    """Copies a case's submission to destination/<case>(.ipynb), so its report is named after it."""
    source = CORPUS_DIR / case
    if (source / "submission").is_dir():
        target = destination / case
        shutil.copytree(source / "submission", target)
    else:
        target = destination / f"{case}.ipynb"
        shutil.copy(source / "lab3.ipynb", target)
    return target


@pytest.fixture(scope="module")
def graded_corpus(tmp_path_factory):
    submissions_dir = tmp_path_factory.mktemp("submissions")
    out_dir = tmp_path_factory.mktemp("reports")
    submissions = [_submission_of(case, submissions_dir) for case in CASES]
    progress = []
    reports = grade_batch(
        submissions, out_dir, workers=2, progress=progress.append, lab="lab3", profile="fast",
        timeout_s=LIMITS["timeout_s"], memory_limit_mb=LIMITS["memory_limit_mb"],
    )
    return {"reports": dict(zip(CASES, reports)), "out_dir": out_dir, "progress": progress,
            "submissions": submissions}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES)
def test_case_gets_its_expected_outcome(graded_corpus, case):
    expected = json.loads((CORPUS_DIR / case / "expected.json").read_text())
    report = graded_corpus["reports"][case]
    assert report["status"] == expected["status"], report["summary"]
    checks = {check["name"]: check for check in report["checks"]}
    for name in expected["passed"]:
        assert checks[name]["passed"], f"{case}: {name} should pass: {checks[name]['message']}"
    for name in expected["failed"]:
        assert not checks[name]["passed"], f"{case}: {name} should fail"
    for name, text in expected["message_contains"].items():
        assert text in checks[name]["message"], checks[name]["message"]
    for text in expected["summary_contains"]:
        assert text in report["summary"], report["summary"]
    if expected["max_score_at_most"] is not None:
        assert report["score"] <= expected["max_score_at_most"]
    folder = graded_corpus["out_dir"] / report["submission"]
    feedback = (folder / "feedback.html").read_text() + (folder / "feedback.ipynb").read_text()
    for text in expected["feedback_excludes"] + ["_course_probe_main", "BEGIN HIDDEN TESTS"]:
        assert text not in feedback, f"{case}: feedback shows {text!r}"
    assert (folder / "results.json").is_file()


def test_no_submission_process_survives(graded_corpus):
    leftovers = [
        process.info["cmdline"]
        for process in psutil.process_iter(["cmdline"])
        if process.info["cmdline"] and "import time; time.sleep(600)" in " ".join(process.info["cmdline"])
    ]
    assert leftovers == []


def test_batch_writes_a_class_csv_with_every_submission(graded_corpus):
    lines = (graded_corpus["out_dir"] / CLASS_CSV).read_text().strip().splitlines()
    assert len(lines) == len(CASES) + 1
    assert len(graded_corpus["progress"]) == len(CASES)
    assert graded_corpus["progress"][-1].startswith(f"[{len(CASES)}/{len(CASES)}]")


def test_one_worker_gives_the_same_grades_and_resume_skips_finished(graded_corpus, tmp_path):
    chosen = ["honest_correct_kl", "honest_flipped_kl", "monkeypatch_numpy", "invalid_json"]
    submissions = [_submission_of(case, tmp_path) for case in chosen]
    out_dir = tmp_path / "reports"
    first = grade_batch(submissions, out_dir, workers=1, progress=lambda line: None, lab="lab3",
                        profile="fast", timeout_s=LIMITS["timeout_s"],
                        memory_limit_mb=LIMITS["memory_limit_mb"])
    for case, report in zip(chosen, first):
        assert report["score"] == graded_corpus["reports"][case]["score"], case
    # An interrupted batch: one report missing, the others finished. Resume regrades only it.
    report_files = {case: out_dir / report["submission"] / REPORT_FILE for case, report in zip(chosen, first)}
    shutil.rmtree(report_files["honest_flipped_kl"].parent)
    # Unreadable submissions (status "not graded") are cheap and simply checked again.
    stamps = {case: path.stat().st_mtime_ns for (case, path), report in zip(report_files.items(), first)
              if path.exists() and report["status"] == "graded"}
    time.sleep(0.05)
    second = grade_batch(submissions, out_dir, workers=1, progress=lambda line: None, lab="lab3",
                         profile="fast", timeout_s=LIMITS["timeout_s"],
                         memory_limit_mb=LIMITS["memory_limit_mb"], resume=True)
    for case, path in report_files.items():
        if case in stamps:
            assert path.stat().st_mtime_ns == stamps[case], f"{case} was regraded"
    assert report_files["honest_flipped_kl"].is_file()
    assert [r["score"] for r in second] == [r["score"] for r in first]
