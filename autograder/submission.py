"""Finding, reading and checking a submitted notebook before anything runs."""

import ast
import hashlib
import json
import pathlib

import nbformat

from autograder.reports import HIDDEN_TESTS_BEGIN, HIDDEN_TESTS_END, without_hidden_tests  # noqa: F401  (markers: one definition)

IGNORED_PARTS = (".ipynb_checkpoints", "__MACOSX")
MAX_NOTEBOOK_BYTES = 50 * 1024**2


class SubmissionError(Exception):
    """The submission cannot be graded; the message says why and what was expected."""


def find_notebook(submission_path, lab=None):
    """Returns the notebook file of a submission (a notebook, or a folder holding one).

    Raises:
        SubmissionError: if the path is missing, or a folder holds no notebook or
            several candidates and none is named after the lab.
    """
    path = pathlib.Path(submission_path)
    if not path.exists():
        raise SubmissionError(f"The submission does not exist. Received: {path}")
    if path.is_file():
        return path
    candidates = sorted(
        file
        for file in path.rglob("*.ipynb")
        if file.is_file()
        and not any(part in IGNORED_PARTS or part.startswith(".") for part in file.relative_to(path).parts)
    )
    if not candidates:
        raise SubmissionError(f"The folder holds no .ipynb notebook. Received: {path}")
    if len(candidates) == 1:
        return candidates[0]
    if lab is not None:
        named = [file for file in candidates if file.name == f"{lab}.ipynb"]
        if len(named) == 1:
            return named[0]
    names = ", ".join(str(file.relative_to(path)) for file in candidates)
    raise SubmissionError(
        f"The folder holds {len(candidates)} notebooks and none is the expected "
        f"'{lab or 'labN'}.ipynb'. Received: {names}"
    )


def read_notebook(notebook_path):
    """Reads a notebook of any nbformat version and returns it as a validated v4 notebook.

    Returns:
        (notebook, raw_bytes)

    Raises:
        SubmissionError: for an empty, oversized, non-JSON or invalid notebook.
    """
    path = pathlib.Path(notebook_path)
    raw = path.read_bytes()
    if not raw.strip():
        raise SubmissionError(f"The notebook file is empty. Received: {path.name} (0 bytes of JSON)")
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(
            f"The notebook is too large to grade: {len(raw)} bytes (limit {MAX_NOTEBOOK_BYTES}). "
            f"Clear the outputs and submit again."
        )
    try:
        content = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        raise SubmissionError(
            f"The notebook is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}). Received: {path.name}. Re-download it from Jupyter (File > Download)."
        ) from None
    if not isinstance(content, dict) or "cells" not in content and "worksheets" not in content:
        raise SubmissionError(
            f"The file is JSON but not a Jupyter notebook (no 'cells'). Received: {path.name}"
        )
    try:
        notebook = nbformat.reads(json.dumps(content), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # nbformat raises several types for bad notebooks
        raise SubmissionError(
            f"The notebook does not follow the Jupyter notebook format: "
            f"{str(error).splitlines()[0][:300]}. Received: {path.name}"
        ) from None
    return notebook, raw




def strip_hidden_tests(notebook):
    """Removes nbgrader's hidden-test regions from every code cell, in place.

    The grader judges outside the kernel, so a notebook that still carries the hidden
    calls (a solution notebook, or a student who copied the source) must not run them:
    they import the grader, which the sandboxed kernel cannot see. An unclosed region
    is removed to the end of its cell, as nbgrader does.

    Returns:
        The number of regions removed.
    """
    removed = 0
    for cell in notebook.cells:
        if cell.cell_type != "code" or HIDDEN_TESTS_BEGIN not in cell.source:
            continue
        cell.source, count = without_hidden_tests(cell.source)
        removed += count
    return removed


def fingerprint(raw_bytes):
    """sha256 of the submitted bytes."""
    return hashlib.sha256(raw_bytes).hexdigest()


def code_imports(notebook):
    """Lists what the notebook's code cells import, as "module" and "module.name" strings.

    Cells that do not parse (IPython magics, syntax errors) are skipped.
    """
    imported = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted(imported)
