"""Pieces shared by the calibration scripts that run a lab's solution code per seed."""

import json
import math
import re

import nbformat
import numpy as np

SEED_LINE = re.compile(r"^SEED = \d+$", re.MULTILINE)
PROFILES = ("fast", "full")


def notebook_code_cells(notebook_path):
    """The code cells of a source notebook, without the graded check cells and magics.

    Raises:
        RuntimeError: if no cell sets `SEED = <int>` (the scripts replace that line).
    """
    notebook = nbformat.read(str(notebook_path), as_version=4)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("grade"):
            continue
        # IPython magics (e.g. %matplotlib inline) are not Python.
        lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    if not any(SEED_LINE.search(source) for source in cells):
        raise RuntimeError(f"No line `SEED = <int>` in {notebook_path}; cannot set the training seed.")
    return cells


def summarize(values):
    """Values, mean, sample standard deviation, min and max, rounded to 4 decimals."""
    values = np.asarray(values, dtype=np.float64)
    return {
        "values": [round(float(value), 4) for value in values],
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std(ddof=1)) if values.size > 1 else 0.0, 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
    }


def geometric_midpoint(low, high):
    """The threshold halfway (on a log scale) between a worst good and a best bad value."""
    return math.sqrt(low * high)


def write_profile_calibration(path, header, profile, thresholds, measured_entry, unmeasured_note):
    """Writes one profile's thresholds and measurements into a calibration file.

    The other profiles' entries are kept; a profile never measured gets the same
    thresholds, marked `"measured": false` with `unmeasured_note`.

    Args:
        path: the calibration file (a `pathlib.Path`); read first when it exists.
        header: dict of the file's leading keys (`lab`, `description`, `script`).
        profile: the profile just measured.
        thresholds: its thresholds.
        measured_entry: its measurements (stored under `measurements[profile]`).
        unmeasured_note: the note for a profile without measurements of its own.
    """
    previous = json.loads(path.read_text()) if path.exists() else {}
    calibration = dict(
        header,
        thresholds=dict(previous.get("thresholds", {})),
        measurements=dict(previous.get("measurements", {})),
    )
    calibration["thresholds"][profile] = dict(thresholds, measured=True)
    calibration["measurements"][profile] = measured_entry
    for other in PROFILES:
        if other != profile and not calibration["thresholds"].get(other, {}).get("measured"):
            calibration["thresholds"][other] = dict(thresholds, measured=False, note=unmeasured_note)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration, indent=2) + "\n")
