"""A construction-dependent Sampling bug, graded by the real CLI on a real notebook.

The notebook is lab3's solution with one line changed, as a student writes it: the layer
keeps the template's `seed` argument and draws with `seed=self.seed`, an int, so every call
of a layer built with `Sampling(seed=SEED)` (the encoder's and the notebook's `sampler`)
repeats the same noise, while a fresh `Sampling()` (seed None) draws fresh noise. The grader
must test the layers as the notebook built them: the fresh-noise check loses its point, the
other Sampling checks keep theirs. One real grading (~1-2 min).
"""

import json
import pathlib
import subprocess
import sys

import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SOLUTION = REPO_ROOT / "solutions" / "lab3" / "lab3.ipynb"
CORRECT_LINE = "keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)"
BUGGY_LINE = "keras.random.normal(ops.shape(z_mean), seed=self.seed)"
KEPT = ("test_kl_closed_form", "test_kl_sums_over_latent_dims", "test_sampling_statistics",
        "test_sampling_normal_noise", "test_sampling_gradients", "test_model_shapes", "test_train_step",
        "test_own_implementation")
# Checks of the trained model, which this bug may change (the encoder's noise repeats).
DOWNSTREAM = ("test_sample_quality", "test_samples_are_not_copies")

# Generous: ~1-2 min on an idle machine, much more on a shared, loaded one.
NOTEBOOK_TIMEOUT_S = 1800

pytestmark = pytest.mark.slow


def int_seed_notebook():
    book = nbformat.read(SOLUTION, as_version=4)
    changed = [cell for cell in book.cells if CORRECT_LINE in cell.source]
    assert len(changed) == 1, "the solution's Sampling cell moved: update this test"
    changed[0].source = changed[0].source.replace(CORRECT_LINE, BUGGY_LINE)
    return book


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int-seed")
    nbformat.write(int_seed_notebook(), str(folder / "lab3.ipynb"))
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(folder / "lab3.ipynb"), "--lab", "lab3",
         "--out", str(folder / "out"), "--timeout", str(NOTEBOOK_TIMEOUT_S)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=NOTEBOOK_TIMEOUT_S + 300,
    )
    reports = list((folder / "out").glob("*/report.json"))
    assert len(reports) == 1, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(reports[0].read_text())


def test_the_fresh_noise_check_loses_its_point_and_names_the_notebooks_layer(report):
    checks = {check["name"]: check for check in report["checks"]}
    fresh = checks["test_sampling_fresh_noise"]
    assert not fresh["passed"]
    assert "Sampling(seed=1337)" in fresh["message"] and "int seed" in fresh["message"], fresh["message"]
    failed = {name for name, check in checks.items() if not check["passed"]}
    assert failed - set(DOWNSTREAM) == {"test_sampling_fresh_noise"}, {name: checks[name]["message"] for name in failed}
    assert all(checks[name]["passed"] for name in KEPT)


def test_the_notebooks_visible_assert_fails_too(report):
    errors = [error["error"] for error in report["cell_errors"]]
    assert any("fresh noise" in error for error in errors), errors
