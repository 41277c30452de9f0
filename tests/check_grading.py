"""Running a lab's probes in-process and its hidden checks, for the tests of the checks."""

import json

import numpy as np

from autograder.judge import check_points, run_checks
from autograder.probes.assemble import run_probes_in_process


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
