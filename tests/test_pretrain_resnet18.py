"""scripts/pretrain_resnet18_cifar10.py: the offline CIFAR-10 pretraining of lab 2's ResNet18.

The full run takes about 40 minutes of one CPU thread (its numbers are in the script's
docstring); these tests run it on a few hundred images, from another working directory, and
check that what it writes is a weights file the Keras ResNet18 loads, with a record that
describes it, and that bad arguments are refused with a message.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import course_lib  # noqa: F401  (torch backend before keras)
import numpy as np
import pytest

from course_lib.resnet import CIFAR10_WEIGHTS, build_mnist_resnet18, build_resnet18

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY_ROOT / "scripts" / "pretrain_resnet18_cifar10.py"
IMAGE_SIZE = 32
SMOKE_IMAGES = 256
TIMEOUT_S = 600


def _run(arguments, cwd, timeout=TIMEOUT_S):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_smoke_run_writes_loadable_weights_and_their_record(tmp_path):
    output = pathlib.Path("out dir") / "tiny.npz"  # relative, with a space
    completed = _run(["--epochs", "1", "--train-limit", str(SMOKE_IMAGES), "--output", str(output),
                      "--checkpoint", str(tmp_path / "ck.pt")], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = tmp_path / output
    record = json.loads(written.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert record["bytes"] == written.stat().st_size
    assert record["data"] == f"CIFAR-10 train, {SMOKE_IMAGES} images"
    assert len(record["history"]) == 1 and 0.0 <= record["accuracy_exact_test"] <= 1.0
    with np.load(written) as arrays:
        dtypes = {key: arrays[key].dtype for key in arrays.files}
    # float16 kernels (half the size); BN statistics stay float32 (a variance can overflow float16).
    assert dtypes["layer1.0.conv1.weight"] == np.float16
    assert dtypes["layer4.1.bn2.running_var"] == np.float32
    assert not any(key.endswith("num_batches_tracked") for key in dtypes)
    model = build_resnet18((IMAGE_SIZE, IMAGE_SIZE, 3), include_top=False, pooling="avg",
                           weights=str(written), verbose=False)
    kernel = model.get_layer("conv1").kernel.numpy()
    with np.load(written) as arrays:
        expected = np.transpose(arrays["conv1.weight"].astype(np.float32), (2, 3, 1, 0))
    np.testing.assert_array_equal(kernel, expected)

    # Lab 2's file, beside it: the stages the lab keeps, loadable the way the lab builds its model.
    lab_file = written.parent / CIFAR10_WEIGHTS.name
    _check_lab_file(lab_file, written, record)
    # The same file again from the run's output, without training (into another relative path).
    again = pathlib.Path("exported") / "lab weights.npz"
    completed = _run(["--export-from", str(output), "--lab-output", str(again)], cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    _check_lab_file(tmp_path / again, written, record)
    with np.load(lab_file) as first, np.load(tmp_path / again) as second:
        assert first.files == second.files
        for key in first.files:
            np.testing.assert_array_equal(first[key], second[key])


def _check_lab_file(lab_file, source, source_record):
    lab_record = json.loads(lab_file.with_suffix(".json").read_text())
    stages = course_lib.settings("lab2")["backbone_stages"]
    assert lab_record["stages"] == stages
    assert lab_record["source"] == {"sha256": source_record["sha256"], "bytes": source_record["bytes"]}
    assert lab_record["sha256"] == hashlib.sha256(lab_file.read_bytes()).hexdigest()
    with np.load(lab_file) as arrays:
        keys = set(arrays.files)
    assert not any(key.startswith((f"layer{stages + 1}.", "fc.")) for key in keys)
    assert lab_file.stat().st_size < source.stat().st_size
    build_mnist_resnet18(IMAGE_SIZE, weights=str(lab_file), stages=stages, verbose=False)


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0"], "--epochs must be >= 1. Received: 0"),
    (["--threads", "-1"], "--threads must be >= 1. Received: -1"),
    (["--output", "weights.h5"], "--output must end in .npz. Received: weights.h5"),
    (["--lab-output", "lab.h5"], "--lab-output must end in .npz. Received: lab.h5"),
    (["--export-from", "missing.npz"], "--export-from needs an .npz and its .json record beside it. Received: missing.npz"),
])
def test_bad_arguments_are_refused_with_what_was_received(tmp_path, arguments, message):
    completed = _run(arguments, cwd=tmp_path, timeout=120)
    assert completed.returncode == 2
    assert message in completed.stderr
