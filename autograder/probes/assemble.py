"""Builds the probe code sent into a kernel, and runs probes in-process for tests."""

import pathlib

from autograder.registry import PROBES_DIR, get_lab

RUNTIME_FILE = PROBES_DIR / "runtime.py"
# Probe modules import the runtime for readers and linters; inside a kernel the runtime
# text comes first instead, so these lines are dropped.
RUNTIME_IMPORT_PREFIX = "from autograder.probes.runtime import"


def probe_source(lab_name):
    """Returns the runtime plus the lab's probe module, as one self-contained text."""
    lab = get_lab(lab_name)
    module_text = pathlib.Path(lab.probe_module).read_text()
    kept = [line for line in module_text.splitlines() if not line.startswith(RUNTIME_IMPORT_PREFIX)]
    return RUNTIME_FILE.read_text() + "\n\n" + "\n".join(kept) + "\n"


def probe_cell(lab_name, out_dir, seed, only=None):
    """Returns the cell the grader appends to a submission to run the lab's probes."""
    # One private namespace, so the probe's helpers do not overwrite student names.
    return (
        f"exec(compile({probe_source(lab_name)!r}, '<course-probe>', 'exec'), "
        f"_course_probe_namespace := {{}})\n"
        f"_course_probe_namespace['_course_probe_main'](globals(), "
        f"_course_probe_namespace['PROBES'], {str(out_dir)!r}, {int(seed)}, "
        f"only={sorted(only) if only else None!r})\n"
        f"del _course_probe_namespace"
    )


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
