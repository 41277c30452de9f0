"""Report files: report.json, Gradescope results.json, feedback, and the class CSV."""

import csv
import json
import os
import pathlib

import nbformat

REPORT_FILE = "report.json"
GRADESCOPE_FILE = "results.json"
FEEDBACK_NOTEBOOK = "feedback.ipynb"
FEEDBACK_HTML = "feedback.html"
CLASS_CSV = "grades.csv"


def write_atomic(path, text):
    """Writes a file so that readers never see it half written."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def gradescope_results(report):
    """Returns the Gradescope autograder results.json content for a report."""
    tests = [
        {
            "name": check["name"],
            "score": check["points"],
            "max_score": check["max_points"],
            "status": "passed" if check["passed"] else "failed",
            "output": check["message"],
            "visibility": "visible",
        }
        for check in report["checks"]
    ]
    return {
        "score": report["score"],
        "execution_time": int(report.get("seconds", 0)),
        "output": report.get("summary", ""),
        "tests": tests,
    }


def _results_markdown(report):
    lines = [
        f"# Grading feedback: {report['lab']} ({report.get('lab_title', '')})",
        "",
        f"**Score: {report['score']:g} / {report['max_score']:g}**",
        "",
    ]
    if report.get("summary"):
        lines += [report["summary"], ""]
    lines += ["| check | points | result |", "| --- | --- | --- |"]
    for check in report["checks"]:
        message = check["message"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{check['name']}` | {check['points']:g} / {check['max_points']:g} | {message} |")
    return "\n".join(lines)


def feedback_notebook(report, executed_notebook):
    """The student's executed notebook with the results on top; no grader code in it."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_markdown_cell(_results_markdown(report)))
    if executed_notebook is not None:
        for cell in executed_notebook.cells:
            if "course-probe" in cell.get("metadata", {}).get("tags", []):
                continue
            notebook.cells.append(cell)
        notebook.metadata = dict(executed_notebook.metadata)
    return notebook


def write_feedback(folder, report, executed_notebook):
    """Writes feedback.ipynb and feedback.html into `folder`."""
    from nbconvert import HTMLExporter

    notebook = feedback_notebook(report, executed_notebook)
    write_atomic(pathlib.Path(folder) / FEEDBACK_NOTEBOOK, nbformat.writes(notebook))
    try:
        html, _ = HTMLExporter().from_notebook_node(notebook)
    except Exception as error:  # a broken output must not cost the student their report
        html = f"<html><body><pre>Feedback could not be rendered ({error}).</pre></body></html>"
    write_atomic(pathlib.Path(folder) / FEEDBACK_HTML, html)


def write_report_files(folder, report, executed_notebook):
    """Writes report.json, results.json and the feedback of one submission."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_feedback(folder, report, executed_notebook)
    write_atomic(folder / GRADESCOPE_FILE, json.dumps(gradescope_results(report), indent=2))
    # report.json last: its presence marks the submission as finished (for --resume).
    write_atomic(folder / REPORT_FILE, json.dumps(report, indent=2))


def read_reports(out_dir):
    """Reads every finished report under `out_dir`, sorted by submission name."""
    reports = []
    for path in sorted(pathlib.Path(out_dir).glob(f"*/{REPORT_FILE}")):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return reports


def write_class_csv(out_dir):
    """Writes grades.csv: one row per graded submission. Returns its path."""
    path = pathlib.Path(out_dir) / CLASS_CSV
    columns = ["submission", "lab", "score", "max_score", "status", "seconds", "fingerprint"]
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for report in read_reports(out_dir):
            writer.writerow(report)
    os.replace(temporary, path)
    return path
