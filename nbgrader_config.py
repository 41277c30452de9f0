"""nbgrader configuration: source/ (instructor notebooks) -> assignments/ + solutions/."""

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

# Training cells take minutes, not nbgrader's default 30 s (autograde only).
c.Execute.timeout = 3600
c.Execute.kernel_name = "python3"
