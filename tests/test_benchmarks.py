"""Tests of benchmarks/: fair twins (quick), grading-cost tables (quick), timing (benchmark)."""

import json
import math
import os
import pathlib
import sys

import numpy as np
import pytest
import torch

# benchmarks/ is not an installed package: make it importable under plain `pytest` too.
REPO_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks import grading_cost, keras_models, step_time, torch_models  # noqa: E402

CASE_NAMES = list(step_time.CASES)


@pytest.fixture(scope="module")
def built_pairs():
    """Every case's Keras model and torch twin, built once."""
    torch.set_num_threads(1)
    pairs = {}
    for name, case in step_time.CASES.items():
        twin = case.build_torch()
        if case.freeze_batch_norm:
            twin.freeze_batch_norm()
        pairs[name] = (case.build_keras(False), twin)
    return pairs


@pytest.mark.parametrize("name", CASE_NAMES)
def test_twins_have_the_same_trainable_parameter_count(built_pairs, name):
    keras_model, torch_model = built_pairs[name]
    assert keras_models.trainable_count(keras_model) == torch_models.trainable_parameter_count(
        torch_model
    )


@pytest.mark.parametrize("name", CASE_NAMES)
def test_twins_have_the_same_batch_norm_statistics(built_pairs, name):
    keras_model, torch_model = built_pairs[name]
    assert keras_models.batch_norm_statistic_count(
        keras_model
    ) == torch_models.batch_norm_statistic_count(torch_model)


def test_lab2_twin_freezes_batch_norm_like_the_keras_fine_tuning(built_pairs):
    keras_model, torch_model = built_pairs["lab2_resnet18"]
    frozen = [module for module in torch_model.batch_norm_modules() if not module.training]
    assert len(frozen) == len(torch_model.batch_norm_modules()) > 0
    keras_frozen = [
        weight for weight in keras_model.non_trainable_weights if "gamma" in weight.path
    ]
    assert len(keras_frozen) == len(frozen)


@pytest.mark.parametrize("name", ["lab1_cnn", "lab3_dense_vae", "lab4_conv_vae"])
def test_torch_twin_step_runs_and_reports_finite_totals(name):
    case = step_time.CASES[name]
    images, labels = step_time.make_data(case, 2 * case.batch_size)
    runner = step_time.TorchRunner(case, images, labels)
    before = [parameter.detach().clone() for parameter in runner.model.parameters()]
    totals = runner.run()
    assert math.isfinite(totals["loss"]) and totals["loss"] > 0
    changed = [
        not torch.equal(old, new.detach()) for old, new in zip(before, runner.model.parameters())
    ]
    assert all(changed)


def test_make_data_shapes_and_ranges():
    case = step_time.CASES["lab4_conv_vae"]
    images, labels = step_time.make_data(case, 10)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (10,) and labels.dtype == np.int64


def test_keras_runner_rejects_an_unknown_variant():
    case = step_time.CASES["lab3_dense_vae"]
    images, labels = step_time.make_data(case, case.batch_size)
    with pytest.raises(ValueError, match="how='compiled'"):
        step_time.KerasRunner(case, "compiled", images, labels)


def _write_report(folder, lab, seconds, memory):
    folder.mkdir(parents=True)
    report = {
        "lab": lab,
        "submission": lab,
        "status": "graded",
        "score": 5.0,
        "max_score": 10.0,
        "profile": "fast",
        "seconds": seconds,
        "notebook_seconds": seconds - 10.0,
        "peak_memory_mb": memory,
        "checks": [],
    }
    (folder / grading_cost.REPORT_NAME).write_text(json.dumps(report))


def test_collect_reports_finds_nested_reports_sorted_by_lab(tmp_path):
    _write_report(tmp_path / "lab3", "lab3", 120.5, 900.0)
    _write_report(tmp_path / "run" / "lab1", "lab1", 300.25, 1200.5)
    rows = grading_cost.collect_reports(tmp_path)
    assert [row["lab"] for row in rows] == ["lab1", "lab3"]
    assert rows[0]["seconds"] == 300.25 and rows[0]["peak_memory_mb"] == 1200.5
    assert rows[1]["notebook_seconds"] == pytest.approx(110.5)
    table = grading_cost.format_grading_table(rows)
    assert "| lab1 | lab1 | graded | 5.0/10.0 | 300.2 | 290.2 | 1200.5 | fast |" in table
    assert len(table.splitlines()) == 2 + len(rows)


def test_read_report_tolerates_missing_cost_fields_and_rejects_non_objects(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"lab": "lab2", "status": "error"}))
    row = grading_cost.read_report(path)
    assert row["seconds"] is None and row["lab"] == "lab2"
    assert "| lab2 | - | error | -/- | - | - | - | - |" in grading_cost.format_grading_table([row])
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        grading_cost.read_report(path)


def test_grade_command_grades_the_solution_into_a_lab_folder(tmp_path, monkeypatch):
    command = grading_cost.grade_command("lab2", tmp_path, root="/repo", python="python")
    assert command == [
        "python", "-m", "autograder", "grade",
        "/repo/solutions/lab2/lab2.ipynb", "--out", str(tmp_path / "lab2"),
    ]
    # From another folder: this repository's solution, the reports where the caller said
    # (the grader runs in the repository, so a relative --out would land there).
    monkeypatch.chdir(tmp_path)
    command = grading_cost.grade_command("lab1", "reports", python="python")
    assert command[4] == str(pathlib.Path(REPO_ROOT) / "solutions" / "lab1" / "lab1.ipynb")
    assert command[6] == str(tmp_path / "reports" / "lab1")
    with pytest.raises(FileNotFoundError, match="lab9"):
        grading_cost.grade_solutions(["lab9"], tmp_path, root=tmp_path)


def test_format_table_marks_the_target():
    result = {
        "case": "lab3_dense_vae", "how": "fit", "batch_size": 128, "steps": 40, "rounds": 5,
        "keras_ms": 33.0, "torch_ms": 30.0, "ratio": 1.1, "ratio_low": 1.05, "ratio_high": 1.2,
    }
    slow = dict(result, ratio=1.5)
    lines = step_time.format_table([result, slow], target_ratio=1.10).splitlines()
    assert lines[2].endswith("| met |") and lines[3].endswith("| missed |")


@pytest.mark.benchmark
@pytest.mark.parametrize("name", CASE_NAMES)
def test_step_time_measurement_gives_a_positive_ratio(name):
    torch.set_num_threads(1)
    result = step_time.measure_case(step_time.CASES[name], "fit", rounds=2, steps=4)
    assert len(result["keras_rounds_ms"]) == len(result["torch_rounds_ms"]) == 2
    assert result["keras_ms"] > 0 and result["torch_ms"] > 0
    assert result["ratio_low"] <= result["ratio"] * 1.0001
    assert result["ratio"] <= result["ratio_high"] * 1.0001
    assert result["keras_cpu_ms"] > 0 and result["cpu_ratio"] > 0
    assert result["keras_faults"] >= 0 and result["torch_faults"] >= 0


@pytest.mark.benchmark
def test_train_function_variant_runs_without_fit():
    torch.set_num_threads(1)
    result = step_time.measure_case(
        step_time.CASES["lab3_dense_vae"], "train_function", rounds=2, steps=4
    )
    assert result["how"] == "train_function" and result["keras_ms"] > 0


def test_likelihood_table_has_one_row_per_seed():
    from benchmarks.likelihood import format_likelihood_table

    rows = [
        {"seed": seed, "budget": "12000 images x 4 epochs, batch 128", "train_seconds": 50.0,
         "negative_elbo_nats": 150.0 + seed, "negative_elbo_bits_per_dim": 0.28,
         "nll_nats": 145.0 + seed, "nll_bits_per_dim": 0.27, "importance_samples": 100}
        for seed in (0, 1)
    ]
    lines = format_likelihood_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith("| 0 |") and "145.0 (100)" in lines[2]
    assert "146.0 (100)" in lines[3]


def test_mixed_bfloat16_runs_both_sides_in_bf16_and_restores_the_policy():
    import keras

    torch.set_num_threads(1)
    result = step_time.measure_case(step_time.CASES["lab3_dense_vae"], "fit", rounds=1, steps=2,
                                    precision="mixed_bfloat16")
    assert result["precision"] == "mixed_bfloat16" and result["device"] == step_time.DEVICE.type
    assert result["keras_ms"] > 0 and result["torch_ms"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "| fit mixed_bfloat16 |" in step_time.format_table([result])
    with pytest.raises(ValueError, match="Received: precision='fp8'"):
        step_time.measure_case(step_time.CASES["lab3_dense_vae"], precision="fp8")


def test_second_evaluator_rejects_files_that_hold_no_cifar_samples(tmp_path):
    from benchmarks import second_evaluator

    grey = tmp_path / "grey digits.npy"
    np.save(grey, np.zeros((4, 28, 28, 1), dtype="float32"))
    with pytest.raises(ValueError, match=r"Received: shape=\(4, 28, 28, 1\)"):
        second_evaluator.load_samples(grey)
    bright = tmp_path / "bright.npz"
    np.savez(bright, samples=np.full((4, 32, 32, 3), 255.0, dtype="float32"))
    with pytest.raises(ValueError, match="max=255"):
        second_evaluator.load_samples(bright)
    fine = tmp_path / "fine.npz"
    np.savez(fine, samples=np.full((4, 32, 32, 3), 0.5, dtype="float16"))
    assert second_evaluator.load_samples(fine).dtype == np.float32
    # Through the CLI, before any measurement: exit 2 and what was wrong, not a traceback.
    import subprocess

    for name, expected in (("no such.npy", "No sample file 'no such.npy' (looked in"),
                           ("grey digits.npy", "Received: shape=(4, 28, 28, 1)")):
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--second-evaluator", name], cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": REPO_ROOT}, capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert expected in completed.stderr and "Traceback" not in completed.stderr


def test_gaussian_blur_matches_a_direct_two_dimensional_convolution():
    from benchmarks import second_evaluator

    rng = np.random.default_rng(3)
    images = rng.uniform(size=(2, 9, 11, 3)).astype("float32")
    sigma = 1.3
    # The same blur written directly: one 2-D kernel, reflected borders, one output pixel at a time.
    radius = int(np.ceil(second_evaluator.BLUR_RADIUS_PER_SIGMA * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / sigma**2)
    kernel /= kernel.sum()
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    expected = np.zeros_like(images)
    for row in range(images.shape[1]):
        for column in range(images.shape[2]):
            window = padded[:, row:row + 2 * radius + 1, column:column + 2 * radius + 1]
            expected[:, row, column] = np.einsum("nhwc,hw->nc", window, kernel)
    blurred = second_evaluator.gaussian_blur(images, sigma)
    assert blurred.shape == images.shape and blurred.dtype == np.float32
    np.testing.assert_allclose(blurred, expected, atol=1e-5)
    # A constant image stays constant; a blur lowers the spread of a noisy one.
    np.testing.assert_allclose(second_evaluator.gaussian_blur(np.full((1, 8, 8, 3), 0.25), 2.0), 0.25, atol=1e-6)
    assert blurred.std() < 0.6 * images.std()


@pytest.mark.parametrize("sigma, shape", [(0.0, (1, 8, 8, 3)), (-1.0, (1, 8, 8, 3)), (1.0, (8, 8, 3))])
def test_gaussian_blur_rejects_a_bad_sigma_or_shape(sigma, shape):
    from benchmarks import second_evaluator

    with pytest.raises(ValueError, match=rf"Received: sigma={sigma}, shape=\({shape[0]}, "):
        second_evaluator.gaussian_blur(np.zeros(shape), sigma)


def test_second_evaluator_puts_real_images_near_and_noise_far(tmp_path):
    import subprocess

    from course_lib.data import load_cifar10

    from benchmarks import second_evaluator

    # Real images the reference statistics do not use (after images 10,000-19,999), and blurred ones.
    train, _ = load_cifar10("train", limit=21000)
    real = train[20000:21000]
    blurred = (real + np.roll(real, 1, axis=1) + np.roll(real, 1, axis=2) + np.roll(real, (1, 1), axis=(1, 2))) / 4
    # Through the documented command, from another folder: one relative path (an odd name),
    # one absolute; the results go where the caller's relative names point.
    paths = [pathlib.Path("real images.npy"), tmp_path / "blurred.npy"]
    np.save(tmp_path / paths[0], real)
    np.save(paths[1], blurred.astype("float16"))
    completed = subprocess.run(
        ["bash", str(pathlib.Path(REPO_ROOT) / "scripts" / "benchmark.sh"), "--no-step-time", "--second-evaluator",
         *map(str, paths), "--json", "second.json"],
        cwd=tmp_path, env={**os.environ, "BENCHMARK_OUT": "bench out"},
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = tmp_path / "second.json"
    assert (tmp_path / "bench out" / "benchmarks.md").is_file()
    distances = json.loads(out.read_text())["second_evaluator"]
    noise = distances["uniform noise"]
    assert distances["real (held-out test)"] < 0.1 * noise
    assert distances[str(paths[0])] < 0.1 * noise
    assert distances[str(paths[0])] < distances[str(paths[1])] < noise
    assert distances["mean image"] > 0.5 * noise
    # The blurred baselines lie between the real images and noise, farther with more blur.
    blurred_rows = [distances[second_evaluator.blurred_name(sigma)] for sigma in second_evaluator.BLUR_SIGMAS]
    assert distances["real (held-out test)"] < blurred_rows[0] < blurred_rows[-1] < noise
    assert f"| {second_evaluator.blurred_name(second_evaluator.BLUR_SIGMAS[-1])} |" in completed.stdout
    assert f"| {paths[1]} |" in completed.stdout
    assert second_evaluator.REFERENCE_START + second_evaluator.REFERENCE_COUNT <= 20000
