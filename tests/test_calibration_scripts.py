"""The calibration scripts' shared writer, and lab5's thresholds re-derived from its stored runs."""

import json
import pathlib
import shutil
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import calibration_common  # noqa: E402  (scripts/)

HEADER = {"lab": "labX", "description": "test", "script": "scripts/calibrate_labX.py"}


def test_writer_mirrors_into_an_unmeasured_profile_and_keeps_a_measured_one(tmp_path):
    path = tmp_path / "calibration" / "labX.json"
    calibration_common.write_profile_calibration(path, HEADER, "fast", {"limit": 1.0}, {"runs": [1]}, "mirrored")
    first = json.loads(path.read_text())
    assert first["lab"] == "labX"
    assert first["thresholds"]["fast"] == {"limit": 1.0, "measured": True}
    assert first["thresholds"]["full"] == {"limit": 1.0, "measured": False, "note": "mirrored"}
    assert "full" not in first["measurements"]

    calibration_common.write_profile_calibration(path, HEADER, "full", {"limit": 2.0}, {"runs": [2]}, "mirrored")
    calibration_common.write_profile_calibration(path, HEADER, "fast", {"limit": 3.0}, {"runs": [3]}, "mirrored")
    last = json.loads(path.read_text())
    # Measuring fast again leaves the measured full entry alone.
    assert last["thresholds"] == {"fast": {"limit": 3.0, "measured": True}, "full": {"limit": 2.0, "measured": True}}
    assert last["measurements"] == {"full": {"runs": [2]}, "fast": {"runs": [3]}}


@pytest.mark.parametrize("profile", ["fast", "full"])
def test_lab5_thresholds_follow_from_the_stored_runs(profile, tmp_path):
    import calibrate_lab5  # noqa: E402  (imports course_lib and the grader)

    committed = calibrate_lab5.CALIBRATION_FILE
    copy = tmp_path / "lab5.json"
    shutil.copy(committed, copy)
    rederived = calibrate_lab5.rederive(copy, profile)
    stored = json.loads(committed.read_text())["thresholds"][profile]
    assert stored.pop("measured") is True
    assert rederived == stored
    assert json.loads(copy.read_text()) == json.loads(committed.read_text())


def test_lab5_rederive_refuses_runs_that_overlap_the_known_bad_ones(tmp_path):
    import calibrate_lab5  # noqa: E402

    calibration = json.loads(calibrate_lab5.CALIBRATION_FILE.read_text())
    runs = calibration["measurements"]["fast"]["reference_runs"]
    # One reference run whose MIG fell with beta, as the earlier, shorter budget gave.
    next(iter(runs.values()))["trends"]["mig_difference"] = -0.04
    path = tmp_path / "lab5.json"
    path.write_text(json.dumps(calibration))
    with pytest.raises(RuntimeError, match="overlap"):
        calibrate_lab5.rederive(path, "fast")
