"""Backend selection, device report, seeding and run profiles."""

import os
import subprocess
import sys

import numpy as np
import pytest

import course_lib
from course_lib import profiles


def _run_python(code, **environment):
    env = dict(os.environ, **environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_importing_course_lib_selects_torch_even_when_keras_json_says_tensorflow(tmp_path):
    keras_home = tmp_path / ".keras"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text('{"backend": "tensorflow"}')
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment["KERAS_HOME"] = str(keras_home)
    result = subprocess.run(
        [sys.executable, "-c", "import course_lib, keras; print(keras.backend.backend())"],
        capture_output=True, text=True, env=environment, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "torch"


def test_conflicting_backend_gets_a_clear_message():
    result = _run_python("import course_lib", KERAS_BACKEND="jax")
    assert result.returncode != 0
    assert "KERAS_BACKEND='jax'" in result.stderr
    assert "torch" in result.stderr


def test_keras_imported_first_with_another_backend_is_reported(monkeypatch):
    import types

    from course_lib.backend import ensure_torch_backend

    fake_keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    with pytest.raises(RuntimeError, match="'tensorflow' backend"):
        ensure_torch_backend()


def test_device_info_names_device_and_versions():
    import keras
    import torch

    info = course_lib.device_info()
    assert info["backend"] == "torch"
    assert info["keras"] == keras.__version__
    assert info["torch"] == torch.__version__
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    assert info["device"] == expected
    assert expected in course_lib.describe_device()


def test_set_seed_repeats_numpy_torch_and_keras():
    import keras
    import torch

    def draw():
        course_lib.set_seed(123)
        return (
            np.random.rand(3),
            torch.rand(3).numpy(),
            keras.ops.convert_to_numpy(keras.random.normal((3,))),
            keras.layers.Dense(2).build((None, 4)) or None,
        )

    first, second = draw(), draw()
    for a, b in zip(first[:3], second[:3]):
        np.testing.assert_array_equal(a, b)
    course_lib.set_seed(124)
    assert not np.array_equal(np.random.rand(3), first[0])


def test_set_seed_does_not_import_tensorflow():
    # TensorFlow is installed (to prepare tensorflow-datasets) but the course never runs
    # it; importing it would cost every kernel seconds and about a gigabyte.
    code = (
        "import sys, course_lib, keras; course_lib.set_seed(5); "
        "a = keras.ops.convert_to_numpy(keras.random.normal((2,))); "
        "course_lib.set_seed(5); "
        "b = keras.ops.convert_to_numpy(keras.random.normal((2,))); "
        "print((a == b).all(), 'tensorflow' in sys.modules)"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "False"]


@pytest.mark.parametrize("bad_seed", [-1, 1.5, "3", True])
def test_set_seed_rejects_bad_seeds(bad_seed):
    with pytest.raises(ValueError, match="Received: seed="):
        course_lib.set_seed(bad_seed)


def test_profiles_have_the_same_sections_and_keys():
    fast, full = profiles.PROFILES["fast"], profiles.PROFILES["full"]
    assert fast.keys() == full.keys()
    for section in fast:
        assert fast[section].keys() == full[section].keys(), section


def test_profile_switch_and_errors(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert course_lib.active_profile() == "full"
    assert course_lib.settings("lab3") == profiles.PROFILES["full"]["lab3"]
    monkeypatch.setenv("COURSE_PROFILE", "turbo")
    with pytest.raises(ValueError, match="Received: profile='turbo'"):
        course_lib.active_profile()
    with pytest.raises(ValueError, match="Received: section='lab9'"):
        course_lib.settings("lab9", "fast")


def test_settings_are_copies():
    numbers = course_lib.settings("lab3", "fast")
    numbers["epochs"] = -1
    assert course_lib.settings("lab3", "fast")["epochs"] != -1
