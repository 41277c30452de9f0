"""Report files: report.json, Gradescope results.json, feedback, and the class CSV.

feedback.html is written here, by hand, not by nbconvert: every piece of the student's
notebook (sources and outputs) goes into it as escaped text, so nothing the student wrote can
run scripts in, style, or restructure the page a TA opens. Only plain text and PNG/JPEG images
(checked, re-encoded data URIs) are rendered; a Content-Security-Policy forbids scripts and
external loads even if something slipped through. The grader's verdict comes first, in a block
the student's content cannot imitate (their content cannot create elements).
"""

import base64
import binascii
import csv
import hashlib
import html
import json
import os
import pathlib
import re

import nbformat

HIDDEN_TESTS_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_TESTS_END = "### END HIDDEN TESTS"

REPORT_FILE = "report.json"
GRADESCOPE_FILE = "results.json"
FEEDBACK_NOTEBOOK = "feedback.ipynb"
FEEDBACK_HTML = "feedback.html"
CLASS_CSV = "grades.csv"

PROBE_TAG = "course-probe"
VERDICT_TAG = "grader-verdict"
VERDICT_ID = "grader-verdict"

# Gradescope autograder specification (results.json): the visibility values and output formats.
VISIBILITY_ENV_VAR = "COURSE_GRADESCOPE_VISIBILITY"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
DEFAULT_TEST_VISIBILITY = "after_due_date"
OUTPUT_FORMAT = "text"  # messages can quote the student's code or errors: never render them

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Control characters (except tab/newline) and bidirectional overrides, which could make the
# escaped text *look* different from what it is.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_IMAGE_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$<>:])")


def write_atomic(path, text):
    """Writes a file so that readers never see it half written.

    Args:
        path: the file to write (str or Path); its folder must exist.
        text: the whole content (str).
    """
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------- Gradescope


def gradescope_visibility(value=None):
    """The Gradescope visibility of the per-check results.

    Args:
        value: one of VISIBILITIES, or None to read ``$COURSE_GRADESCOPE_VISIBILITY``
            (default "after_due_date" when unset or empty).

    Returns:
        The visibility string.

    Raises:
        ValueError: if the value is not one of Gradescope's visibility values.
    """
    source = "visibility argument"
    if value is None:
        value = os.environ.get(VISIBILITY_ENV_VAR, "").strip() or DEFAULT_TEST_VISIBILITY
        source = f"${VISIBILITY_ENV_VAR}"
    if value not in VISIBILITIES:
        raise ValueError(
            f"Invalid Gradescope visibility in {source}: received {value!r}; "
            f"expected one of {', '.join(VISIBILITIES)}."
        )
    return value


def _plain(text):
    """Report text as plain text for Gradescope: ANSI codes and control characters removed."""
    return _INVISIBLE.sub("", _ANSI.sub("", str(text if text is not None else "")))


def gradescope_results(report, visibility=None):
    """Returns the Gradescope autograder results.json content for a report.

    The overall score and summary are always "visible" (students see their score at once);
    each check's entry (its points and message) gets `visibility`. Every output is plain text
    ("output_format": "text"), so a message quoting the student's code cannot render as
    markdown or HTML. The grader's stdout is "hidden" (it is for the course staff).

    Args:
        report: a report dict as written to report.json (needs score and checks; summary,
            seconds optional).
        visibility: the checks' visibility, one of VISIBILITIES; None reads
            ``$COURSE_GRADESCOPE_VISIBILITY`` (default "after_due_date").

    Returns:
        A dict following the Gradescope results.json specification.

    Raises:
        ValueError: for an invalid visibility value.
    """
    visibility = gradescope_visibility(visibility)
    tests = [
        {
            "name": _plain(check["name"]),
            "score": float(check["points"]),
            "max_score": float(check["max_points"]),
            "status": "passed" if check["passed"] else "failed",
            "output": _plain(check.get("message", "")),
            "output_format": OUTPUT_FORMAT,
            "visibility": visibility,
        }
        for check in report["checks"]
    ]
    return {
        "score": float(report["score"]),
        "execution_time": int(report.get("seconds") or 0),
        "output": _plain(report.get("summary", "")),
        "output_format": OUTPUT_FORMAT,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


# ------------------------------------------------------------------------------ feedback.ipynb


def _number(value):
    """A score for display: 2 for 2.0, 1.5 for 1.5; anything else as text."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def markdown_escape(text):
    """Escapes text so that markdown (and the HTML inside it) shows it literally.

    HTML-significant characters become entities, every markdown punctuation character
    (including table pipes, backticks and MathJax dollars) is backslash-escaped, and
    newlines become spaces, so the text stays inside its table cell or line.

    Args:
        text: any value (converted with str()).

    Returns:
        The escaped, one-line string.
    """
    text = _INVISIBLE.sub("", _ANSI.sub("", str(text if text is not None else "")))
    text = " ".join(text.split())
    text = text.replace("&", "&amp;")

    def escape(match):
        character = match.group(1)
        return {"<": "&lt;", ">": "&gt;"}.get(character, "\\" + character)

    return _MARKDOWN_SPECIAL.sub(escape, text)


def _results_markdown(report):
    title = markdown_escape(report.get("lab", ""))
    if report.get("lab_title"):
        title += f" ({markdown_escape(report['lab_title'])})"
    score = f"{_number(report.get('score'))} / {_number(report.get('max_score'))}"
    lines = [
        f"# Grader's verdict: {title}",
        "",
        f"**Score: {markdown_escape(score)}**",
        "",
        "*Written by the grader. Everything below the line is your notebook as it ran.*",
        "",
    ]
    if report.get("summary"):
        lines += [markdown_escape(report["summary"]), ""]
    lines += ["| check | points | result |", "| --- | --- | --- |"]
    for check in report.get("checks", []):
        points = markdown_escape(f"{_number(check.get('points'))} / {_number(check.get('max_points'))}")
        verdict = "passed" if check.get("passed") else "failed"
        lines.append(f"| {markdown_escape(check.get('name', ''))} | {points} | "
                     f"{verdict}: {markdown_escape(check.get('message', ''))} |")
    lines += ["", "---"]
    return "\n".join(lines)


def without_hidden_tests(source):
    """Returns (`source` without its hidden-test regions, how many there were)."""
    kept, hiding, removed = [], False, 0
    for line in source.splitlines():
        marker = line.strip()
        if marker.startswith(HIDDEN_TESTS_BEGIN):
            hiding, removed = True, removed + 1
        elif marker.startswith(HIDDEN_TESTS_END) and hiding:
            hiding = False
        elif not hiding:
            kept.append(line)
    return "\n".join(kept), removed


def _student_cells(executed_notebook):
    """The cells of the student's notebook to show: no probe cell, no hidden-test regions."""
    if executed_notebook is None:
        return []
    cells = []
    for cell in executed_notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if PROBE_TAG in tags or VERDICT_TAG in tags:
            continue
        source = _source_text(cell.get("source", ""))
        if HIDDEN_TESTS_BEGIN in source:
            cell = nbformat.from_dict(dict(cell))
            cell["source"] = without_hidden_tests(source)[0]
        cells.append(cell)
    return cells


def feedback_notebook(report, executed_notebook):
    """The student's executed notebook with the grader's results on top.

    The results cell is markdown built by the grader in which every report string is
    escaped (so a message cannot break the table or inject HTML); it is tagged
    "grader-verdict". No grader code: the probe cell and hidden-test regions are removed.

    Args:
        report: the report dict.
        executed_notebook: the executed notebook (nbformat node), or None.

    Returns:
        A v4 notebook node.
    """
    notebook = nbformat.v4.new_notebook()
    verdict = nbformat.v4.new_markdown_cell(_results_markdown(report))
    verdict.metadata["tags"] = [VERDICT_TAG]
    verdict.metadata["editable"] = False
    verdict.metadata["deletable"] = False
    notebook.cells.append(verdict)
    if executed_notebook is not None:
        notebook.cells.extend(_student_cells(executed_notebook))
        notebook.metadata = dict(executed_notebook.metadata)
    return notebook


# ------------------------------------------------------------------------------- feedback.html

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
#grader-verdict { border: 4px solid #1d4f91; background: #e8f0fb; padding: 1em 1.5em; }
#grader-verdict h1 { margin-top: 0; color: #1d4f91; }
#grader-verdict .score { font-size: 1.6em; font-weight: bold; }
#grader-verdict table { border-collapse: collapse; width: 100%; background: #fff; }
#grader-verdict th, #grader-verdict td { border: 1px solid #8aa; padding: .3em .5em; text-align: left;
  vertical-align: top; white-space: pre-wrap; }
#grader-verdict .passed { color: #176b2c; font-weight: bold; }
#grader-verdict .failed { color: #a11; font-weight: bold; }
#student-notebook { margin-top: 2em; border-top: 3px dashed #999; padding-top: 1em; }
#student-notebook .cell { border-left: 3px solid #ccc; margin: 1em 0; padding-left: .8em; }
#student-notebook .label { color: #777; font-size: .85em; }
#student-notebook pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6;
  padding: .4em; margin: .3em 0; }
#student-notebook pre.error { background: #fdeaea; }
#student-notebook .note { color: #777; font-style: italic; }
#student-notebook img { max-width: 100%; }
""".strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# No scripts, no external loads, no forms/frames/base; only images from data: URIs, and only
# the grader's own style element (by its hash).
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src data:; style-src 'sha256-{_CSS_HASH}'; "
    "base-uri 'none'; form-action 'none'"
)


def _escape(text):
    """HTML-escapes any value as text (quotes too), without ANSI codes or control characters."""
    text = str(text if text is not None else "")
    return html.escape(_INVISIBLE.sub("", _ANSI.sub("", text)), quote=True)


def _source_text(value):
    return "".join(value) if isinstance(value, list) else str(value or "")


def _verdict_html(report):
    score = f"{_number(report.get('score'))} / {_number(report.get('max_score'))}"
    lab = report.get("lab", "")
    title = f"{lab} ({report['lab_title']})" if report.get("lab_title") else lab
    rows = []
    for check in report.get("checks", []):
        verdict = "passed" if check.get("passed") else "failed"
        rows.append(
            f"<tr><td>{_escape(check.get('name', ''))}</td>"
            f"<td>{_escape(_number(check.get('points')))} / {_escape(_number(check.get('max_points')))}</td>"
            f"<td class=\"{verdict}\">{verdict}</td><td>{_escape(check.get('message', ''))}</td></tr>"
        )
    facts = [("Submission", report.get("submission", "")), ("Notebook", report.get("notebook", "")),
             ("Status", report.get("status", ""))]
    parts = [
        f'<section id="{VERDICT_ID}">',
        "<h1>Grader's verdict</h1>",
        f'<p>Lab: {_escape(title)}</p>',
        f'<p class="score">Score: {_escape(score)}</p>',
        "<ul>" + "".join(f"<li>{name}: {_escape(value)}</li>" for name, value in facts if value) + "</ul>",
    ]
    if report.get("summary"):
        parts.append(f"<p>Summary: {_escape(report['summary'])}</p>")
    if rows:
        parts.append("<table><thead><tr><th>check</th><th>points</th><th>result</th><th>message</th>"
                     "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    parts.append("<p>This block is written by the grader; it is the only place the score is stated. "
                 "Everything after it is the submitted notebook, shown as text.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _image_html(mime, data):
    """An <img> for base64 PNG/JPEG data that decodes and looks like that format; else None."""
    try:
        raw = base64.b64decode(_source_text(data).encode("ascii"), validate=False)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if not raw.startswith(_IMAGE_MAGIC[mime]):
        return None
    encoded = base64.b64encode(raw).decode("ascii")  # only [A-Za-z0-9+/=]: safe in the attribute
    return f'<img alt="figure" src="data:{mime};base64,{encoded}">'


def _output_html(output):
    kind = output.get("output_type", "")
    if kind == "stream":
        name = _escape(output.get("name", "stream"))
        return f'<div class="label">{name}</div><pre>{_escape(_source_text(output.get("text", "")))}</pre>'
    if kind == "error":
        heading = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        traceback = "\n".join(_source_text(line) for line in output.get("traceback", []) or [])
        return f'<pre class="error">{_escape(heading)}\n\n{_escape(traceback)}</pre>'
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {}) or {}
        parts = []
        image_shown = False
        for mime in ("image/png", "image/jpeg"):
            if mime in data and not image_shown:
                image = _image_html(mime, data[mime])
                if image:
                    parts.append(image)
                    image_shown = True
                else:
                    parts.append(f'<p class="note">[{_escape(mime)} output that is not a valid image not shown]</p>')
        if "text/plain" in data and not image_shown:
            parts.append(f"<pre>{_escape(_source_text(data['text/plain']))}</pre>")
        for mime in sorted(data):
            if mime not in ("image/png", "image/jpeg", "text/plain"):
                parts.append(f'<p class="note">[output of type {_escape(mime)} not shown]</p>')
        return "\n".join(parts) or '<p class="note">[empty output]</p>'
    return f'<p class="note">[output of type {_escape(kind)} not shown]</p>'


def _cell_html(index, cell):
    kind = cell.get("cell_type", "")
    label = f"cell {index}: {kind}"
    if kind == "code" and cell.get("execution_count") is not None:
        label += f" [{cell.get('execution_count')}]"
    parts = [f'<div class="cell"><div class="label">{_escape(label)}</div>',
             f"<pre>{_escape(_source_text(cell.get('source', '')))}</pre>"]
    if kind == "markdown" or kind == "raw":
        parts.append('<p class="note">[shown as text, not rendered]</p>')
    if cell.get("attachments"):
        parts.append('<p class="note">[cell attachments not shown]</p>')
    for output in cell.get("outputs", []) or []:
        parts.append(_output_html(output))
    parts.append("</div>")
    return "\n".join(parts)


def feedback_html(report, executed_notebook):
    """The feedback page: the grader's verdict, then the student's notebook as escaped text.

    Args:
        report: the report dict.
        executed_notebook: the executed notebook (nbformat node), or None.

    Returns:
        A complete HTML document (str). Nothing from the notebook or the report can add an
        element, attribute, script or style to it.
    """
    score = f"{_number(report.get('score'))} / {_number(report.get('max_score'))}"
    title = f"Score {score}: {report.get('lab', '')} feedback for {report.get('submission', '')}"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head>',
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CONTENT_SECURITY_POLICY)}">',
        '<meta charset="utf-8">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        _verdict_html(report),
    ]
    try:
        cells = _student_cells(executed_notebook)
        body = ['<section id="student-notebook">', "<h2>Your notebook (as it ran)</h2>"]
        if not cells:
            body.append('<p class="note">[no executed notebook to show]</p>')
        body += [_cell_html(index, cell) for index, cell in enumerate(cells, start=1)]
        body.append("</section>")
    except Exception as error:  # a broken output must not cost the student their report
        body = ['<section id="student-notebook">', "<h2>Your notebook (as it ran)</h2>",
                f'<p class="note">[the notebook could not be shown: {_escape(type(error).__name__)}: '
                f"{_escape(error)}]</p>", "</section>"]
    return "\n".join(head + body + ["</body></html>", ""])


def write_feedback(folder, report, executed_notebook):
    """Writes feedback.ipynb and feedback.html into `folder`.

    Args:
        folder: the submission's report folder (must exist).
        report: the report dict.
        executed_notebook: the executed notebook (nbformat node), or None.
    """
    folder = pathlib.Path(folder)
    notebook = feedback_notebook(report, executed_notebook)
    write_atomic(folder / FEEDBACK_NOTEBOOK, nbformat.writes(notebook))
    write_atomic(folder / FEEDBACK_HTML, feedback_html(report, executed_notebook))


def write_report_files(folder, report, executed_notebook):
    """Writes report.json, results.json and the feedback of one submission.

    Args:
        folder: the submission's report folder (created if missing).
        report: the report dict.
        executed_notebook: the executed notebook (nbformat node), or None.

    Raises:
        ValueError: if ``$COURSE_GRADESCOPE_VISIBILITY`` holds an invalid value.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_feedback(folder, report, executed_notebook)
    write_atomic(folder / GRADESCOPE_FILE, json.dumps(gradescope_results(report), indent=2))
    # report.json last: its presence marks the submission as finished (for --resume).
    write_atomic(folder / REPORT_FILE, json.dumps(report, indent=2))


def read_reports(out_dir):
    """Reads every finished report under `out_dir`, sorted by submission name.

    Hidden folders (`.tmp-*`, `.old-*`: a report folder being written or replaced) are not
    reports; no submission's report folder name starts with a dot.
    """
    reports = []
    for path in sorted(pathlib.Path(out_dir).glob(f"*/{REPORT_FILE}")):
        if path.parent.name.startswith("."):
            continue
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
