"""Settings for checking lab1 before you submit: in this folder run

    nbgrader validate lab1.ipynb

It runs the notebook top to bottom in a fresh kernel, as the grader will, with the
grader's time limit (run profile: $COURSE_PROFILE, default fast). "Success!" means it ran
and the visible tests pass; the points come from the hidden checks of the course grader.
"""

c = get_config()  # noqa: F821  (provided by nbgrader)

try:
    from course_lib.profiles import settings

    c.Execute.timeout = settings("grading")["notebook_timeout_s"]
except Exception:  # course_lib not importable here: the longest profile's limit
    c.Execute.timeout = 5400
c.Execute.kernel_name = "python3"
