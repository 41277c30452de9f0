"""What the hidden checks use: probe results, failures with messages, and points."""

import json
import pathlib

import numpy as np
import pytest


class CheckFailure(AssertionError):
    """A check failed; its message is shown to the student, so it names the problem."""


def check(points, probes=()):
    """Marks a pytest function as a graded check worth `points`, fed by `probes` items.

    Raises:
        ValueError: if `points` is not a positive number.
    """
    if not isinstance(points, (int, float)) or points <= 0:
        raise ValueError(f"A check needs positive points. Received: points={points!r}")

    def decorate(function):
        function = pytest.mark.points(points)(function)
        return pytest.mark.probes(*probes)(function)

    return decorate


class ProbeResults:
    """The probe results of one submission, as written by the in-kernel runtime."""

    def __init__(self, probe_dir, profile="fast", context=None, lab=None):
        self.probe_dir = pathlib.Path(probe_dir)
        self.profile = profile
        self.lab = lab
        self.context = context or {}
        # The calibrated thresholds the running check consulted (see `thresholds()`).
        self.thresholds_used = None
        status_file = self.probe_dir / "probe.json"
        arrays_file = self.probe_dir / "probe.npz"
        self.available = status_file.is_file() and arrays_file.is_file()
        self.items = {}
        self.arrays = {}
        self.seed = None
        if self.available:
            status = json.loads(status_file.read_text())
            self.items = status.get("items", {})
            self.seed = status.get("seed")
            with np.load(arrays_file, allow_pickle=False) as data:
                self.arrays = {key: data[key] for key in data.files}

    def thresholds(self):
        """The calibrated thresholds of this lab in this profile (autograder/calibration.py).

        The check that asks is noted, so that its verdict can say where they were measured.

        Raises:
            CheckFailure: if the lab is unknown or the profile has no thresholds.
        """
        from autograder import calibration

        if self.lab is None:
            raise CheckFailure("These probe results do not name their lab; no thresholds apply.")
        try:
            self.thresholds_used = calibration.thresholds(self.lab, self.profile)
        except calibration.CalibrationError as error:
            raise CheckFailure(str(error)) from error
        return self.thresholds_used

    def _item(self, item):
        if not self.available:
            reason = self.context.get("execution_error") or "the probe did not run"
            raise CheckFailure(f"Could not inspect the notebook's objects: {reason}")
        if item not in self.items:
            raise CheckFailure(f"Could not inspect `{item}`: the probe did not reach it.")
        status = self.items[item]
        if not status.get("ok"):
            raise CheckFailure(f"Calling your code failed: {status.get('error')}")
        return status

    def facts(self, item):
        """Returns the plain facts (strings, numbers, lists) a probe item recorded."""
        return self._item(item).get("facts", {})

    def array(self, item, key):
        """Returns one array a probe item recorded."""
        self._item(item)
        name = f"{item}/{key}"
        if name not in self.arrays:
            raise CheckFailure(f"Your code returned no `{key}` for `{item}`.")
        return self.arrays[name]


def require_shape(array, expected, what):
    """Fails with a message that echoes both shapes when `array` is not `expected`.

    `None` in `expected` matches any size.
    """
    shape = tuple(np.shape(array))
    matches = len(shape) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, shape)
    )
    if not matches:
        raise CheckFailure(f"{what} has the wrong shape. Expected: {expected}. Received: {shape}")


def require_finite(array, what):
    """Fails when `array` holds NaN or infinity."""
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise CheckFailure(f"{what} contains {bad} NaN or infinite values.")
