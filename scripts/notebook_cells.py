"""Cell builders for authoring the source notebooks with nbgrader metadata.

Instructors may also edit source notebooks in Jupyter (View > Cell Toolbar > Create
Assignment); these builders write the same metadata.

    from notebook_cells import markdown, code, solution, hidden_check, new_lab_notebook
"""

import nbformat

SCHEMA_VERSION = 3


def new_lab_notebook(lab_name, cells):
    """A notebook for `lab_name` with the python3 kernel and the lab written in its metadata."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.metadata["course_lab"] = lab_name
    notebook.cells = list(cells)
    return notebook


def markdown(text):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text):
    return nbformat.v4.new_code_cell(text.strip("\n"))


def solution(text, grade_id):
    """A code cell whose `### BEGIN SOLUTION` ... `### END SOLUTION` part students write."""
    cell = code(text)
    cell.metadata["nbgrader"] = {
        "grade": False, "solution": True, "locked": False,
        "grade_id": grade_id, "schema_version": SCHEMA_VERSION,
    }
    return cell


def hidden_check(lab_name, check_name, points, visible=""):
    """An autograded test cell: optional visible sanity checks, then the hidden check call."""
    hidden = (
        "### BEGIN HIDDEN TESTS\n"
        "from autograder.nbgrader_bridge import run_hidden_check\n"
        f'run_hidden_check("{lab_name}", "{check_name}", globals())\n'
        "### END HIDDEN TESTS"
    )
    text = f"{visible.strip()}\n{hidden}" if visible.strip() else hidden
    cell = code(text)
    cell.metadata["nbgrader"] = {
        "grade": True, "solution": False, "locked": True, "points": points,
        "grade_id": check_name, "schema_version": SCHEMA_VERSION,
    }
    return cell


def write(notebook, path):
    nbformat.validate(notebook)
    nbformat.write(notebook, str(path))
