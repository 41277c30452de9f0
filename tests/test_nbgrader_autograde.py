"""nbgrader's gradebook gets its points from the sandboxed grader, never from the student's kernel.

Fast tests: the gradebook-writing logic on fake grader reports, the matching of test cells
with checks, the bridge that judges nothing, the released validate config.

Slow test: a real nbgrader course in a temporary folder for lab3 (exchange included), four
submissions (reference solution, untouched student version, a student version where only the
KL is written, a notebook that forges the bridge), `nbgrader autograde` as instructors run it, then
`python -m autograder nbgrader-autograde` through the real CLI from another working
directory; the gradebook, the feedback, `nbgrader release_feedback`,
`nbgrader generate_feedback` and `nbgrader export` are checked.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from autograder import nbgrader_bridge, nbgrader_sync
from autograder.judge import check_points
from check_grading import graded_cell

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAB = "lab3"
# A correct KL alone earns these; what each planted bug loses is tested in test_planted_bugs_lab3.
KL_CHECKS = {"test_kl_closed_form", "test_kl_sums_over_latent_dims"}
FEEDBACK_FORBIDDEN = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "run_hidden_check", "nbgrader_bridge",
                      str(REPO_ROOT / "autograder"), "autograder/checks", "site-packages/autograder")
FORGE_CELL = """\
# Forged: every hidden check "passes", whichever way it is called.
import sys
def run_hidden_check(*args, **kwargs):
    print("passed")
try:
    import autograder.nbgrader_bridge as _bridge
    _bridge.run_hidden_check = run_hidden_check
except Exception:
    pass
"""


def _forbidden_in_feedback_of(student):
    """The forger's own code names the bridge; nobody's feedback may show the grader's."""
    if student == "forger":
        return [text for text in FEEDBACK_FORBIDDEN if text not in ("run_hidden_check", "nbgrader_bridge")]
    return FEEDBACK_FORBIDDEN


def _nbgrader_environment():
    environment = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    environment.pop("NBGRADER_EXCHANGE_ROOT", None)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if not (environment.get("COURSE_GRADER_SECRET") or environment.get("COURSE_GRADER_SECRET_FILE")
            or (REPO_ROOT / ".grader-secret").is_file()):
        environment["COURSE_GRADER_SECRET"] = "test-secret-" + "7" * 40  # a checkout without setup.sh
    return environment


def _run(command, cwd, timeout=1500):
    result = subprocess.run(command, cwd=cwd, env=_nbgrader_environment(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _nbgrader(course, *arguments):
    return _run([sys.executable, "-m", "nbgrader", *arguments, f"--CourseDirectory.root={course}"], cwd=course)


# --- fast: the gradebook logic on fake reports ---------------------------------------------


def _source_grade_cells(lab):
    notebook = json.loads((REPO_ROOT / "source" / lab / f"{lab}.ipynb").read_text())
    cells = []
    for cell in notebook["cells"]:
        metadata = cell["metadata"].get("nbgrader", {})
        if metadata.get("grade") or metadata.get("solution"):
            cells.append((metadata, cell["cell_type"]))
    return cells


@pytest.fixture
def fake_course(tmp_path):
    """A course folder whose gradebook holds lab3's cells as `nbgrader generate_assignment` writes them."""
    from nbgrader.api import Gradebook

    shutil.copy(REPO_ROOT / "nbgrader_config.py", tmp_path)
    coursedir = nbgrader_sync.load_course_directory(tmp_path)
    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        book.update_or_create_assignment(LAB)
        book.add_notebook(LAB, LAB)
        for metadata, cell_type in _source_grade_cells(LAB):
            if metadata.get("grade"):
                book.add_grade_cell(metadata["grade_id"], LAB, LAB, max_score=float(metadata["points"]),
                                    cell_type=cell_type)
            if metadata.get("solution"):
                book.add_solution_cell(metadata["grade_id"], LAB, LAB)
    return tmp_path, coursedir


def _fake_report(passed, message="wrong"):
    return {
        "submission": "x", "lab": LAB, "status": "graded", "summary": "",
        "checks": [{"name": name, "points": points if name in passed else 0.0, "max_points": points,
                    "passed": name in passed, "message": "passed" if name in passed else message}
                   for name, points in check_points(LAB).items()],
    }


def _scores(coursedir, student):
    from nbgrader.api import Gradebook

    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        notebook = book.find_submission_notebook(LAB, LAB, student)
        return {grade.name: grade.score for grade in notebook.grades if grade.max_score}


def test_fake_reports_are_written_per_check_and_overwrite_nbgraders_scores(fake_course):
    from nbgrader.api import Gradebook

    _, coursedir = fake_course
    points = check_points(LAB)
    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        plan, = nbgrader_sync.plan_assignment(book, LAB)
        assert sorted(plan.graded_cells) == sorted(points)
        # What an in-kernel `nbgrader autograde` of a forged notebook would have stored.
        book.add_student("mallory")
        book.add_submission(LAB, "mallory")
        for name in points:
            book.find_grade(name, LAB, LAB, "mallory").auto_score = points[name]
        book.db.commit()
        written = nbgrader_sync.write_grades(book, LAB, plan, "mallory", _fake_report(passed=()))
        nbgrader_sync.write_grades(book, LAB, plan, "new_student", _fake_report(passed=set(points) - KL_CHECKS),
                                   timestamp="2024-05-01 12:00:00")
        assert book.find_submission(LAB, "new_student").timestamp is not None
        assert not any(book.find_grade(name, LAB, LAB, "mallory").needs_manual_grade for name in points)
    assert written == {name: 0.0 for name in points}
    assert _scores(coursedir, "mallory") == {name: 0.0 for name in points}
    assert _scores(coursedir, "new_student") == {name: 0.0 if name in KL_CHECKS else value
                                                 for name, value in points.items()}


def test_a_report_without_checks_gives_zero_everywhere(fake_course):
    from nbgrader.api import Gradebook

    _, coursedir = fake_course
    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        plan, = nbgrader_sync.plan_assignment(book, LAB)
        report = {"submission": "x", "status": "grader error", "summary": "crashed", "checks": []}
        nbgrader_sync.write_grades(book, LAB, plan, "carol", report)
    assert set(_scores(coursedir, "carol").values()) == {0.0}


def test_a_grader_error_leaves_cells_ungraded_not_zero(fake_course):
    from nbgrader.api import Gradebook

    _, coursedir = fake_course
    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        plan, = nbgrader_sync.plan_assignment(book, LAB)
        nbgrader_sync.write_grades(book, LAB, plan, "dave", _fake_report(passed=set(check_points(LAB))))
        report = {"submission": "x", "status": nbgrader_sync.GRADER_ERROR, "summary": "no secret", "checks": []}
        written = nbgrader_sync.write_grades(book, LAB, plan, "dave", report)
        grades = [book.find_grade(name, LAB, LAB, "dave") for name in plan.graded_cells]
        assert set(written.values()) == {None}
        assert all(grade.auto_score is None and grade.needs_manual_grade for grade in grades)


def test_cells_that_do_not_match_the_checks_stop_the_sync_before_grading(fake_course):
    from nbgrader.api import Gradebook

    _, coursedir = fake_course
    with Gradebook(coursedir.db_url, coursedir.course_id) as book:
        book.add_grade_cell("test_renamed_check", LAB, LAB, max_score=1.0, cell_type="code")
        with pytest.raises(nbgrader_sync.SyncError, match="test_renamed_check"):
            nbgrader_sync.plan_assignment(book, LAB)
        with pytest.raises(nbgrader_sync.SyncError, match="Received: assignment='lab9'"):
            nbgrader_sync.plan_assignment(book, "lab9")


def test_feedback_lands_where_release_feedback_looks(fake_course, tmp_path):
    course, coursedir = fake_course
    submitted = course / "submitted" / "alice" / LAB
    submitted.mkdir(parents=True)
    (submitted / "timestamp.txt").write_text("2024-05-01 12:00:00")
    (submitted / "submission_secret.txt").write_text("secret")
    report_folder = tmp_path / "report"
    report_folder.mkdir()
    (report_folder / "feedback.html").write_text("<html>ok</html>")
    target = nbgrader_sync.copy_feedback(coursedir, LAB, LAB, "alice", report_folder)
    assert target == course / "feedback" / "alice" / LAB / f"{LAB}.html"
    assert sorted(path.name for path in target.parent.iterdir()) == [f"{LAB}.html", "submission_secret.txt",
                                                                     "timestamp.txt"]
    with pytest.raises(nbgrader_sync.SyncError, match="Received: \\['bob'\\]"):
        nbgrader_sync.find_students(coursedir, LAB, ["bob"])
    assert nbgrader_sync.find_students(coursedir, LAB) == ["alice"]


def test_the_bridge_judges_nothing(capsys):
    namespace = {"kl_divergence": None}
    assert nbgrader_bridge.run_hidden_check(LAB, "test_kl_closed_form", namespace) is None
    assert "nbgrader-autograde" in capsys.readouterr().out
    assert namespace == {"kl_divergence": None}


def test_the_released_folder_validates_with_the_grader_time_limit():
    from course_lib.profiles import settings

    released = REPO_ROOT / "assignments" / LAB / "nbgrader_config.py"
    result = _run([sys.executable, "-c",
                   "from nbgrader.apps import ValidateApp\nfrom nbgrader.preprocessors import Execute\n"
                   "app = ValidateApp.instance(); app.initialize(['lab3.ipynb'])\n"
                   "print(Execute(parent=app).timeout)"], cwd=released.parent, timeout=120)
    assert int(result.stdout.split()[-1]) == settings("grading")["notebook_timeout_s"]


# --- slow: real nbgrader commands on a small class ---------------------------------------


def _kl_only(student_version):
    """The student version with only the KL written: partial marks without a second training run."""
    solution = nbformat.read(str(REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    book = nbformat.read(str(student_version), as_version=4)
    graded_cell(book, "kl_divergence").source = graded_cell(solution, "kl_divergence").source
    return book


def _forger():
    book = nbformat.read(str(REPO_ROOT / "assignments" / LAB / f"{LAB}.ipynb"), as_version=4)
    first_code = next(index for index, cell in enumerate(book.cells) if cell.cell_type == "code")
    book.cells.insert(first_code + 1, nbformat.v4.new_code_cell(FORGE_CELL))
    return book


@pytest.fixture(scope="module")
def synced_course(tmp_path_factory):
    from nbgrader.api import Gradebook

    workspace = tmp_path_factory.mktemp("nbgrader-sync")
    course = workspace / "course"
    course.mkdir()
    shutil.copy(REPO_ROOT / "nbgrader_config.py", course)
    shutil.copytree(REPO_ROOT / "source" / LAB, course / "source" / LAB)
    (course / "exchange").mkdir()
    _nbgrader(course, "generate_assignment", LAB, "--force")
    _nbgrader(course, "release_assignment", LAB, "--force")  # the exchange works
    student_version = course / "assignments" / LAB / f"{LAB}.ipynb"
    submissions = {
        "reference": nbformat.read(str(REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4),
        "untouched": nbformat.read(str(student_version), as_version=4),
        "kl_only": _kl_only(student_version),
        "forger": _forger(),
    }
    for student, book in submissions.items():
        folder = course / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(book, str(folder / f"{LAB}.ipynb"))
        # What `nbgrader collect` brings back from `nbgrader submit`.
        (folder / "timestamp.txt").write_text("2024-05-01 12:00:00.000000 UTC")
        (folder / "submission_secret.txt").write_text(f"secret-of-{student}")
    started = time.time()
    _nbgrader(course, "autograde", LAB, "--create", "--force")
    autograde_seconds = time.time() - started
    started = time.time()
    sync = _run([sys.executable, "-m", "autograder", "nbgrader-autograde", LAB, "--course-dir", "course",
                 "--workers", "2", "--profile", "fast"], cwd=workspace, timeout=1800)
    sync_seconds = time.time() - started
    print(f"nbgrader autograde: {autograde_seconds:.0f} s; nbgrader-autograde: {sync_seconds:.0f} s")
    print(sync.stdout[-3000:])
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "genmodels-vae") as book:
        scores = {}
        for student in submissions:
            notebook = book.find_submission_notebook(LAB, LAB, student)
            scores[student] = {grade.name: (grade.score, grade.max_score) for grade in notebook.grades
                               if grade.max_score}
    return {"course": course, "scores": scores, "students": sorted(submissions)}


@pytest.mark.slow
def test_reference_solution_gets_every_check(synced_course):
    expected = check_points(LAB)
    assert synced_course["scores"]["reference"] == {name: (points, points) for name, points in expected.items()}


@pytest.mark.slow
def test_untouched_and_forged_notebooks_get_zero(synced_course):
    expected = {name: (0.0, points) for name, points in check_points(LAB).items()}
    assert synced_course["scores"]["untouched"] == expected
    assert synced_course["scores"]["forger"] == expected


@pytest.mark.slow
def test_a_partial_submission_gets_exactly_the_checks_it_passes(synced_course):
    scores = synced_course["scores"]["kl_only"]
    assert {name: score for name, (score, _) in scores.items()} == {
        name: points if name in KL_CHECKS else 0.0 for name, points in check_points(LAB).items()}


@pytest.mark.slow
def test_feedback_has_no_hidden_tests_and_is_released(synced_course):
    course = synced_course["course"]
    for student in synced_course["students"]:
        text = (course / "feedback" / student / LAB / f"{LAB}.html").read_text()
        for forbidden in _forbidden_in_feedback_of(student):
            assert forbidden not in text, f"{student}'s feedback shows {forbidden!r}"
    _nbgrader(course, "release_feedback", LAB)
    released = list((course / "exchange" / "genmodels-vae" / "feedback").glob("*.html"))
    assert len(released) == len(synced_course["students"])


@pytest.mark.slow
def test_nbgraders_own_feedback_shows_no_hidden_tests(synced_course):
    course = synced_course["course"]
    _nbgrader(course, "generate_feedback", LAB, "--force", "--CourseDirectory.feedback_directory=nbgrader-feedback")
    for student in synced_course["students"]:
        text = (course / "nbgrader-feedback" / student / LAB / f"{LAB}.html").read_text()
        for forbidden in _forbidden_in_feedback_of(student):
            assert forbidden not in text, f"nbgrader's feedback of {student} shows {forbidden!r}"


@pytest.mark.slow
def test_nbgrader_export_lists_per_check_points(synced_course):
    course = synced_course["course"]
    _nbgrader(course, "export", "--to=export.csv")
    rows = {row["student_id"]: row for row in csv.DictReader((course / "export.csv").open())}
    points = check_points(LAB)
    assert float(rows["reference"]["score"]) == sum(points.values())
    assert float(rows["forger"]["score"]) == 0.0
    for name, value in points.items():
        assert float(rows["reference"][f"{LAB}:{name}"]) == value
        assert float(rows["kl_only"][f"{LAB}:{name}"]) == (value if name in KL_CHECKS else 0.0)
