"""The hidden part of each autograded test cell: a marker, not a judge.

Each autograded test cell of a source notebook holds, between nbgrader's hidden-test
markers, one call `run_hidden_check("labN", "<check name>", globals())`, named (and
pointed) after a check of `autograder/checks/test_labN.py`. `nbgrader autograde` puts it
back into the student's notebook and runs it in the student's kernel, where the student's
code could redefine anything; so it judges nothing there and awards nothing. The points
come from `python -m autograder nbgrader-autograde ASSIGNMENT`, which grades the
submission in the sandboxed grader and overwrites the `auto_score` of every such cell in
nbgrader's gradebook (a student who redefines this function changes nothing).
"""

NOTICE = "graded by the course grader: run `python -m autograder nbgrader-autograde {lab}`"


def run_hidden_check(lab_name, check_name, namespace):
    """Says where the check is graded; raises nothing and judges nothing.

    Args:
        lab_name: "lab1" ... "lab5".
        check_name: a test function name of `autograder/checks/test_<lab>.py`.
        namespace: the notebook's `globals()` (unused: nothing is read from the kernel).

    Returns:
        None.

    Raises:
        ValueError: if `lab_name` or `check_name` is not a string (a broken cell).
    """
    del namespace
    if not isinstance(lab_name, str) or not isinstance(check_name, str):
        raise ValueError(
            "Expected run_hidden_check(lab_name: str, check_name: str, namespace). "
            f"Received: lab_name={lab_name!r}, check_name={check_name!r}"
        )
    print(f"{check_name}: {NOTICE.format(lab=lab_name)}")
