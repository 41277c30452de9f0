"""Builds the code sent to kernels and probe processes, and runs probes in-process for tests."""

import importlib
import json
import pathlib

from autograder.registry import PROBES_DIR, get_lab

RUNTIME_FILE = PROBES_DIR / "runtime.py"
EXPORT_FILE = PROBES_DIR / "export.py"
# Probe modules import the runtime for readers and linters; in a probe process the runtime
# text comes first instead, so these lines are dropped.
RUNTIME_IMPORT_PREFIX = "from autograder.probes.runtime import"
EXPORT_CELL_TAG = "course-probe"  # the feedback leaves out cells with this tag
# The probe process: reads its request from stdin, runs the runtime + lab probe text, and
# keeps neither the text nor the compiled module once the functions exist.
HOST_BOOTSTRAP = (
    "import json, sys\n"
    "def _course_boot():\n"
    "    request = json.loads(sys.stdin.buffer.read())\n"
    "    namespace = {'__name__': '_course_probe'}\n"
    "    exec(compile(request.pop('code'), '<course-probe>', 'exec'), namespace)\n"
    "    namespace['_course_host_main'](namespace, request)\n"
    "_course_boot()\n"
)


def probe_module(lab_name):
    """The lab's probe module, imported in the grader (for its item lists, never for judging)."""
    get_lab(lab_name)
    return importlib.import_module(f"autograder.probes.{lab_name}")


def probe_source(lab_name):
    """Returns the runtime plus the lab's probe module, as one self-contained text."""
    lab = get_lab(lab_name)
    module_text = pathlib.Path(lab.probe_module).read_text()
    kept = [line for line in module_text.splitlines() if not line.startswith(RUNTIME_IMPORT_PREFIX)]
    return RUNTIME_FILE.read_text() + "\n\n" + "\n".join(kept) + "\n"


def export_cell(lab_name, export_dir):
    """The cell appended to a submission: saves its trained models and values to `export_dir`."""
    names = sorted(getattr(probe_module(lab_name), "EXPORT_MODELS", ()))
    return (
        f"exec(compile({EXPORT_FILE.read_text()!r}, '<course-export>', 'exec'), "
        f"_course_export_namespace := {{}})\n"
        f"_course_export_namespace['_course_export_main'](globals(), {str(export_dir)!r}, {names!r})\n"
        f"del _course_export_namespace"
    )


def host_request(lab_name, seed, definitions, artefact_dir, item_timeout_s, writable, own_pid_namespace,
                 only=None):
    """The JSON request of one probe process (see `runtime._course_host_main`)."""
    module = probe_module(lab_name)
    items = [name for name in module.PROBES if only is None or name in only]
    return json.dumps({
        "code": probe_source(lab_name),
        "seed": int(seed),
        "items": items,
        "definition_items": sorted(getattr(module, "DEFINITION_ITEMS", ())),
        "definitions": definitions,
        "artefacts": str(artefact_dir),
        "item_timeout_s": float(item_timeout_s),
        "writable": [str(path) for path in writable],
        "own_pid_namespace": bool(own_pid_namespace),
    })


def run_probes_in_process(lab_name, namespace, out_dir, seed=0, only=None):
    """Runs the lab's probes against `namespace` in this process (tests, nbgrader bridge).

    Returns:
        The per-item status dict that is also written to `out_dir/probe.json`.
    """
    probe_namespace = {}
    exec(compile(probe_source(lab_name), "<course-probe>", "exec"), probe_namespace)
    return probe_namespace["_course_probe_main"](
        namespace, probe_namespace["PROBES"], str(out_dir), int(seed), only=only
    )

