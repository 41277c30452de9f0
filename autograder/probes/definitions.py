"""The notebook's definitions: what the probe process executes of a submission.

The probe process never runs a notebook's top-level code (training, plotting, hooks):
only its imports, functions and classes, taken from the source of its code cells, so
that a graded function or class is the one the notebook's text defines. Values (numbers,
strings, lists, dicts) and trained models come from the export the kernel wrote.
"""

import ast

DEFINITION_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _python_source(cell_source):
    """IPython syntax (magics, `!cmd`) turned into plain Python, as the kernel would run it."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(cell_source)
    except Exception:  # IPython could not read it: the plain parser decides
        return cell_source


def top_level_definitions(notebook):
    """Returns [label, source] pairs: each top-level import, def and class, in order.

    Args:
        notebook: an nbformat v4 notebook (hidden tests already removed).

    Returns:
        A list of `[label, source]`; `label` names the cell ("<cell 7>"). Cells that do
        not parse are skipped (the kernel reported their error already).
    """
    statements = []
    for index, cell in enumerate(notebook.cells):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        try:
            tree = ast.parse(_python_source(source))
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, DEFINITION_NODES):
                statements.append([f"<cell {index}>", ast.unparse(node)])
    return statements
