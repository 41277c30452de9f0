"""Runs a lab's hidden checks (pytest) against probe results, in the grader's process."""

import dataclasses
import os
import sys
import tempfile

import pytest

from autograder.checking import CheckFailure, ProbeResults
from autograder.registry import get_lab

MAX_MESSAGE_CHARS = 600


@dataclasses.dataclass
class CheckResult:
    """The verdict of one check."""

    name: str
    points: float
    max_points: float
    passed: bool
    message: str
    # Where the thresholds it applied were measured (only for checks that use calibrated ones).
    calibration: str = None
    # The calibrated quantities it measured: {threshold name: {"value", "threshold", "holds"}}.
    measured: dict = None

    def to_dict(self):
        return dataclasses.asdict(self)


def _failure_message(call_info):
    error = call_info.excinfo.value if call_info.excinfo else None
    if isinstance(error, CheckFailure):
        text = str(error)
    elif isinstance(error, AssertionError):
        text = str(error).split("\nassert ")[0] or "A check's condition did not hold."
    else:
        # A crash inside the check itself: say so without showing its code.
        text = f"The check could not evaluate your results ({type(error).__name__}: {error})"
    return text.strip()[:MAX_MESSAGE_CHARS]


class _CheckCollector:
    """pytest plugin: hands the probe results to the checks and records verdicts."""

    def __init__(self, probe_results):
        self.probe_results = probe_results
        self.results = {}

    @pytest.fixture
    def probe(self):
        return self.probe_results

    def pytest_collection_modifyitems(self, items):
        for item in items:
            if item.get_closest_marker("points") is None:
                raise pytest.UsageError(f"Check {item.name} has no points marker.")

    def pytest_runtest_setup(self, item):
        self.probe_results.thresholds_used = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        max_points = float(item.get_closest_marker("points").args[0])
        if report.when == "call" or (report.when == "setup" and report.failed):
            passed = report.passed
            message = "passed" if passed else _failure_message(call)
            used = self.probe_results.thresholds_used
            if used is not None and used.caveat() and not passed:
                message = f"{message} {used.caveat()}"
            self.results[item.name] = CheckResult(
                name=item.name,
                points=max_points if passed else 0.0,
                max_points=max_points,
                passed=passed,
                message=message,
                calibration=None if used is None else used.describe()["note"],
                measured=None if used is None or not used.compared else dict(used.compared),
            )


def run_checks(lab_name, probe_dir, profile="fast", only=None, context=None):
    """Runs the hidden checks of `lab_name` on the probe results in `probe_dir`.

    Args:
        lab_name: "lab1" ... "lab5".
        probe_dir: folder holding probe.json and probe.npz (may be empty: every
            probe-fed check then fails with the execution error as its message).
        profile: run profile whose thresholds apply.
        only: optional list of check names to run.
        context: facts from the grader (e.g. `execution_error`) shown in messages.

    Returns:
        A list of `CheckResult`, in the module's order.
    """
    lab = get_lab(lab_name)
    collector = _CheckCollector(ProbeResults(probe_dir, profile=profile, context=context, lab=lab_name))
    with tempfile.TemporaryDirectory() as empty_dir:
        ini_file = os.path.join(empty_dir, "pytest.ini")
        with open(ini_file, "w") as handle:
            handle.write("[pytest]\nmarkers =\n    points: points\n    probes: probe items\n")
        targets = [f"{lab.check_module}::{name}" for name in only] if only else [str(lab.check_module)]
        arguments = [
            *targets,
            "-q",
            "-p", "no:cacheprovider",
            "-c", ini_file,
            "--rootdir", empty_dir,
            "--tb=no",
            "--capture=sys",
            "-o", "console_output_style=classic",
        ]
        stdout = sys.stdout
        try:
            with open(os.devnull, "w") as sink:
                sys.stdout = sink
                exit_code = pytest.main(arguments, plugins=[collector])
        finally:
            sys.stdout = stdout
    if exit_code not in (0, 1) or not collector.results:
        raise RuntimeError(
            f"The hidden checks of {lab_name} did not run (pytest exit code {exit_code}). "
            f"Check module: {lab.check_module}"
        )
    return list(collector.results.values())


def _check_marks(lab_name, mark_name):
    """Returns {check name: arguments of its `mark_name` marker}, read from the module."""
    import importlib.util

    lab = get_lab(lab_name)
    spec = importlib.util.spec_from_file_location(f"_course_checks_{lab_name}", lab.check_module)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    marks = {}
    for name, function in vars(module).items():
        if name.startswith("test_") and callable(function):
            for mark in getattr(function, "pytestmark", []):
                if mark.name == mark_name:
                    marks[name] = tuple(mark.args)
    return marks


def check_points(lab_name):
    """Returns {check name: points} of a lab, in the module's order."""
    return {name: float(args[0]) for name, args in _check_marks(lab_name, "points").items()}

