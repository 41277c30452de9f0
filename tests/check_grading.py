"""Running a lab's probes in-process and its hidden checks, for the tests of the checks."""

import json

import numpy as np

from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process


def graded_cell(notebook, grade_id):
    """The one cell of an nbformat `notebook` whose nbgrader grade_id is `grade_id`.

    Raises:
        AssertionError: when no cell, or more than one, has that grade_id.
    """
    cells = [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(cells) == 1, f"expected one cell with grade_id {grade_id!r}; found {len(cells)}: update this test"
    return cells[0]


def merge_baseline(folder, baseline_dir, probed):
    """Completes a partial probe run with the baseline's results of the other items."""
    status = json.loads((folder / "probe.json").read_text())
    base_status = json.loads((baseline_dir / "probe.json").read_text())
    with np.load(folder / "probe.npz") as data:
        arrays = {key: data[key] for key in data.files}
    with np.load(baseline_dir / "probe.npz") as data:
        for key in data.files:
            if key.split("/")[0] not in probed:
                arrays[key] = data[key]
    for item, value in base_status["items"].items():
        if item not in probed:
            status["items"][item] = value
    np.savez(folder / "probe.npz", **arrays)
    (folder / "probe.json").write_text(json.dumps(status))


def grade_lab(lab, namespace, tmp_path, baseline_dir, all_probes, probes, imports=()):
    """Probes `namespace` (only `probes`; the rest from the baseline run) and runs the checks.

    Returns:
        {check name: CheckResult}.
    """
    folder = tmp_path / "probe"
    folder.mkdir()
    run_probes_in_process(lab, namespace, folder, seed=0, only=list(probes))
    if set(probes) != set(all_probes):
        merge_baseline(folder, baseline_dir, set(probes))
    results = run_checks(lab, folder, profile="fast", context={"imports": list(imports)})
    return {result.name: result for result in results}


def failed(results):
    """Names of the checks that failed."""
    return {name for name, result in results.items() if not result.passed}


def assert_loses_exactly(lab, results, check_name, *words):
    """Only `check_name` failed, it lost all its points, and its message has `words`."""
    points = check_points(lab)
    assert failed(results) == {check_name}, {name: results[name].message for name in failed(results)}
    lost = sum(result.max_points - result.points for result in results.values())
    assert lost == points[check_name]
    message = results[check_name].message.lower()
    for word in words:
        assert word.lower() in message, message


def assert_full_marks(lab, results):
    """Every check passed with all its points."""
    assert failed(results) == set(), {name: results[name].message for name in failed(results)}
    assert all(result.points == result.max_points for result in results.values())


def grade_through_probe_process(lab, notebook, tmp_path, items=None, checks=None, seed=0):
    """Grades `notebook` by the grader's own path, with its cells run in this process (no kernel).

    The cells run here, in one namespace named "__main__" (a notebook without magics); then
    the kernel's export module (autograder/probes/export.py) saves what they built, and the
    sandboxed probe process runs the probe `items` on those files, executing only the
    notebook's definitions, as in grading.

    Returns:
        ({check name: CheckResult} of `checks`, {item: probe status}).
    """
    import os

    from autograder import execute, grade, sandbox
    from autograder.probes import assemble
    from autograder.probes.definitions import top_level_definitions

    namespace = {"__name__": "__main__"}
    for index, cell in enumerate(notebook.cells):
        exec(compile(cell.source, f"<cell {index}>", "exec"), namespace)
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o755)
    export_dir, artefacts, work, probe_dir = (scratch / name for name in ("export", "artefacts", "probe", "results"))
    exporter = {}
    exec(compile(assemble.EXPORT_FILE.read_text(), "<course-export>", "exec"), exporter)
    exporter["_course_export_main"](namespace, str(export_dir), list(assemble.probe_module(lab).EXPORT_MODELS))
    execute.copy_export(export_dir, artefacts)
    isolation = sandbox.isolation_mode()
    writable = [work / "home", work / "tmp"] + (["/tmp", "/dev/shm"] if isolation == "bwrap" else [])
    request = assemble.host_request(lab, seed, top_level_definitions(notebook), artefacts, grade.PROBE_ITEM_TIMEOUT_S,
                                    writable, own_pid_namespace=isolation == "bwrap", only=items)
    data_dir = os.path.realpath(os.environ["COURSE_DATA_DIR"])
    environment = grade._kernel_environment("fast", data_dir, None, work)
    readable = grade._readable_paths(data_dir)
    execute.run_probe_process(request, work, probe_dir, timeout_s=grade.PROBE_TIMEOUT_S,
                              memory_limit_mb=grade.DEFAULT_MEMORY_LIMIT_MB, environment=environment,
                              isolation=isolation, readable=readable + [str(artefacts)],
                              hidden=grade.withheld_paths(lab, "probe"))
    statuses = json.loads((probe_dir / "probe.json").read_text())["items"]
    results = run_checks(lab, probe_dir, profile="fast", only=checks)
    return {result.name: result for result in results}, statuses
