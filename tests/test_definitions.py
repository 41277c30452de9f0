"""What the probe process executes of a notebook: its top-level imports, functions and classes only."""

import nbformat

from autograder.probes.definitions import top_level_definitions
from autograder.probes.export import _course_plain


def _notebook(*sources):
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_markdown_cell("# title")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return book


def test_only_imports_functions_and_classes_are_taken_in_order():
    book = _notebook(
        "import numpy as np\nfrom math import pi\nLATENT_DIM = 2\nprint('training')\nmodel = object()",
        "@staticmethod\ndef helper(x):\n    return x\n\nclass Sampling:\n    '''doc'''\n    def call(self):\n        return 1",
        "%matplotlib inline\n!ls\ndef after_magic():\n    return 2",
        "def broken(:\n    pass",
        "for i in range(3):\n    def hidden_in_loop():\n        pass",
    )
    statements = top_level_definitions(book)
    sources = [source for _, source in statements]
    assert sources[0] == "import numpy as np"
    assert sources[1] == "from math import pi"
    assert sources[2].startswith("@staticmethod\ndef helper(x):")
    assert sources[3].startswith("class Sampling:")
    assert sources[4].startswith("def after_magic")
    assert len(sources) == 5, sources
    assert all("print(" not in source and "model =" not in source for source in sources)
    assert [label for label, _ in statements] == ["<cell 1>", "<cell 1>", "<cell 2>", "<cell 2>", "<cell 3>"]


def test_the_definitions_run_without_the_top_level_code():
    book = _notebook("import os\nos.environ['RAN_TOP_LEVEL'] = '1'\ndef kl_divergence(m, v):\n    return m")
    namespace = {}
    for label, source in top_level_definitions(book):
        exec(compile(source, label, "exec"), namespace)
    assert namespace["kl_divergence"](3, 0) == 3
    assert "RAN_TOP_LEVEL" not in namespace["os"].environ


def test_exported_values_are_plain_json():
    assert _course_plain({"a": (1, 2.5, True, None), 3: "x"}) == {"a": [1, 2.5, True, None], "3": "x"}
    for bad in (object(), {1: object()}, [[[[[[[[1]]]]]]]]):
        try:
            _course_plain(bad)
        except TypeError:
            continue
        raise AssertionError(f"{bad!r} was exported as a plain value")
