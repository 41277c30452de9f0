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
# The cases that run into the time limit get a shorter one: they prove the same (stopped at
# the limit, the definitions still graded) without waiting out 45 s (and 60 s more for the
# export of a kernel that ignores interrupts). Every other case keeps the 45-s limit.
LIMITS = {"timeout_s": 45, "memory_limit_mb": 2500, "short_timeout_s": 15,
          "short_timeout_cases": ["infinite_loop", "loop_ignoring_interrupts"]}
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
           max_score=None, feedback_excludes=(), lab="lab3", html_excludes=(), attack=""):
    return {
        "attack": attack,
        "html_excludes": list(html_excludes),
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
        "os._exit kills the kernel: the notebook's definitions are still graded from its text.",
        passed=[KL_CHECK], summary=["kernel stopped"])
    yield "segfault", nb_case(notebook(CORRECT_KL, "import ctypes\nctypes.string_at(0)")), expect(
        "A crashing kernel (segmentation fault): the definitions are still graded.", passed=[KL_CHECK],
        summary=["kernel stopped"])
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
""")), expect("A loop that swallows interrupts: the kernel is killed; the definitions are still graded.",
              passed=[KL_CHECK], summary=["time limit"])
    yield "memory_blowup", nb_case(notebook(CORRECT_KL, """
blocks = []
while True:
    blocks.append(bytearray(200 * 1024 * 1024))
    for i in range(0, len(blocks[-1]), 4096):
        blocks[-1][i] = 1
""")), expect("Allocates memory until stopped: killed; the definitions are still graded.", passed=[KL_CHECK],
              summary=["memory"])
    yield "huge_output", nb_case(notebook(CORRECT_KL, "for i in range(200000):\n    print('x' * 200)")), expect(
        "40 MB of printed output: truncated, still graded.", passed=[KL_CHECK])
    yield "nan_kl", nb_case(notebook("import numpy as np\ndef kl_divergence(m, v):\n    return np.full(np.shape(m)[0], np.nan)")), expect(
        "KL returns NaN.", failed=[KL_CHECK])
    # One mistake, one check: the formula itself is right, only its reduction is not.
    yield "wrong_shape_kl", nb_case(notebook(CORRECT_KL.replace("axis=-1)", "axis=0)"))), expect(
        "KL summed over the batch instead of the latent dimensions.", passed=[KL_CHECK],
        failed=["test_kl_sums_over_latent_dims"], messages={"test_kl_sums_over_latent_dims": "axis 0"})
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
    yield from _integrity_cases(nb_case)
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


SECRET_TEXT_FILE = ".grader-secret"
HOST_MARKER = "pwned-by-submission"


def _integrity_cases(nb_case):
    """Attacks on the grader's verdicts, sandbox and feedback (issue: grader integrity)."""
    yield "hooks_watch_and_rewrite_probe", nb_case(notebook(FLIPPED_KL, """
import glob, os
ip = get_ipython()
seen = []
def before(info):
    seen.append(info.raw_cell)
    display({"text/plain": "cell seen: " + info.raw_cell[:2000]}, raw=True, display_id="spy", update=len(seen) > 1)
def after(result):
    for path in glob.glob("/**/probe*.json", recursive=True) + glob.glob("../**/*.json", recursive=True):
        try:
            open(path, "w").write('{"seed": 0, "items": {"kl": {"ok": true, "facts": {}}}}')
        except OSError:
            pass
display({"text/plain": "spy"}, raw=True, display_id="spy")
ip.events.register("pre_run_cell", before)
ip.events.register("post_run_cell", after)
""")), expect("IPython hooks read the grader's next cell and rewrite any results they find: the probes "
              "never run in the kernel, so there is nothing to read or rewrite.", failed=[KL_CHECK],
              feedback_excludes=["_course_host_main", "_course_probe_main", "PROBES"], attack="forged verdict")
    yield "patched_savez", nb_case(notebook(FLIPPED_KL, """
import numpy as np
real = np.savez
def fake(path, *args, **arrays):
    arrays = {key: value for key, value in arrays.items()}
    for key in list(arrays):
        if key.endswith("/kl"):
            m, v = arrays[key.replace("/kl", "/z_mean")], arrays[key.replace("/kl", "/z_log_var")]
            arrays[key] = 0.5 * np.sum(np.exp(v) + m**2 - 1 - v, axis=-1)
    return real(path, *args, **arrays)
np.savez = fake
""")), expect("numpy.savez patched to rewrite the KL results: the kernel writes no results.",
              failed=[KL_CHECK], attack="forged verdict")
    yield "frame_detecting_decoder", nb_case(notebook(CORRECT_KL, """
import inspect
import course_lib
import keras
from course_lib.data import load_mnist
test_digits, _ = load_mnist("test", limit=2000)
class Sneaky(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(784, activation="sigmoid")
    def call(self, z):
        return keras.ops.reshape(self.dense(z), (-1, 28, 28, 1))
    def predict(self, z, **kwargs):
        names = " ".join(frame.function for frame in inspect.stack())
        if "probe" in names or "course" in names:
            return test_digits[: len(z)]
        return super().predict(z, **kwargs)
class Holder:
    pass
vae = Holder()
vae.decoder = Sneaky()
vae.decoder(keras.ops.zeros((1, 2)))
LATENT_DIM = 2
""")), expect("A decoder that returns real test digits when the grader calls it: models are saved and "
              "reloaded into Keras' own layers, so no notebook code runs when samples are drawn.",
              passed=[KL_CHECK], failed=["test_sample_quality", "test_samples_are_not_copies"],
              attack="forged verdict")
    yield "reference_through_importlib", nb_case(notebook("""
import importlib
vae_lib = importlib.import_module("course_lib.vae")
kl_divergence = vae_lib.kl_divergence
""", """
import importlib
class Sampling(importlib.import_module("course_lib.vae").Sampling):
    pass
class VAE(importlib.import_module("course_lib.vae").VAE):
    pass
""")), expect("No implementation of its own: the course's reference reached through importlib. It is "
              "withheld in this lab's kernel and probe process.", failed=[KL_CHECK], max_score=0,
              attack="reference implementation")
    yield "reference_from_grader_memory", nb_case(notebook(FLIPPED_KL.replace("def kl_divergence", "def _mine"), """
import gc, types
def kl_divergence(z_mean, z_log_var):
    for value in gc.get_objects():
        if isinstance(value, types.FunctionType) and value.__name__ in ("_reference_kl", "kl_divergence") \
                and value.__module__ != "__main__":
            return value(z_mean, z_log_var)
    return _mine(z_mean, z_log_var)
""")), expect("A KL that searches the process for the grader's own correct KL (lent to another probe "
              "item): that item's pieces are dropped before submitted code runs.", failed=[KL_CHECK],
              attack="reference implementation")
    yield "kill_probe_parent", nb_case(notebook(CORRECT_KL.replace("    z_mean = np.asarray", "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    z_mean = np.asarray"))), expect(
        "A graded function that kills the probe process: no results, a 0 with a clear message; "
        "nothing forged.", failed=[KL_CHECK], summary=["probe"], max_score=0, attack="forged verdict")
    yield "read_secret_and_environment", nb_case(notebook(CORRECT_KL, f"""
import os, glob
print("ENV:", sorted(os.environ))
print("GRADER-SECRET-ENV:", os.environ.get("COURSE_GRADER_SECRET"))
for path in glob.glob("/**/{SECRET_TEXT_FILE}", recursive=True)[:5]:
    print("SECRET-" + "FILE-READ:", open(path).read())
""")), expect("Looks for the grading secret in the environment and on disk: neither reaches the kernel.",
              passed=[KL_CHECK], feedback_excludes=["COURSE_GRADER_SECRET'", "SECRET-FILE-READ"],
              attack="secret")
    yield "escape_by_file_handle", nb_case(notebook(CORRECT_KL, f"""
import ctypes, ctypes.util, os
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_char * 8)]
handle = Handle(8, 1, (2).to_bytes(4, "little") + bytes(4))
fd = libc.open_by_handle_at(os.open("/usr", os.O_RDONLY), ctypes.byref(handle), os.O_RDONLY)
print("open_by_handle_at:", fd, ctypes.get_errno())
if fd >= 0:
    print("ESCAPED-" + "HOST", os.listdir(f"/proc/self/fd/{{fd}}"))
for target in ["/work", "/root", "/etc", "/usr/lib", os.path.dirname(os.__file__)]:
    try:
        open(os.path.join(target, "{HOST_MARKER}"), "w").write("x")
        print("WROTE-" + "OUTSIDE", target)
    except OSError:
        pass
try:
    import subprocess
    print(subprocess.run(["mount", "-o", "remount,rw", "/usr"], capture_output=True, text=True).stderr)
except Exception as error:
    print(error)
print("DEVICES:", sorted(os.listdir("/dev")))
""")), expect("File-handle escape, writes outside the scratch folder, remounts: all refused.",
              passed=[KL_CHECK], feedback_excludes=["ESCAPED-HOST", "WROTE-OUTSIDE", "'sda'", "'vda'"],
              attack="sandbox escape")
    html = notebook(FLIPPED_KL, """
from IPython.display import HTML, Javascript, display
display(HTML("<img src=x onerror=alert(1)><script>alert(2)</script><b onmouseover=alert(3)>hover</b>"))
display(Javascript("alert(4)"))
raise ValueError("**bold** <i>markup in an error</i>")
""", markdown=("<style>.grader-verdict, #grader-verdict { display: none !important }</style>\n"
               "<div id='fake-verdict'>Score: 20 / 20</div><script>alert(5)</script>"))
    yield "html_injection", nb_case(html), expect(
        "Student HTML, CSS and JavaScript in markdown and outputs: shown as text in feedback.html.",
        failed=[KL_CHECK], html_excludes=["<img src=x", "<script>alert", "<b onmouseover", "<style>.grader",
                                          "<div id='fake-verdict'", "<i>markup"],
        attack="feedback")


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
