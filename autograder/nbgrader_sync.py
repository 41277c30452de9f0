"""Puts the course grader's per-check points into nbgrader's gradebook.

`python -m autograder nbgrader-autograde ASSIGNMENT [--course-dir DIR] [--student ID ...]`

nbgrader's own `autograde` runs test cells inside the student's kernel, where the
student's code can redefine anything; its scores are not trusted. This command grades
every `submitted/<student>/<assignment>/<notebook>.ipynb` of an nbgrader course with
`autograder.grade.grade_batch` (sandboxed kernel, checks judged outside it) and then,
through `nbgrader.api.Gradebook`, overwrites the `auto_score` of every autograded test
cell of the gradebook with the points of the check of the same name. It also copies the
grader's feedback (no hidden-test code in it) to `feedback/<student>/<assignment>/`,
where `nbgrader release_feedback` finds it.
"""

import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile

from autograder.judge import check_points
from autograder.registry import detect_lab

REPORTS_DIRECTORY = "autograded-reports"
GRADER_ERROR = "grader error"  # report status of a grading that failed for the grader's reasons
# Copied from the submission to the feedback folder: `nbgrader release_feedback` names
# the released file after a hash of the submission's secret (nbgrader submit writes both).
FEEDBACK_COMPANIONS = ("timestamp.txt", "submission_secret.txt")


class SyncError(RuntimeError):
    """The course folder, its gradebook or its notebooks do not fit the grader."""


@dataclasses.dataclass
class NotebookPlan:
    """What the sync does for one notebook of the assignment.

    Attributes:
        name: the notebook's name in the gradebook (file name without .ipynb).
        lab: the course lab whose checks grade it.
        check_points: {check name: points} of the lab.
        graded_cells: names of the gradebook's autograded test cells (all are checks).
    """

    name: str
    lab: str
    check_points: dict
    graded_cells: list


def load_course_directory(course_dir):
    """Returns nbgrader's `CourseDirectory` for a course folder, with its nbgrader_config.py.

    Args:
        course_dir: the course folder (relative to the working directory or absolute).

    Returns:
        An `nbgrader.coursedir.CourseDirectory` whose root is `course_dir`.

    Raises:
        SyncError: if the folder does not exist.
    """
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    root = pathlib.Path(course_dir).resolve()
    if not root.is_dir():
        raise SyncError(
            f"The course folder does not exist. Expected a folder. Received: course_dir={str(course_dir)!r}"
        )
    config = Config()
    if (root / "nbgrader_config.py").is_file():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    # The folder given wins over the root in the config, as `--CourseDirectory.root` does.
    config.CourseDirectory.root = str(root)
    return CourseDirectory(config=config)


def plan_assignment(gradebook, assignment):
    """Matches the gradebook's autograded test cells of an assignment with the grader's checks.

    Done before any grading, so that a mismatch costs nothing.

    Args:
        gradebook: an open `nbgrader.api.Gradebook`.
        assignment: the assignment's name.

    Returns:
        A list of `NotebookPlan`, one per notebook of the assignment.

    Raises:
        SyncError: if the assignment is not in the gradebook, a notebook is not a course
            lab, or a test cell has no check of the same name and points.
    """
    from nbgrader.api import MissingEntry

    try:
        record = gradebook.find_assignment(assignment)
    except MissingEntry:
        known = sorted(item.name for item in gradebook.assignments)
        raise SyncError(
            f"The assignment is not in the gradebook (run `nbgrader generate_assignment {assignment}` or "
            f"`nbgrader autograde {assignment} --create` first). Expected one of {known}. "
            f"Received: assignment={assignment!r}"
        ) from None
    plans = []
    for notebook in record.notebooks:
        lab = detect_lab(f"{notebook.name}.ipynb")
        if lab is None:
            raise SyncError(
                f"The notebook is not a course lab, so no checks grade it. Expected a name like 'lab3'. "
                f"Received: notebook={notebook.name!r} of assignment {assignment!r}"
            )
        points = check_points(lab)
        solution_names = {cell.name for cell in notebook.solution_cells}
        # Autograded test cells: code grade cells that are not answer cells.
        graded = [cell for cell in notebook.grade_cells if cell.cell_type == "code" and cell.name not in solution_names]
        unknown = sorted(cell.name for cell in graded if cell.name not in points)
        if unknown:
            raise SyncError(
                f"Autograded test cells of {assignment}/{notebook.name} have no check of the same name in "
                f"autograder/checks/test_{lab}.py. Expected names among {sorted(points)}. Received: {unknown}"
            )
        wrong = {cell.name: (cell.max_score, points[cell.name]) for cell in graded
                 if abs(float(cell.max_score) - points[cell.name]) > 1e-9}
        if wrong:
            raise SyncError(
                f"Test cells of {assignment}/{notebook.name} and their checks disagree on points. "
                f"Expected the checks' points. Received {{cell: (cell points, check points)}}: {wrong}"
            )
        plans.append(NotebookPlan(notebook.name, lab, points, [cell.name for cell in graded]))
    return plans


def find_students(coursedir, assignment, students=None):
    """Lists the students with a submission folder of the assignment.

    Args:
        coursedir: the course's `CourseDirectory`.
        assignment: the assignment's name.
        students: optional student ids to keep (each must have a submission).

    Returns:
        Sorted student ids.

    Raises:
        SyncError: if a requested student has no submission, or nobody submitted.
    """
    submitted = pathlib.Path(coursedir.root) / coursedir.submitted_directory
    found = sorted(path.parent.name for path in submitted.glob(f"*/{assignment}") if path.is_dir())
    if students:
        missing = sorted(set(students) - set(found))
        if missing:
            raise SyncError(
                f"No submission folder {submitted}/<student>/{assignment}/ for some students. "
                f"Expected students among {found}. Received: {missing}"
            )
        return sorted(set(students))
    if not found:
        raise SyncError(
            f"Nobody submitted {assignment}. Expected folders {submitted}/<student>/{assignment}/. "
            f"Received: none"
        )
    return found


def write_grades(gradebook, assignment, plan, student, report, timestamp=None):
    """Writes one graded notebook's check points into the gradebook.

    Adds the student and the submission when missing. Every autograded test cell gets the
    points of its check (0 when the report lacks it), overwriting whatever `nbgrader
    autograde` computed in the student's kernel; a human's `manual_score` is kept (it wins
    in nbgrader's totals, and the cell stays flagged for review). When the grader itself
    failed (status "grader error") every cell's `auto_score` is cleared instead and flagged
    for manual grading, so neither nbgrader's in-kernel points nor a false zero remain.

    Args:
        gradebook: an open `nbgrader.api.Gradebook`.
        assignment: the assignment's name.
        plan: the notebook's `NotebookPlan`.
        student: the student id.
        report: the grader's report dict (`checks`: name, points, passed, message).
        timestamp: submission time for a new submission (None: unknown).

    Returns:
        {cell name: auto_score written (None after a grader error)}.
    """
    from nbgrader.api import MissingEntry

    try:
        gradebook.find_student(student)
    except MissingEntry:
        gradebook.add_student(student)
    try:
        gradebook.find_submission(assignment, student)
    except MissingEntry:
        extra = {"timestamp": timestamp} if timestamp is not None else {}
        gradebook.add_submission(assignment, student, **extra)
    checks = {check["name"]: check for check in report.get("checks", [])}
    written = {}
    for name in plan.graded_cells:
        grade = gradebook.find_grade(name, plan.name, assignment, student)
        if report.get("status") == GRADER_ERROR:
            # The grader failed, not the student: no points, not zero either; the cell waits
            # (formgrader: "needs manual grade") for a rerun of the sync.
            grade.auto_score = None
            grade.needs_manual_grade = True
            written[name] = None
            continue
        check = checks.get(name)
        points = float(check["points"]) if check else 0.0
        grade.auto_score = min(points, float(plan.check_points[name]))
        # nbgrader's rule (SaveAutoGrades): a cell with a manual score stays flagged.
        grade.needs_manual_grade = grade.manual_score is not None
        message = check["message"] if check else f"not graded: {report.get('summary') or report.get('status')}"
        try:
            comment = gradebook.find_comment(name, plan.name, assignment, student)
        except MissingEntry:
            comment = None  # nbgrader keeps comments only for answer and task cells
        if comment is not None:
            comment.auto_comment = message
        written[name] = grade.auto_score
    gradebook.db.commit()
    return written


def copy_feedback(coursedir, assignment, notebook, student, report_folder):
    """Copies the grader's feedback to nbgrader's feedback/<student>/<assignment>/<notebook>.html.

    Args:
        coursedir: the course's `CourseDirectory`.
        assignment: the assignment's name.
        notebook: the notebook's name (without .ipynb).
        student: the student id.
        report_folder: the grader's report folder of this submission.

    Returns:
        The path written, or None when the grader wrote no feedback.html.
    """
    source = pathlib.Path(report_folder) / "feedback.html"
    if not source.is_file():
        return None
    destination = pathlib.Path(coursedir.format_path(coursedir.feedback_directory, student, assignment))
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / f"{notebook}.html"
    shutil.copyfile(source, target)
    submitted = pathlib.Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
    for name in FEEDBACK_COMPANIONS:
        if (submitted / name).is_file():
            shutil.copyfile(submitted / name, destination / name)
    return target


def sync_assignment(assignment, course_dir=".", students=None, workers=1, profile=None, reports_dir=None,
                    progress=print, **grade_options):
    """Grades an nbgrader assignment's submissions and writes the points into the gradebook.

    Args:
        assignment: the nbgrader assignment (e.g. "lab3").
        course_dir: the nbgrader course folder.
        students: optional student ids (default: every submission).
        workers: submissions graded at once.
        profile: run profile ("fast"/"full"; default: $COURSE_PROFILE or fast).
        reports_dir: grader reports folder (default: <course>/autograded-reports/<assignment>).
        progress: called with one line of text per event.
        **grade_options: passed to `grade_batch` (timeout_s, memory_limit_mb, data_dir, resume, ...).

    Returns:
        One dict per graded notebook: student, notebook, score, max_score, status,
        cells ({cell: auto_score}), feedback (path or None).

    Raises:
        SyncError: see `load_course_directory`, `plan_assignment` and `find_students`.
    """
    import course_lib
    from nbgrader.api import Gradebook

    from autograder.grade import grade_batch

    coursedir = load_course_directory(course_dir)
    course_id = coursedir.course_id  # what nbgrader's own commands open the gradebook with
    with Gradebook(coursedir.db_url, course_id) as gradebook:
        plans = plan_assignment(gradebook, assignment)
    student_ids = find_students(coursedir, assignment, students)
    profile = course_lib.active_profile(profile)
    reports_dir = pathlib.Path(reports_dir or pathlib.Path(coursedir.root) / REPORTS_DIRECTORY / assignment)
    results = []
    for plan in plans:
        only_one = len(plans) == 1
        with tempfile.TemporaryDirectory(prefix="nbgrader-sync-") as staging:
            # One folder per student, named after the student, holding only the notebook:
            # the grader names its report folders after them.
            jobs = []
            for student in student_ids:
                submitted = pathlib.Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
                folder = pathlib.Path(staging) / (student if only_one else f"{student}__{plan.name}")
                folder.mkdir()
                notebook_path = submitted / f"{plan.name}.ipynb"
                if notebook_path.is_file():
                    shutil.copyfile(notebook_path, folder / notebook_path.name)
                jobs.append((student, submitted, folder))
            progress(f"Grading {len(jobs)} submission(s) of {assignment}/{plan.name} ({plan.lab}, profile={profile}) "
                     f"into {reports_dir}")
            reports = grade_batch([str(folder) for _, _, folder in jobs], str(reports_dir), workers=workers,
                                  progress=progress, lab=plan.lab, profile=profile, **grade_options)
        with Gradebook(coursedir.db_url, course_id) as gradebook:
            for (student, submitted, _), report in zip(jobs, reports):
                timestamp = coursedir.get_existing_timestamp(str(submitted))
                cells = write_grades(gradebook, assignment, plan, student, report, timestamp)
                feedback = None
                if report.get("status") != GRADER_ERROR:
                    feedback = copy_feedback(coursedir, assignment, plan.name, student,
                                             reports_dir / report["submission"])
                results.append({
                    "student": student, "notebook": plan.name, "score": sum(value or 0.0 for value in cells.values()),
                    "max_score": sum(plan.check_points[name] for name in plan.graded_cells),
                    "status": report.get("status"), "cells": cells, "feedback": str(feedback) if feedback else None,
                })
                progress(f"gradebook: {student} {assignment}/{plan.name}: {results[-1]['score']:g}/"
                         f"{results[-1]['max_score']:g} ({report.get('status')})")
                if report.get("status") == GRADER_ERROR:
                    progress(f"  not graded (cells flagged for manual grading): {report.get('summary')}")
    return results


def run_from_arguments(arguments):
    """Runs the `nbgrader-autograde` command of `python -m autograder`.

    Args:
        arguments: the parsed argparse namespace.

    Returns:
        The process exit status: 0; 1 if the grader failed on some submission (their cells
        are left ungraded: rerun); 2 on a course-folder problem (nothing written).
    """
    from autograder.grade import DEFAULT_MEMORY_LIMIT_MB

    try:
        results = sync_assignment(
            arguments.assignment,
            course_dir=arguments.course_dir,
            students=arguments.student,
            workers=arguments.workers,
            profile=arguments.profile,
            reports_dir=arguments.reports_dir,
            progress=lambda line: print(line, flush=True),
            timeout_s=arguments.timeout,
            memory_limit_mb=arguments.memory_mb or DEFAULT_MEMORY_LIMIT_MB,
            data_dir=arguments.data_dir,
            resume=arguments.resume,
        )
    except SyncError as error:
        print(f"nbgrader-autograde: {error}", file=sys.stderr, flush=True)
        return 2
    total = sum(result["score"] for result in results)
    maximum = sum(result["max_score"] for result in results)
    print(f"Done: {len(results)} notebook(s) written to the gradebook, {total:g}/{maximum:g} points in all. "
          f"Feedback in {os.path.join(arguments.course_dir, 'feedback')}/<student>/{arguments.assignment}/")
    failed = sorted({result["student"] for result in results if result["status"] == GRADER_ERROR})
    if failed:
        print(f"nbgrader-autograde: the grader failed on {len(failed)} submission(s), left ungraded: "
              f"{failed}. Expected every status 'graded' or 'not graded'. Fix the cause and rerun.",
              file=sys.stderr, flush=True)
        return 1
    return 0


def _export_plugin_base():
    from nbgrader.plugins import CsvExportPlugin

    return CsvExportPlugin


class PerCheckCsvExportPlugin(_export_plugin_base()):
    """`nbgrader export` plugin: nbgrader's CSV columns plus one column per graded cell.

    Selected in nbgrader_config.py (`c.ExportApp.plugin_class`), or on the command line with
    `nbgrader export --exporter=autograder.nbgrader_sync.PerCheckCsvExportPlugin`. A cell's
    column is named `<notebook>:<cell>` (e.g. `lab3:test_kl_closed_form`) and holds the
    cell's score; it is empty for other assignments and for students who did not submit.
    """

    TOTAL_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                     "raw_score", "late_submission_penalty", "score", "max_score"]

    def export(self, gradebook):
        """Writes the CSV to `--to` (default grades.csv).

        Args:
            gradebook: an open `nbgrader.api.Gradebook`.
        """
        import csv

        from nbgrader.api import MissingEntry

        destination = self.to or "grades.csv"
        assignments = [item for item in gradebook.assignments
                       if not self.assignment or item.name in [str(name) for name in self.assignment]]
        students = [item for item in gradebook.students
                    if not self.student or item.id in [str(name) for name in self.student]]
        cell_columns = []
        for assignment in assignments:
            for notebook in assignment.notebooks:
                cell_columns += [f"{notebook.name}:{cell.name}" for cell in notebook.grade_cells
                                 if f"{notebook.name}:{cell.name}" not in cell_columns]
        self.log.info("Exporting grades (with %d per-cell columns) to %s", len(cell_columns), destination)
        with open(destination, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.TOTAL_COLUMNS + cell_columns, restval="")
            writer.writeheader()
            for assignment in assignments:
                for student in students:
                    row = {"assignment": assignment.name, "duedate": assignment.duedate or "",
                           "student_id": student.id, "last_name": student.last_name or "",
                           "first_name": student.first_name or "", "email": student.email or "",
                           "max_score": assignment.max_score}
                    try:
                        submission = gradebook.find_submission(assignment.name, student.id)
                    except MissingEntry:
                        row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                    else:
                        penalty = submission.late_submission_penalty or 0.0
                        row.update(timestamp=submission.timestamp or "", raw_score=submission.score,
                                   late_submission_penalty=penalty, score=max(0.0, submission.score - penalty))
                        for notebook in submission.notebooks:
                            for grade in notebook.grades:
                                column = f"{notebook.name}:{grade.name}"
                                if column in cell_columns:
                                    row[column] = grade.score
                    writer.writerow(row)


def _clear_hidden_tests_base():
    from nbgrader.preprocessors import ClearHiddenTests

    return ClearHiddenTests


class ClearHiddenTestsAndTracebacks(_clear_hidden_tests_base()):
    """`nbgrader generate_feedback` preprocessor: hidden tests out of the code and of the outputs.

    nbgrader's `ClearHiddenTests` removes the hidden region from a cell's code, but a
    traceback in the cell's output still quotes the lines around the error, hidden-test
    markers and calls included. In each cell that had a hidden region this also cuts every
    error output's traceback down to its last line (`NameError: name 'x' is not defined`).
    Selected in nbgrader_config.py (`c.GenerateFeedback.preprocessors`).
    """

    def preprocess_cell(self, cell, resources, cell_index):
        """Clears the hidden region of one cell and, if it had one, its tracebacks.

        Args:
            cell: the notebook cell.
            resources: nbconvert's resources dict.
            cell_index: the cell's position.

        Returns:
            (cell, resources), as nbconvert preprocessors do.
        """
        had_hidden = self.begin_test_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden and cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources
