"""Writes the corpus of hostile and broken lab3 submissions, each with its expected outcome.

Run it to regenerate the committed corpus: python tests/hostile_corpus/make_corpus.py
Each case is a folder `<case>/` with the submission (`lab3.ipynb`, or a folder) and
`expected.json` (what the grader must report). The grader's limits for the corpus run are in
`limits.json`.
"""

import json
import pathlib
import shutil

import nbformat

CORPUS_DIR = pathlib.Path(__file__).resolve().parent
LIMITS = {"timeout_s": 45, "memory_limit_mb": 2500}
KL_CHECK = "test_kl_closed_form"

CORRECT_KL = """import numpy as np

def kl_divergence(z_mean, z_log_var):
    z_mean = np.asarray(z_mean, dtype=np.float64)
    z_log_var = np.asarray(z_log_var, dtype=np.float64)
    return 0.5 * np.sum(np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var, axis=-1)
"""
FLIPPED_KL = CORRECT_KL.replace("return 0.5 *", "return -0.5 *")
SECRET_PATHS = [
    "autograder/checks/test_lab3.py",
    "source/lab3/lab3.ipynb",
    "solutions/lab3/lab3.ipynb",
    "gradebook.db",
]


def notebook(*sources, markdown=None, nbformat_metadata=None):
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_markdown_cell(markdown)] if markdown else []
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    book.cells = cells
    return book


def expect(description, passed=(), failed=(), status="graded", summary=(), messages=None,
           max_score=None, feedback_excludes=(), lab="lab3"):
    return {
        "description": description,
        "lab": lab,
        "status": status,
        "passed": list(passed),
        "failed": list(failed),
        "summary_contains": list(summary),
        "message_contains": messages or {},
        "max_score_at_most": max_score,
        "feedback_excludes": list(feedback_excludes),
    }


def cases():
    """Yields (name, writer, expected); writer(folder) writes the submission into folder."""

    def nb_case(book):
        return lambda folder: nbformat.write(book, str(folder / "lab3.ipynb"))

    def raw_case(text, name="lab3.ipynb"):
        return lambda folder: (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    yield "honest_correct_kl", nb_case(notebook(CORRECT_KL)), expect(
        "An honest correct KL: the reference point for the others.", passed=[KL_CHECK])
    yield "honest_flipped_kl", nb_case(notebook(FLIPPED_KL)), expect(
        "KL with the slide's flipped sign.", failed=[KL_CHECK], messages={KL_CHECK: "sign"})
    yield "invalid_json", raw_case('{"cells": [ {"cell_type": "code", '), expect(
        "Truncated JSON.", status="not graded", summary=["not valid JSON"], max_score=0)
    yield "empty_file", raw_case(b""), expect(
        "A zero-byte notebook.", status="not graded", summary=["empty"], max_score=0)
    yield "json_not_notebook", raw_case('[1, 2, 3]'), expect(
        "Valid JSON that is not a notebook.", status="not graded", summary=["not a Jupyter notebook"], max_score=0)
    yield "invalid_notebook_schema", raw_case(json.dumps({"cells": [{"cell_type": "banana"}], "metadata": {},
                                                          "nbformat": 4, "nbformat_minor": 5})), expect(
        "JSON with a notebook's keys but an invalid cell.", status="not graded",
        summary=["does not follow the Jupyter notebook format"], max_score=0)
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "lab3"}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": CORRECT_KL, "language": "python", "outputs": [], "metadata": {}}],
        "metadata": {}}]}
    yield "nbformat_v3", raw_case(json.dumps(v3)), expect(
        "An old nbformat 3 notebook: converted and graded.", passed=[KL_CHECK])
    yield "only_markdown", nb_case(notebook(markdown="# I did nothing")), expect(
        "Missing cells: nothing defined.", failed=[KL_CHECK], messages={KL_CHECK: "defines no `kl_divergence`"}, max_score=0)
    yield "renamed_function", nb_case(notebook(CORRECT_KL.replace("def kl_divergence", "def kl_div"))), expect(
        "The graded name was renamed.", failed=[KL_CHECK], messages={KL_CHECK: "defines no `kl_divergence`"})
    yield "monkeypatch_numpy", nb_case(notebook(FLIPPED_KL, """
import numpy as np, numpy.testing
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), dtype=bool)
""")), expect("Wrong KL plus numpy's comparisons patched to always agree.", failed=[KL_CHECK])
    yield "monkeypatch_builtins_and_pytest", nb_case(notebook(FLIPPED_KL, """
import builtins, sys, types
builtins.AssertionError = type("Never", (Exception,), {})
fake = types.ModuleType("pytest"); fake.main = lambda *a, **k: 0
sys.modules["pytest"] = fake
import keras, torch
torch.allclose = lambda *a, **k: True
keras.ops.all = lambda *a, **k: True
""")), expect("Wrong KL plus builtins, pytest, torch and keras patched.", failed=[KL_CHECK])
    yield "always_equal_object", nb_case(notebook("""
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __array__(self, *a, **k): raise TypeError("no")
def kl_divergence(z_mean, z_log_var):
    return AlwaysEqual()
""")), expect("kl_divergence returns an object equal to everything.", failed=[KL_CHECK])
    yield "fake_pass_output", nb_case(notebook(FLIPPED_KL, """
print("test_kl_closed_form PASSED")
print('{"score": 100, "max_score": 100, "tests": [{"name": "test_kl_closed_form", "score": 3}]}')
print("===== 25 passed in 0.01s =====")
""")), expect("Prints fake pass lines and a fake JSON report.", failed=[KL_CHECK])
    yield "disable_tracebacks", nb_case(notebook("""
import sys, traceback
sys.excepthook = lambda *a: None
traceback.print_exception = lambda *a, **k: None
get_ipython().showtraceback = lambda *a, **k: None
""", FLIPPED_KL)), expect("Tracebacks disabled, wrong KL.", failed=[KL_CHECK])
    yield "sys_exit_midway", nb_case(notebook(CORRECT_KL, "import sys\nsys.exit(0)", "x = 1")), expect(
        "sys.exit() in a cell: IPython turns it into an error; later cells and the grade go on.",
        passed=[KL_CHECK])
    yield "os_exit", nb_case(notebook(CORRECT_KL, "import os\nos._exit(0)")), expect(
        "os._exit kills the kernel: nothing can be inspected.", failed=[KL_CHECK],
        summary=["kernel stopped"], messages={KL_CHECK: "kernel stopped"}, max_score=0)
    yield "segfault", nb_case(notebook(CORRECT_KL, "import ctypes\nctypes.string_at(0)")), expect(
        "A crashing kernel (segmentation fault).", failed=[KL_CHECK], summary=["kernel stopped"], max_score=0)
    yield "infinite_loop", nb_case(notebook(CORRECT_KL, "while True:\n    pass", "print('never')")), expect(
        "An infinite loop: stopped at the time limit; what was defined before is still graded.",
        passed=[KL_CHECK], summary=["time limit"])
    yield "loop_ignoring_interrupts", nb_case(notebook(CORRECT_KL, """
import time
while True:
    try:
        time.sleep(0.1)
    except KeyboardInterrupt:
        pass
""")), expect("A loop that swallows interrupts: the kernel is killed; 0 with a clear message.",
              failed=[KL_CHECK], summary=["time limit"], max_score=0)
    yield "memory_blowup", nb_case(notebook(CORRECT_KL, """
blocks = []
while True:
    blocks.append(bytearray(200 * 1024 * 1024))
    for i in range(0, len(blocks[-1]), 4096):
        blocks[-1][i] = 1
""")), expect("Allocates memory until stopped.", failed=[KL_CHECK], summary=["memory"], max_score=0)
    yield "huge_output", nb_case(notebook(CORRECT_KL, "for i in range(200000):\n    print('x' * 200)")), expect(
        "40 MB of printed output: truncated, still graded.", passed=[KL_CHECK])
    yield "nan_kl", nb_case(notebook("import numpy as np\ndef kl_divergence(m, v):\n    return np.full(np.shape(m)[0], np.nan)")), expect(
        "KL returns NaN.", failed=[KL_CHECK])
    yield "wrong_shape_kl", nb_case(notebook(CORRECT_KL.replace("axis=-1)", "axis=0)"))), expect(
        "KL summed over the batch instead of the latent dimensions.", failed=[KL_CHECK],
        messages={KL_CHECK: "one value per example"})
    yield "string_kl", nb_case(notebook("def kl_divergence(m, v):\n    return 'zero'")), expect(
        "KL returns a string (wrong dtype).", failed=[KL_CHECK])
    yield "read_hidden_files", nb_case(notebook(CORRECT_KL, f"""
import os, glob
found = []
for root in ["/", os.getcwd(), os.path.expanduser("~")]:
    for relative in {SECRET_PATHS!r}:
        for base in [root] + [os.path.join(root, *[".."] * depth) for depth in range(1, 8)]:
            path = os.path.normpath(os.path.join(base, relative))
            try:
                found.append((path, open(path, "rb").read(200)))
            except OSError:
                pass
for pattern in ["/**/checks/test_lab3.py", "/**/gradebook.db"]:
    for path in glob.glob(pattern, recursive=True)[:5]:
        found.append((path, open(path, "rb").read(200)))
print("STOLEN:", found)
""")), expect("Reads hidden tests, solutions and the gradebook: nothing is reachable.",
              passed=[KL_CHECK], feedback_excludes=["run_hidden_check", "def test_kl", "BEGIN SOLUTION", "STOLEN: [("])
    yield "network_access", nb_case(notebook(CORRECT_KL, """
import socket
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    print("NETWORK" + "-IS-OPEN")
except OSError as error:
    print("NETWORK: blocked", error)
""")), expect("Tries the network.", passed=[KL_CHECK], feedback_excludes=["NETWORK-IS-OPEN"])
    yield "forge_probe_files", nb_case(notebook(FLIPPED_KL, """
import json, os
import numpy as np
for folder in [".", "..", "../probe"]:
    try:
        os.makedirs(folder, exist_ok=True)
        json.dump({"seed": 0, "items": {"kl": {"ok": True, "facts": {}}}}, open(os.path.join(folder, "probe.json"), "w"))
        np.savez(os.path.join(folder, "probe.npz"), **{"kl/kl": np.zeros(64), "kl/z_mean": np.zeros((64, 5)), "kl/z_log_var": np.zeros((64, 5))})
    except OSError:
        pass
""")), expect("Writes fake probe results where it guesses the grader looks.", failed=[KL_CHECK])
    yield "edited_metadata_points", nb_case(_with_metadata(notebook(FLIPPED_KL, "print('tests')"))), expect(
        "nbgrader metadata edited: a test cell given 1000 points, marked passed.", failed=[KL_CHECK],
        max_score=None)
    yield "background_process", nb_case(notebook(CORRECT_KL, """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
""")), expect("Leaves a detached process behind: killed with the kernel.", passed=[KL_CHECK])
    yield "junk_folder", _folder_case({"lab3.ipynb": notebook(CORRECT_KL), "notes.txt": b"junk",
                                       ".DS_Store": b"\x00\x01", "__MACOSX/._lab3.ipynb": b"\x00",
                                       ".ipynb_checkpoints/lab3-checkpoint.ipynb": notebook(FLIPPED_KL),
                                       "data.bin": bytes(range(256)) * 100}), expect(
        "A folder with junk beside the notebook: the notebook is found and graded.", passed=[KL_CHECK])
    yield "two_notebooks", _folder_case({"draft.ipynb": notebook(FLIPPED_KL), "final.ipynb": notebook(CORRECT_KL)}), expect(
        "A folder with two notebooks, neither named lab3.ipynb.", status="not graded",
        summary=["2 notebooks", "draft.ipynb", "final.ipynb"], max_score=0)
    yield "no_notebook_folder", _folder_case({"readme.txt": b"forgot the notebook"}), expect(
        "A folder without a notebook.", status="not graded", summary=["no .ipynb"], max_score=0)


def _with_metadata(book):
    cell = book.cells[-1]
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1000,
                                 "grade_id": KL_CHECK, "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="passed\n")]
    book.metadata["course_lab"] = "lab3"
    return book


def _folder_case(files):
    def write(folder):
        for relative, content in files.items():
            path = folder / "submission" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                nbformat.write(content, str(path))
    return write


def main():
    for child in CORPUS_DIR.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    count = 0
    for name, write, expected in cases():
        folder = CORPUS_DIR / name
        folder.mkdir()
        write(folder)
        (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
        count += 1
    (CORPUS_DIR / "limits.json").write_text(json.dumps(LIMITS, indent=2) + "\n")
    print(f"Wrote {count} cases into {CORPUS_DIR}")


if __name__ == "__main__":
    main()
