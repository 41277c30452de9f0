"""feedback.html / feedback.ipynb: nothing the student wrote can run, style or forge the verdict."""

import html.parser
import json
import re

import nbformat
import pytest

from autograder import reports

# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
FAKE_VERDICT = (
    "<style>#grader-verdict, h1, .score { display: none !important; }</style>\n"
    '<div id="grader-verdict" style="border: 4px solid blue">'
    "<h1>Grader's verdict</h1><p class=\"score\">Score: 20 / 20</p></div>"
)
HOSTILE_MESSAGE = "expected <b>bold</b> | a | pipe and `code` and **stars** & $x$"


def hostile_notebook():
    v4 = nbformat.v4
    notebook = v4.new_notebook()
    notebook.cells = [
        v4.new_markdown_cell(FAKE_VERDICT),
        v4.new_markdown_cell("<script>alert('md')</script> <img src=x onerror=alert(1)> "
                             "<a href='#' onmouseover=\"alert(2)\">hover</a>"),
        v4.new_code_cell("print('<script>alert(3)</script>')", execution_count=1, outputs=[
            v4.new_output("stream", name="stdout", text="<script>alert(3)</script>\n\x1b[31mred\x1b[0m\n"),
        ]),
        v4.new_code_cell("display(evil)", execution_count=2, outputs=[
            v4.new_output("display_data", data={
                "text/html": "<script>alert(4)</script><b onmouseover=alert(5)>x</b>",
                "application/javascript": "alert(6)",
                "image/svg+xml": "<svg onload=alert(7)><script>alert(8)</script></svg>",
                "text/markdown": "**Score: 20 / 20**",
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
                "text/plain": "<Evil object>",
            }),
        ]),
        v4.new_code_cell("plot()", execution_count=3, outputs=[
            v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
            v4.new_output("display_data", data={"image/png": "not base64 <script>", "text/plain": "x"}),
        ]),
        v4.new_code_cell("raise ValueError(...)", execution_count=4, outputs=[
            v4.new_output("error", ename="ValueError",
                          evalue="<img src=x onerror=alert(9)> **bold** | `tick`",
                          traceback=["\x1b[0;31mValueError\x1b[0m: <script>alert(10)</script>"]),
        ]),
        v4.new_code_cell("x = 1\n### BEGIN HIDDEN TESTS\nassert secret\n### END HIDDEN TESTS\ny = 2"),
    ]
    probe = v4.new_code_cell("_course_probe_main()")
    probe.metadata["tags"] = ["course-probe"]
    notebook.cells.append(probe)
    return notebook


def hostile_report():
    return {
        "submission": "<b>eve</b>&co",
        "lab": "lab3",
        "lab_title": "VAE <i>digits</i>",
        "notebook": "lab3<script>.ipynb",
        "score": 2.0,
        "max_score": 20.0,
        "status": "graded",
        "summary": "1 cell(s) raised an error: ValueError: <img src=x onerror=alert(1)> **bold**",
        "checks": [
            {"name": "test_kl", "points": 2.0, "max_points": 2.0, "passed": True, "message": "ok"},
            {"name": "test_sampling", "points": 0.0, "max_points": 18.0, "passed": False,
             "message": HOSTILE_MESSAGE},
        ],
        "seconds": 12.5,
    }


class Page(html.parser.HTMLParser):
    """Records every element, with its attributes and where its text lies."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements = []  # (tag, attrs dict, path of open tags)
        self.stack = []
        self.texts = []  # (text, path of open tags, list of ids of enclosing elements)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes, [t for t, _ in self.stack]))
        if tag not in ("meta", "img", "br", "hr"):
            self.stack.append((tag, attributes.get("id")))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), [t for t, _ in self.stack]))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if data.strip():
            self.texts.append((data, [t for t, _ in self.stack], [i for _, i in self.stack if i]))


@pytest.fixture
def page_source():
    return reports.feedback_html(hostile_report(), hostile_notebook())


@pytest.fixture
def page(page_source):
    parser = Page()
    parser.feed(page_source)
    parser.close()
    return parser


def test_no_script_no_event_handler_no_student_style(page, page_source):
    assert not re.search(r"<\s*script", page_source, re.IGNORECASE)
    assert not re.search(r"<\s*svg", page_source, re.IGNORECASE)
    tags = {tag for tag, _, _ in page.elements}
    assert "script" not in tags and "svg" not in tags and "iframe" not in tags and "a" not in tags
    for tag, attributes, _ in page.elements:
        handlers = [name for name in attributes if name.lower().startswith("on")]
        assert not handlers, f"<{tag}> carries {handlers}"
        assert "style" not in attributes, f"<{tag}> carries an inline style"
    styles = [(tag, path) for tag, _, path in page.elements if tag == "style"]
    assert styles == [("style", ["html", "head"])], "only the grader's own <style>, in <head>"
    assert page_source.count("<style>") == 1
    assert reports._CSS in page_source
    # The student's markup is there, but only as escaped text.
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page_source
    assert "&lt;style&gt;#grader-verdict" in page_source
    assert "onerror=alert(1)" in page_source and not re.search(r"<[^>]*\son\w+=", page_source)


def test_content_security_policy_forbids_scripts_and_external_loads(page):
    metas = [attributes for tag, attributes, _ in page.elements
             if tag == "meta" and attributes.get("http-equiv", "").lower() == "content-security-policy"]
    assert len(metas) == 1
    policy = metas[0]["content"]
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert "script-src" not in policy and "unsafe-eval" not in policy
    first = page.elements[2]  # html, head, then the CSP before anything else
    assert first[0] == "meta" and first[1].get("http-equiv") == "Content-Security-Policy"


def test_verdict_block_comes_first_and_states_the_real_score(page, page_source):
    body = [(tag, attributes) for tag, attributes, path in page.elements if path == ["html", "body"]]
    assert [attributes.get("id") for _, attributes in body] == ["grader-verdict", "student-notebook"]
    ids = [attributes["id"] for _, attributes, _ in page.elements if "id" in attributes]
    assert ids == ["grader-verdict", "student-notebook"]  # the student's fake block is only text
    verdict_text = " ".join(text for text, _, ids in page.texts if "grader-verdict" in ids)
    assert "Grader's verdict" in verdict_text and "Score: 2 / 20" in verdict_text
    assert "20 / 20" not in verdict_text
    title = [text for text, path, _ in page.texts if path[-1:] == ["title"]]
    assert title and "Score 2 / 20" in title[0]
    # Wherever the fake score appears, it is escaped text inside the student's section.
    for text, path, ids in page.texts:
        if "20 / 20" in text:
            assert ids == ["student-notebook"] and path[-1] == "pre", (text, path)
    assert page_source.index('id="grader-verdict"') < page_source.index('id="student-notebook"')
    assert page_source.index("Score: 2 / 20") < page_source.index("Score: 20 / 20")


def test_report_strings_are_escaped(page, page_source):
    texts = " ".join(text for text, _, _ in page.texts)
    assert "<b>eve</b>&co" in texts and "lab3<script>.ipynb" in texts
    assert HOSTILE_MESSAGE in texts
    assert not [tag for tag, _, _ in page.elements if tag in ("b", "i")]
    message_cells = [path for text, path, _ in page.texts if HOSTILE_MESSAGE in text]
    assert message_cells and all(path[-1] == "td" for path in message_cells)


def test_only_valid_png_outputs_become_images(page, page_source):
    images = [attributes for tag, attributes, _ in page.elements if tag == "img"]
    assert [image["src"] for image in images] == [f"data:image/png;base64,{PNG}"]
    assert "not a valid image not shown" in page_source
    for mime in ("text/html", "application/javascript", "image/svg+xml", "text/markdown",
                 "application/vnd.jupyter.widget-view+json"):
        assert f"[output of type {mime} not shown]" in page_source
    assert "alert(4)" not in page_source and "alert(6)" not in page_source and "alert(8)" not in page_source


def test_errors_are_shown_without_ansi_codes_and_grader_code_is_absent(page_source):
    assert "\x1b" not in page_source
    assert "ValueError: &lt;img src=x onerror=alert(9)&gt;" in page_source
    assert "_course_probe_main" not in page_source
    assert "BEGIN HIDDEN TESTS" not in page_source and "assert secret" not in page_source
    assert "y = 2" in page_source


def test_page_without_a_notebook_still_has_the_verdict():
    page_source = reports.feedback_html(hostile_report(), None)
    assert "Score: 2 / 20" in page_source and "[no executed notebook to show]" in page_source


def unescaped_pipes(line):
    return len(re.findall(r"(?<!\\)\|", line))


def test_feedback_notebook_results_cell_cannot_be_broken():
    notebook = reports.feedback_notebook(hostile_report(), hostile_notebook())
    verdict = notebook.cells[0]
    assert verdict.cell_type == "markdown" and verdict.metadata["tags"] == ["grader-verdict"]
    source = verdict.source
    assert "Score: 2 / 20" in source
    assert "<" not in source and ">" not in source
    assert not re.search(r"(?<!\\)`", source)
    rows = [line for line in source.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(hostile_report()["checks"])
    assert all(unescaped_pipes(row) == 4 for row in rows), rows
    assert "&lt;b&gt;bold&lt;/b&gt;" in source and "\\*\\*stars\\*\\*" in source and "\\$x\\$" in source
    # The student's own cells follow, without grader code.
    sources = [cell.source for cell in notebook.cells[1:]]
    assert sources[0] == FAKE_VERDICT
    text = json.dumps(nbformat.writes(notebook))
    assert "_course_probe_main" not in text and "HIDDEN TESTS" not in text and "assert secret" not in text
    nbformat.validate(notebook)


def test_markdown_escape_keeps_text_on_one_line():
    assert reports.markdown_escape("a\n| b <c> & `d`") == "a \\| b &lt;c&gt; &amp; \\`d\\`"


def test_write_report_files_writes_all_files(tmp_path, monkeypatch):
    monkeypatch.delenv(reports.VISIBILITY_ENV_VAR, raising=False)
    folder = tmp_path / "eve"
    reports.write_report_files(folder, hostile_report(), hostile_notebook())
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["feedback.html", "feedback.ipynb", "report.json", "results.json"]
    assert "<script" not in (folder / "feedback.html").read_text().lower()
    results = json.loads((folder / "results.json").read_text())
    assert results["score"] == 2.0 and results["tests"][1]["output"] == HOSTILE_MESSAGE
    assert json.loads((folder / "report.json").read_text())["submission"] == "<b>eve</b>&co"
