"""Pieces shared by the calibration scripts that run a lab's solution code per seed."""

import re

import nbformat

# One definition of each (autograder/calibration.py); re-exported for the scripts.
from autograder.calibration import geometric_midpoint, summary as summarize  # noqa: F401

SEED_LINE = re.compile(r"^SEED = \d+$", re.MULTILINE)


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
