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

from autograder.grade import grade_batch, grading_secret
from autograder.reports import CLASS_CSV, REPORT_FILE

CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "hostile_corpus"
LIMITS = json.loads((CORPUS_DIR / "limits.json").read_text())
CASES = sorted(path.name for path in CORPUS_DIR.iterdir() if (path / "expected.json").is_file())
SHORT_TIMEOUT_CASES = set(LIMITS["short_timeout_cases"])
REPO_ROOT = CORPUS_DIR.parent.parent
# What `escape_by_file_handle` tries to create outside its scratch folder.
HOST_MARKER = "pwned-by-submission"

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
    # The time-out cases run into a shorter limit of their own (limits.json), in the same batch.
    overrides = {submission: {"timeout_s": LIMITS["short_timeout_s"]}
                 for case, submission in zip(CASES, submissions) if case in SHORT_TIMEOUT_CASES}
    reports = grade_batch(
        submissions, out_dir, workers=2, progress=progress.append, lab="lab3", profile="fast",
        timeout_s=LIMITS["timeout_s"], memory_limit_mb=LIMITS["memory_limit_mb"], overrides=overrides,
    )
    return {"reports": dict(zip(CASES, reports)), "out_dir": out_dir, "progress": progress,
            "submissions": submissions}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_the_short_time_limit_is_used_by_the_time_out_cases(graded_corpus):
    assert SHORT_TIMEOUT_CASES <= set(CASES) and LIMITS["short_timeout_s"] < LIMITS["timeout_s"]
    for case in SHORT_TIMEOUT_CASES:
        summary = graded_corpus["reports"][case]["summary"]
        assert f"time limit of {LIMITS['short_timeout_s']} s" in summary, summary


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
    html = (folder / "feedback.html").read_text()
    feedback = html + (folder / "feedback.ipynb").read_text()
    for text in expected["feedback_excludes"] + ["_course_probe_main", "BEGIN HIDDEN TESTS", grading_secret()]:
        assert text not in feedback, f"{case}: feedback shows {text!r}"
    for text in expected.get("html_excludes", []):
        assert text not in html, f"{case}: feedback.html keeps the student's {text!r} live"
    assert (folder / "results.json").is_file()


def test_every_graded_case_ran_sandboxed(graded_corpus):
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed here (scripts/setup.sh installs it when run as root)")
    isolations = {report.get("isolation") for report in graded_corpus["reports"].values() if report["status"] == "graded"}
    assert isolations == {"bwrap"}


def test_nothing_was_written_outside_the_scratch_folders(graded_corpus):
    import os
    import sys

    places = [REPO_ROOT, REPO_ROOT / "course_lib", pathlib.Path("/etc"), pathlib.Path("/usr/lib"),
              pathlib.Path(os.__file__).parent, pathlib.Path(sys.prefix)]
    assert [str(place) for place in places if (place / HOST_MARKER).exists()] == []


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
