"""Reading submissions: hidden-test regions are removed before a notebook runs."""

import nbformat

from autograder.submission import strip_hidden_tests


def _notebook(*sources):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return notebook


def test_hidden_regions_are_removed_and_visible_lines_kept():
    notebook = _notebook(
        "assert z.shape == (4, 2)\n### BEGIN HIDDEN TESTS\nfrom autograder import x\n"
        "x()\n### END HIDDEN TESTS\nprint('after')",
        "print('untouched')",
    )
    assert strip_hidden_tests(notebook) == 1
    assert notebook.cells[0].source == "assert z.shape == (4, 2)\nprint('after')"
    assert notebook.cells[1].source == "print('untouched')"


def test_an_unclosed_region_is_removed_to_the_end_of_its_cell():
    notebook = _notebook("a = 1\n### BEGIN HIDDEN TESTS\nsecret()", "b = 2")
    assert strip_hidden_tests(notebook) == 1
    assert notebook.cells[0].source == "a = 1"
    assert notebook.cells[1].source == "b = 2"


def test_markdown_cells_are_left_alone():
    notebook = nbformat.v4.new_notebook()
    text = "### BEGIN HIDDEN TESTS is how nbgrader marks them"
    notebook.cells = [nbformat.v4.new_markdown_cell(text)]
    assert strip_hidden_tests(notebook) == 0
    assert notebook.cells[0].source == text
