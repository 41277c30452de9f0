"""nbgrader configuration: source/ (instructor notebooks) -> assignments/ + solutions/.

Points in the gradebook come from `python -m autograder nbgrader-autograde labN`, run after
`nbgrader autograde labN` (README, "### nbgrader").
"""

import os
import pathlib

c = get_config()  # noqa: F821  (provided by nbgrader)

COURSE_ROOT = pathlib.Path(__file__).resolve().parent

c.CourseDirectory.root = str(COURSE_ROOT)
c.CourseDirectory.course_id = "genmodels-vae"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.solution_directory = "solutions"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.assignment_id = ""

# Every stub raises, so a student notebook runs up to the first unfinished step and
# says which step it is, instead of failing later with a confusing error.
c.ClearSolutions.code_stub = {
    "python": (
        "# YOUR CODE HERE\n"
        'raise NotImplementedError("Not done yet: write this step (see the instructions above this cell).")'
    )
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Solutions are committed without outputs, so that regenerating them is exact; CI and
# the grader execute them.
c.GenerateSolution.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.ClearMarkScheme",
]

# Training cells take minutes, not nbgrader's default 30 s (autograde only; students'
# `nbgrader validate` reads assignments/labN/nbgrader_config.py instead).
c.Execute.timeout = 3600
c.Execute.kernel_name = "python3"

# The exchange that formgrader's Release / Collect / Release feedback buttons (and
# `nbgrader release_assignment`, `collect`, `release_feedback`) use: a folder under the
# course unless $NBGRADER_EXCHANGE_ROOT names a shared one (e.g. /srv/nbgrader/exchange
# on a JupyterHub). It must exist (`mkdir -p exchange`); without it the formgrader lists
# every lab as "draft" and not releasable.
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE_ROOT", str(COURSE_ROOT / "exchange"))

# nbgrader's own feedback (`nbgrader generate_feedback`) without the hidden tests, in the
# code or in tracebacks; the per-check points it shows are those `nbgrader-autograde` wrote.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "autograder.nbgrader_sync.ClearHiddenTestsAndTracebacks",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# `nbgrader export`: nbgrader's CSV columns plus one column per graded cell (check).
c.ExportApp.plugin_class = "autograder.nbgrader_sync.PerCheckCsvExportPlugin"
