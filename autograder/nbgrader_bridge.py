"""Runs one hidden check from inside a notebook, for instructors who use `nbgrader autograde`.

Each autograded test cell of a source notebook holds, between nbgrader's hidden-test
markers, one call of `run_hidden_check`, with the same points as the check; the check
itself lives once, in `autograder/checks`. Under nbgrader the check runs inside the
student's kernel (nbgrader's own trust model); `python -m autograder grade` instead
judges outside the kernel.
"""

import tempfile

from autograder.judge import check_probes, run_checks
from autograder.probes.assemble import run_probes_in_process

BRIDGE_SEED = 0


def run_hidden_check(lab_name, check_name, namespace):
    """Probes the namespace for one check, judges it, and raises AssertionError if it fails.

    Args:
        lab_name: "lab1" ... "lab5".
        check_name: a test function name of `autograder/checks/test_<lab>.py`.
        namespace: the notebook's `globals()`.

    Raises:
        ValueError: for an unknown check.
        AssertionError: when the check fails, with the check's message.
    """
    import course_lib

    probes_of_checks = check_probes(lab_name)
    if check_name not in probes_of_checks:
        raise ValueError(
            f"Unknown check for {lab_name}. Expected one of {sorted(probes_of_checks)}. "
            f"Received: check_name={check_name!r}"
        )
    with tempfile.TemporaryDirectory() as probe_dir:
        probes = probes_of_checks[check_name]
        if probes:
            run_probes_in_process(lab_name, namespace, probe_dir, BRIDGE_SEED, only=probes)
        results = run_checks(lab_name, probe_dir, course_lib.active_profile(), only=[check_name])
    result = results[0]
    if not result.passed:
        raise AssertionError(f"{check_name}: {result.message}")
    print(f"{check_name}: passed ({result.points:g} points)")
