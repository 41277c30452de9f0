"""Grading cost per lab: wall time and peak memory of grading each solution notebook.

The grader writes one `report.json` per submission (`python -m autograder grade NOTEBOOK
--out DIR` puts it in a sub-folder of DIR) with `seconds` (the whole grading),
`notebook_seconds` (running the notebook) and `peak_memory_mb` (the kernel's peak
resident memory). This module runs that command on the solutions and tabulates the
reports.
"""

import json
import pathlib
import subprocess
import sys

REPORT_NAME = "report.json"
COST_FIELDS = ("seconds", "notebook_seconds", "peak_memory_mb")
REPORT_FIELDS = ("lab", "submission", "status", "score", "max_score", "profile") + COST_FIELDS
# The repository this module belongs to: its solutions are graded whatever the caller's folder.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = pathlib.Path("solutions")
LABS = ("lab1", "lab2", "lab3", "lab4", "lab5")


def solution_notebook(lab, root=REPO_ROOT):
    """Path of a lab's solution notebook, `solutions/<lab>/<lab>.ipynb` under `root`."""
    return pathlib.Path(root) / SOLUTIONS_DIR / lab / f"{lab}.ipynb"


def grade_command(lab, out_dir, root=REPO_ROOT, python=sys.executable):
    """The grader command line for one lab's solution, as a list of arguments (paths absolute)."""
    return [
        python, "-m", "autograder", "grade",
        str(solution_notebook(lab, root).absolute()), "--out", str(pathlib.Path(out_dir).absolute() / lab),
    ]


def grade_solutions(labs, out_dir, root=REPO_ROOT):
    """Grades the solution notebooks of `labs` one after the other (one CPU-heavy run at a time).

    Args:
        labs: lab names, e.g. `["lab1", "lab3"]`.
        out_dir: folder for the reports (one sub-folder per lab); a relative path is taken
            from the current folder, not from `root`.
        root: repository root (where `solutions/` and `autograder/` are); by default the
            one of this module.

    Returns:
        The return code of each grader run, by lab.

    Raises:
        FileNotFoundError: if a solution notebook does not exist.
    """
    codes = {}
    for lab in labs:
        notebook = solution_notebook(lab, root)
        if not notebook.is_file():
            raise FileNotFoundError(
                f"No solution notebook for {lab}: expected {notebook} "
                f"(generate it with scripts/generate_assignments.py)."
            )
        codes[lab] = subprocess.run(grade_command(lab, out_dir, root), cwd=root).returncode
    return codes


def read_report(path):
    """The fields of one `report.json` that matter for cost (missing ones are None).

    Raises:
        ValueError: if the file is not a JSON object.
    """
    path = pathlib.Path(path)
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(report, dict):
        raise ValueError(f"{path} does not hold a JSON object. Received: {type(report).__name__}")
    row = {field: report.get(field) for field in REPORT_FIELDS}
    row["report"] = str(path)
    return row


def collect_reports(root):
    """Reads every `report.json` under `root` (or `root` itself if it is one).

    Returns:
        One row per report (see `read_report`), sorted by lab then submission.
    """
    root = pathlib.Path(root)
    paths = [root] if root.is_file() else sorted(root.rglob(REPORT_NAME))
    rows = [read_report(path) for path in paths]
    return sorted(rows, key=lambda row: (str(row["lab"]), str(row["submission"])))


def _cell(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_grading_table(rows):
    """Formats `collect_reports` rows as a Markdown table."""
    lines = [
        "| lab | submission | status | score | grading s | notebook s | peak memory MB | profile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        score = f"{_cell(row['score'], 1)}/{_cell(row['max_score'], 1)}"
        lines.append(
            f"| {_cell(row['lab'])} | {_cell(row['submission'])} | {_cell(row['status'])} "
            f"| {score} | {_cell(row['seconds'])} | {_cell(row['notebook_seconds'])} "
            f"| {_cell(row['peak_memory_mb'])} | {_cell(row['profile'])} |"
        )
    return "\n".join(lines)
