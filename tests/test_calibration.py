"""One calibration layer: the format, the loader, the writer, and every lab's stored derivation.

The committed thresholds of every lab and measured profile must follow, by the rule of
the lab's calibration script, from the runs stored beside them; an unmeasured profile
falls back explicitly to a measured one, and the checks that use its thresholds say so.
"""

import copy
import importlib
import json
import pathlib
import re
import sys

import numpy as np
import pytest

from autograder import calibration
from autograder.judge import run_checks
from autograder.registry import LABS, get_lab
from course_lib.profiles import PROFILES

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
LAB_NAMES = sorted(LABS)
# How a check reads a threshold: probe.thresholds()["name"] or thresholds["name"].
THRESHOLD_READ = re.compile(r"thresholds(?:\(\))?\[[\"'](\w+)[\"']\]")


def _measured_profiles(lab):
    return [name for name, entry in calibration.load(lab)["profiles"].items() if entry["measured"]]


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_every_lab_has_one_valid_file_covering_every_profile(lab):
    stored = calibration.load(lab)
    assert stored["lab"] == lab and stored["format"] == calibration.FORMAT
    assert set(stored["profiles"]) == set(PROFILES)
    assert _measured_profiles(lab), f"{lab} has no measured profile"
    for profile in PROFILES:
        thresholds = calibration.thresholds(lab, profile)
        assert thresholds.source_profile in _measured_profiles(lab)
        if not thresholds.measured:
            assert profile in thresholds.caveat() and thresholds.source_profile in thresholds.caveat()
            assert thresholds.why and thresholds.why in thresholds.caveat()


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_every_threshold_a_check_reads_is_calibrated(lab):
    source = get_lab(lab).check_module.read_text()
    read = set(THRESHOLD_READ.findall(source))
    assert read, f"the checks of {lab} read no calibrated threshold"
    for profile in PROFILES:
        missing = read - set(calibration.thresholds(lab, profile))
        assert not missing, (lab, profile, missing)


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_stored_thresholds_follow_from_the_stored_runs(lab):
    # The script's rule, applied to the runs in the file, gives the thresholds in the file.
    script = importlib.import_module(f"calibrate_{lab}")
    for profile in _measured_profiles(lab):
        entry = calibration.load(lab)["profiles"][profile]
        derived = script.quantities(copy.deepcopy(entry["details"]))
        assert derived == entry["quantities"], (lab, profile)
        for name, quantity in derived.items():
            good, poor = quantity["known_good"], quantity["known_poor"]
            assert len(good["values"]) >= 3 and poor["values"], (lab, profile, name)
            if quantity["direction"] == "at_most":
                assert good["worst"] <= quantity["threshold"] < poor["best"]
            else:
                assert poor["best"] < quantity["threshold"] <= good["worst"]


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_each_measured_entry_was_measured_at_the_profiles_settings(lab):
    # A threshold holds for the budget its runs trained at: a profile edited after its
    # calibration (more epochs, another learning rate) needs the calibration run again.
    for profile in _measured_profiles(lab):
        changed = calibration.thresholds(lab, profile).settings_changed
        assert not changed, (f"{lab} {profile}: calibrated at other settings, (calibrated, now) per key: "
                             f"{changed}; run scripts/calibrate_{lab}.py --profile {profile}")


def test_a_check_says_when_the_profile_changed_since_its_calibration(tmp_path, monkeypatch):
    # Where the profile was edited without a new calibration (an instructor's local change),
    # the grade still uses the stored thresholds, and a failing check and the report say so.
    calibrated = calibration.load("lab1")["profiles"]["fast"]["budget"]["epochs"]
    monkeypatch.setitem(PROFILES["fast"]["lab1"], "epochs", calibrated + 7)
    monkeypatch.setitem(PROFILES["fast"]["lab1"], "warmup", 3)
    thresholds = calibration.thresholds("lab1", "fast")
    assert thresholds.measured
    assert thresholds.settings_changed == {"epochs": (calibrated, calibrated + 7), "warmup": ("(not set)", 3)}
    assert f"epochs {calibrated!r} -> {calibrated + 7!r}" in thresholds.caveat()
    assert "scripts/calibrate_lab1.py --profile fast" in thresholds.caveat()
    below = _accuracy_below(thresholds["min_bn_accuracy"])
    verdict = run_checks("lab1", _lab1_probe_dir(tmp_path / "p", below), "fast", only=["test_batch_norm_accuracy"])[0]
    assert not verdict.passed and verdict.message.endswith(thresholds.caveat())
    assert verdict.calibration == thresholds.caveat()
    monkeypatch.undo()
    assert calibration.thresholds("lab1", "fast").caveat() == ""


def test_a_threshold_that_does_not_separate_is_refused():
    with pytest.raises(calibration.CalibrationError, match=r"worst known-good value 5.0.*best known-poor value 4.0"):
        calibration.quantity("score", "at_least", [5.0, 6.0, 7.0], "seeds", {"noise": 4.0}, "noise", "midpoint", 5.5)
    with pytest.raises(calibration.CalibrationError, match="direction 'above'"):
        calibration.quantity("score", "above", [5.0], "seeds", {"noise": 4.0}, "noise", "midpoint", 4.5)
    with pytest.raises(calibration.CalibrationError, match="no known-poor"):
        calibration.quantity("score", "at_most", [5.0], "seeds", {}, "noise", "midpoint", 6.0)


def _tiny_entry(threshold):
    quantity = calibration.quantity("distance", "at_most", [1.0, 1.2, 1.1], "seeds 0-2", {"noise": 3.0},
                                    "noise", "midpoint", threshold)
    return calibration.profile_entry({"max_distance": quantity}, {"epochs": 1}, [0, 1, 2], {"runs": []},
                                     "device=CPU", date="2026-12-02")


def test_the_writer_keeps_a_measured_profile_and_adds_an_explicit_fallback(tmp_path):
    path = tmp_path / "labX.json"
    calibration.write_profile(path, "labX", "scripts/calibrate_labX.py", "test", "fast", _tiny_entry(2.0))
    written = json.loads(path.read_text())
    assert written["profiles"]["full"] == {
        "measured": False, "fallback": "fast",
        "why": "not measured yet; run scripts/calibrate_labX.py --profile full to measure it",
    }
    assert "thresholds" not in written["profiles"]["full"]  # never copied numbers
    calibration.write_profile(path, "labX", "scripts/calibrate_labX.py", "test", "full", _tiny_entry(2.5))
    calibration.write_profile(path, "labX", "scripts/calibrate_labX.py", "test", "fast", _tiny_entry(1.5))
    written = json.loads(path.read_text())
    assert written["profiles"]["full"]["thresholds"] == {"max_distance": 2.5}
    assert written["profiles"]["fast"]["thresholds"] == {"max_distance": 1.5}


@pytest.mark.parametrize("damage, words", [
    (lambda c: c.update(format=1), "format 1, expected 2"),
    (lambda c: c["profiles"]["fast"]["thresholds"].update(max_distance=9.0), "differs from its quantity"),
    (lambda c: c["profiles"]["fast"]["quantities"]["max_distance"]["known_poor"].update(values={}), "no known_poor values"),
    (lambda c: c["profiles"]["fast"].pop("seeds"), "has no 'seeds'"),
    (lambda c: c["profiles"].update(full={"measured": False, "fallback": "full", "why": "x"}), "fallback 'full' is not a measured"),
    (lambda c: c["profiles"]["full"].pop("why"), "does not say why"),
])
def test_malformed_files_are_refused_with_what_is_wrong(damage, words):
    stored = {"format": 2, "lab": "labX", "script": "s", "description": "d",
              "profiles": {"fast": _tiny_entry(2.0), "full": {"measured": False, "fallback": "fast", "why": "no GPU"}}}
    calibration.validate(stored)
    damage(stored)
    with pytest.raises(calibration.CalibrationError, match=re.escape(words)):
        calibration.validate(stored, source="labX.json")


def test_an_unknown_profile_names_the_calibrated_ones():
    with pytest.raises(calibration.CalibrationError, match=r"'huge'.*\['fast', 'full'\]"):
        calibration.thresholds("lab3", "huge")


def _accuracy_below(threshold):
    """An accuracy 5 points under `threshold`, rounded to a whole number of the 1,000 test images."""
    return round(threshold - 0.05, 3)


def _lab1_probe_dir(folder, accuracy_bn):
    """Probe results of lab1 whose model_bn reaches `accuracy_bn` on the exact test images."""
    from course_lib.data import load_cifar10

    _, labels = load_cifar10("test", limit=1000, exact_only=True)
    correct = int(round(accuracy_bn * len(labels)))
    predictions = np.where(np.arange(len(labels)) < correct, labels, (labels + 1) % 10)
    facts = {"bn_facts": {"batch_norm_layers": 6}, "plain_facts": {"batch_norm_layers": 0},
             "same_object": False, "bn_output_shape": [1000, 10], "plain_output_shape": [1000, 10]}
    folder.mkdir()
    (folder / "probe.json").write_text(json.dumps({"seed": 0, "items": {"accuracy": {"ok": True, "facts": facts}}}))
    np.savez(folder / "probe.npz", **{"accuracy/bn_predictions": predictions, "accuracy/plain_predictions": predictions})
    return folder


@pytest.fixture
def lab1_full_unmeasured(tmp_path, monkeypatch):
    """lab1's calibration, in a temporary folder that the code then uses, with its full profile
    turned back into an explicit fallback to fast (so the tests do not depend on whether the
    committed file has measured it). Yields the temporary file's path."""
    stored = copy.deepcopy(calibration.load("lab1"))
    stored["profiles"]["full"] = {"measured": False, "fallback": "fast", "why": "not measured in this test"}
    folder = tmp_path / "calibration"
    folder.mkdir()
    (folder / "lab1.json").write_text(json.dumps(stored))
    monkeypatch.setattr(calibration, "CALIBRATION_DIR", folder)
    calibration.load.cache_clear()
    yield folder / "lab1.json"
    calibration.load.cache_clear()


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("full_measured", [True, False], ids=["as stored", "full unmeasured"])
def test_a_check_says_when_its_profile_was_not_measured(profile, full_measured, tmp_path, request):
    if not full_measured:
        request.getfixturevalue("lab1_full_unmeasured")
    thresholds = calibration.thresholds("lab1", profile)
    if not full_measured and profile == "full":
        assert not thresholds.measured and thresholds.source_profile == "fast"
    below = _accuracy_below(thresholds["min_bn_accuracy"])
    results = {r.name: r for r in run_checks("lab1", _lab1_probe_dir(tmp_path / "p", below), profile,
                                              only=["test_batch_norm_accuracy"])}
    verdict = results["test_batch_norm_accuracy"]
    assert not verdict.passed and f"{below:.1%}" in verdict.message
    if thresholds.measured:
        assert "not measured" not in verdict.message
    else:
        assert verdict.message.endswith(thresholds.caveat()) and "'full' profile's thresholds are not measured yet" in verdict.message
    assert verdict.calibration == thresholds.describe()["note"]
    # The report carries the measured quantity beside the threshold it was held against.
    measured = verdict.measured["min_bn_accuracy"]
    assert measured["holds"] is False and measured["threshold"] == thresholds["min_bn_accuracy"]
    assert measured["value"] == pytest.approx(below, abs=1e-3)


def test_holds_follows_the_calibrated_direction():
    thresholds = calibration.thresholds("lab3", "fast")
    limit = thresholds["max_frechet_distance"]
    assert thresholds.holds("max_frechet_distance", limit) and not thresholds.holds("max_frechet_distance", limit + 1)
    score = thresholds["min_classifier_score"]
    assert thresholds.holds("min_classifier_score", score) and not thresholds.holds("min_classifier_score", score - 0.1)
    assert set(thresholds.compared) == {"max_frechet_distance", "min_classifier_score"}
    with pytest.raises(calibration.CalibrationError, match=r"'max_fid'.*known: \['max_copy_fraction'"):
        thresholds.holds("max_fid", 1.0)


def test_the_seed_runner_writes_the_thresholds_its_runs_imply(tmp_path, monkeypatch):
    # lab1's command line, fed the stored runs (--combine, no training), rewrites the same entry.
    import calibrate_lab1

    stored = calibration.load("lab1")["profiles"]["fast"]
    runs_file = tmp_path / "runs.json"
    # The known-poor runs travel in the combined files too (scripts/calibrate_lab1.py --poor).
    runs_file.write_text(json.dumps({"runs": stored["details"]["runs"], "poor_runs": stored["details"]["poor_runs"]}))
    monkeypatch.setattr(calibration, "CALIBRATION_DIR", tmp_path / "calibration")
    calibration.load.cache_clear()
    try:
        assert calibrate_lab1.main(["--out", str(tmp_path / "summary.json"), "--combine", str(runs_file),
                                    "--write-calibration"]) == 0
        written = calibration.load("lab1")["profiles"]
    finally:
        calibration.load.cache_clear()
    assert written["fast"]["thresholds"] == stored["thresholds"]
    assert written["fast"]["quantities"] == stored["quantities"]
    assert written["full"]["measured"] is False and written["full"]["fallback"] == "fast"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [run["seed"] for run in summary["runs"]] == stored["seeds"]


@pytest.mark.parametrize("lab", ["lab3", "lab4"])
def test_a_known_poor_variant_is_one_cell_inserted_after_its_marker(lab):
    # Known-poor runs are the solution with one cell added (a planted bug, a smaller budget),
    # graded through the same kernel and probe path as the reference runs.
    script = importlib.import_module(f"calibrate_{lab}")
    import calibration_common

    plain = calibration_common.seeded_notebook(lab, 5)
    for name, variant in script.VARIANTS.items():
        notebook = calibration_common.seeded_notebook(lab, 5, variant)
        assert len(notebook.cells) == len(plain.cells) + 1, name
        index = [cell.source for cell in notebook.cells].index(variant["source"])
        assert variant["after"] in notebook.cells[index - 1].source, name
        assert "SEED = 5" in "".join(cell.source for cell in notebook.cells)
    with pytest.raises(RuntimeError, match="no_such_line"):
        calibration_common.seeded_notebook(lab, 0, {"after": "no_such_line", "source": "x = 1"})


def _solution_namespace(lab, upto):
    """Runs the seeded solution's code cells before the first one containing `upto`."""
    import calibration_common

    namespace = {"__name__": "__main__"}
    for cell in calibration_common.seeded_notebook(lab, 0).cells:
        if cell.cell_type != "code":
            continue
        if upto in cell.source:
            exec(cell.source, namespace)
            return namespace
        if "load_cifar10(" in cell.source or "plots." in cell.source:
            continue  # data and figures: not needed for the formulas
        exec(cell.source, namespace)
    raise AssertionError(f"no cell of {lab} contains {upto!r}")


def test_lab4_planted_losses_compute_the_bug_they_name():
    # Each planted reconstruction loss, run in the notebook's namespace after the solution's,
    # differs from it exactly as its name says (so the known-poor runs are the bugs they claim).
    import calibrate_lab4

    namespace = _solution_namespace("lab4", calibrate_lab4.LOSS_CELL)
    solution = namespace["reconstruction_loss"]
    ops = namespace["ops"]
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 3)).astype("float32")
    reconstructions = np.clip(images + 0.1 * rng.standard_normal(images.shape), 0, 1).astype("float32")
    expected = ops.convert_to_numpy(solution(images, reconstructions))

    def planted(name):
        scope = dict(namespace)
        exec(calibrate_lab4.VARIANTS[name]["source"], scope)
        return ops.convert_to_numpy(scope["reconstruction_loss"](images, reconstructions))

    assert planted("loss_mean_over_pixels") == pytest.approx(expected / (32 * 32 * 3), rel=1e-5)
    unit_variance = np.sum(0.5 * (images - reconstructions) ** 2 + 0.5 * np.log(2 * np.pi), axis=(1, 2, 3))
    assert planted("variance_fixed_at_one") == pytest.approx(unit_variance, rel=1e-5)
    assert not np.allclose(unit_variance, expected)


def test_kept_runs_are_measured_later_as_if_just_run(tmp_path, monkeypatch):
    # --keep-probes --defer-measure trains and keeps; --from-probes measures the kept runs
    # (for example after the evaluator was retrained) into the same --out file as a run would.
    import calibration_common

    def fake_run(lab, seed, data_dir, profile, variant=None, kernel_threads=None):
        folder = tmp_path / f"probe-{seed}-{bool(variant)}"
        folder.mkdir()
        (folder / "probe.json").write_text(json.dumps({"seed": 0, "items": {}}))
        np.savez(folder / "probe.npz", **{"x/value": np.array(seed + (10 if variant else 0))})
        from autograder.checking import ProbeResults
        return ProbeResults(folder, profile=profile, lab=lab), 1.5

    monkeypatch.setattr(calibration_common, "run_seed", fake_run)

    def measure(probes):
        return {"value": float(probes.arrays["x/value"])}

    def main(*argv):
        return calibration_common.seeds_main("lab3", list(argv), "test", measure, None, lambda runs: {},
                                             variants={"short": {"what": "w", "after": "a", "source": "s"}})

    kept = tmp_path / "kept dir"
    assert main("--seeds", "0", "2", "--poor", "short", "--poor-seeds", "1", "--keep-probes", str(kept),
                "--defer-measure") == 0
    assert sorted(path.name for path in kept.iterdir()) == ["reference-seed0", "reference-seed2", "short-seed1"]
    out = tmp_path / "out.json"
    assert main("--from-probes", str(kept), "--out", str(out)) == 0
    written = json.loads(out.read_text())
    assert [(run["seed"], run["value"]) for run in written["runs"]] == [(0, 0.0), (2, 2.0)]
    assert [(run["variant"], run["seed"], run["value"]) for run in written["poor_runs"]] == [("short", 1, 11.0)]
    with pytest.raises(SystemExit):
        main("--seeds", "0", "--defer-measure")  # nothing would be kept
    with pytest.raises(RuntimeError, match="'fast' run; expected --profile full"):
        main("--from-probes", str(kept), "--out", str(out), "--profile", "full")
    with pytest.raises(RuntimeError, match="No kept runs"):
        main("--from-probes", str(tmp_path), "--out", str(out))


def test_a_trained_poor_model_that_passes_refuses_the_threshold():
    import calibrate_lab3

    details = copy.deepcopy(calibration.load("lab3")["profiles"]["fast"]["details"])
    best_good = min(details["runs"], key=lambda run: run["frechet_distance"])
    details["poor_runs"].append(dict(best_good, variant="tenth_of_fast_budget"))  # a "poor" run as good as the best reference
    with pytest.raises(calibration.CalibrationError, match="does not separate"):
        calibrate_lab3.quantities(details)


def test_a_replacing_variant_changes_one_line_of_the_solution():
    import calibrate_lab1
    import calibration_common

    variant = calibrate_lab1.POOR_VARIANTS["unused_batch_norm"]
    old, new = variant["replace"]
    notebook = calibration_common.seeded_notebook("lab1", 2, variant)
    sources = "\n".join(cell.source for cell in notebook.cells)
    assert old not in sources and new in sources
    with pytest.raises(RuntimeError, match="0 code cells.*'no such line'"):
        calibration_common.seeded_notebook("lab1", 2, {"replace": ("no such line", "x")})


@pytest.mark.parametrize("profile", PROFILES)
def test_lab1_tenth_of_the_steps_keeps_a_tenth_of_what_each_profile_loads(profile, monkeypatch):
    # The variant runs after the loading cell, so it also works where the profile loads every
    # image (full: train_examples None, which a "limit //= 10" could not divide).
    import calibrate_lab1
    import calibration_common

    monkeypatch.setenv("COURSE_PROFILE", profile)
    variant = calibrate_lab1.POOR_VARIANTS["tenth_of_the_steps"]
    cells = [cell.source for cell in calibration_common.seeded_notebook("lab1", 0, variant).cells
             if cell.cell_type == "code"]
    planted = cells.index(variant["source"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    for source in cells[:planted]:  # Setup, the seed, the loading cell
        exec(source, namespace)
    loaded = len(namespace["x_train"])
    assert loaded == (namespace["SETTINGS"]["train_examples"] or 50_000)
    exec(cells[planted], namespace)
    assert len(namespace["x_train"]) == len(namespace["y_train"]) == loaded // 10


def _runs_file(path, profile, runs, poor_runs=()):
    path.write_text(json.dumps({"profile": profile, "runs": list(runs), "poor_runs": list(poor_runs)}))
    return str(path)


def test_too_few_runs_are_kept_and_the_profile_finished_later(lab1_full_unmeasured, tmp_path):
    # Two seeds (a GPU-less session's worth) are kept in the file; the profile stays a
    # fallback whose checks say how far it got; a third seed, combined with the file, measures it.
    import calibrate_lab1

    stored = copy.deepcopy(calibration.load("lab1")["profiles"]["fast"]["details"])
    runs = sorted(stored["runs"], key=lambda run: run["seed"])[:3]
    first = _runs_file(tmp_path / "first two.json", "full", runs[:2], stored["poor_runs"])
    assert calibrate_lab1.main(["--profile", "full", "--out", str(tmp_path / "a.json"), "--combine", first,
                                "--write-calibration"]) == 0
    full = calibration.load("lab1")["profiles"]["full"]
    seeds = [run["seed"] for run in runs]
    assert full["measured"] is False and full["fallback"] == "fast"
    assert full["measured_so_far"]["seeds"] == seeds[:2] and full["measured_so_far"]["details"]["poor_runs"]
    thresholds = calibration.thresholds("lab1", "full")
    assert not thresholds.measured and f"2 of the {calibration.MIN_KNOWN_GOOD_RUNS} reference runs" in thresholds.caveat()
    assert thresholds == calibration.thresholds("lab1", "fast")

    third = _runs_file(tmp_path / "third.json", "full", runs[2:])
    assert calibrate_lab1.main(["--profile", "full", "--out", str(tmp_path / "b.json"),
                                "--combine", str(lab1_full_unmeasured), third, "--write-calibration"]) == 0
    full = calibration.load("lab1")["profiles"]["full"]
    assert full["measured"] is True and full["seeds"] == seeds and "measured_so_far" not in full
    assert full["quantities"] == calibrate_lab1.quantities(copy.deepcopy(full["details"]))
    assert calibration.thresholds("lab1", "full").measured
    # A measured profile is never turned back into a partial one by fewer runs.
    with pytest.raises(calibration.CalibrationError, match=r"'full' profile is measured \(3 seeds\); refusing"):
        calibrate_lab1.main(["--profile", "full", "--out", str(tmp_path / "c.json"), "--combine", first,
                             "--write-calibration"])


def test_combining_refuses_a_run_twice_and_runs_of_another_profile(tmp_path):
    import calibration_common

    runs = [{"seed": 0, "bn_accuracy": 0.5}, {"seed": 1, "bn_accuracy": 0.6}]
    first = _runs_file(tmp_path / "a.json", "full", runs)
    again = _runs_file(tmp_path / "b.json", "full", runs[1:])
    with pytest.raises(RuntimeError, match=r"same run .*\['reference seed 1'\]"):
        calibration_common.combine([first, again], "full")
    with pytest.raises(RuntimeError, match=r"a.json holds 'full' runs; expected --profile fast"):
        calibration_common.combine([first], "fast")
    poor = _runs_file(tmp_path / "c.json", "full", [], [{"variant": "tenth", "seed": 1}])
    assert calibration_common.combine([first, poor], "full", "poor_runs") == [{"variant": "tenth", "seed": 1}]
    with pytest.raises(calibration.CalibrationError, match="has no profile 'huge'"):
        calibration_common.combine([str(calibration.calibration_path("lab1"))], "huge")


def test_a_threshold_needs_three_known_good_runs():
    with pytest.raises(calibration.CalibrationError, match=r"2 known-good value\(s\) \[5.0, 6.0\]; a threshold needs at least 3"):
        calibration.quantity("score", "at_least", [5.0, 6.0], "seeds", {"noise": 4.0}, "noise", "midpoint", 4.5)


@pytest.mark.parametrize("damage, words", [
    (lambda partial: partial.pop("budget"), r"'measured_so_far' has no \['budget'\]"),
    (lambda partial: partial.update(seeds=[0, 5]), r"lists seeds \[0, 5\] but its runs have seeds \[0, 1\]"),
    (lambda partial: (partial["details"]["runs"].append({"seed": 2}), partial.update(seeds=[0, 1, 2])),
     "3 reference runs, enough for thresholds"),
])
def test_a_malformed_partial_entry_is_refused(damage, words):
    partial = calibration.partial_entry({"epochs": 1}, [0, 1], {"runs": [{"seed": 0}, {"seed": 1}]}, "device=CPU")
    damage(partial)
    content = {"format": calibration.FORMAT, "profiles": {
        "fast": _tiny_entry(2.0), "full": {"measured": False, "fallback": "fast", "why": "x", "measured_so_far": partial}}}
    with pytest.raises(calibration.CalibrationError, match=words):
        calibration.validate(content)


def test_lab4_refuses_thresholds_that_a_known_poor_sample_model_passes(monkeypatch):
    # Every known-poor sample model must fail one sample threshold. Uniform noise is a known-poor
    # model of the distance; excluded from it (as it was while the reference's samples lay as close
    # as noise), the classifier score must reject it, or no threshold is written.
    import calibrate_lab4

    details = copy.deepcopy(calibration.load("lab4")["profiles"]["fast"]["details"])
    derived = calibrate_lab4.quantities(copy.deepcopy(details))
    noise = details["bad_generators"]["uniform_noise"]
    assert "uniform_noise" in derived["max_frechet_distance"]["known_poor"]["values"]
    assert noise["frechet_distance"] > derived["max_frechet_distance"]["threshold"]

    # A variant known-poor for the reconstructions only leaves the sample thresholds alone.
    monkeypatch.setitem(calibrate_lab4.VARIANTS["variance_fixed_at_one"], "poor_for", ("max_reconstruction_mse",))
    restricted = calibrate_lab4.quantities(copy.deepcopy(details))
    assert all("variance_fixed_at_one" not in name for name in restricted["max_frechet_distance"]["known_poor"]["values"])
    assert any("variance_fixed_at_one" in name for name in restricted["max_reconstruction_mse"]["known_poor"]["values"])
    assert restricted["min_classifier_score"]["threshold"] < derived["min_classifier_score"]["threshold"]

    # Noise as close as the worst reference run, excluded from the distance: the score decides.
    noise["frechet_distance"] = max(run["frechet_distance"] for run in details["runs"])
    monkeypatch.setitem(calibrate_lab4.NOT_POOR_FOR, "max_frechet_distance", {"uniform_noise": "as close as the reference"})
    excluded = calibrate_lab4.quantities(copy.deepcopy(details))
    assert "uniform_noise" not in excluded["max_frechet_distance"]["known_poor"]["values"]
    assert "not uniform_noise: as close as the reference" in excluded["max_frechet_distance"]["known_poor"]["what"]
    noise["classifier_score"] = max(run["classifier_score"] for run in details["runs"]) + 0.1
    with pytest.raises(calibration.CalibrationError, match="does not separate"):
        calibrate_lab4.quantities(copy.deepcopy(details))
    # Excluded from both sample quantities, noise would pass the check: refused as well.
    monkeypatch.setitem(calibrate_lab4.NOT_POOR_FOR, "min_classifier_score", {"uniform_noise": "test"})
    with pytest.raises(calibration.CalibrationError, match=r"\['uniform_noise'\] pass both sample thresholds"):
        calibrate_lab4.quantities(details)


def test_an_entry_written_from_combined_runs_describes_the_runs_not_the_combiner(lab1_full_unmeasured, tmp_path):
    # Runs measured elsewhere (another day, machine, thread count) and combined here later:
    # the entry says where and when they ran; runs without a record fall back to this process.
    import calibrate_lab1

    stored = copy.deepcopy(calibration.load("lab1")["profiles"]["fast"]["details"])
    runs = sorted(stored["runs"], key=lambda run: run["seed"])[:3]
    elsewhere = {"measured_on": "device=cuda (NVIDIA H200) | threads=4", "date": "2026-01-02", "load_average_1min": 0.5}
    runs = [{**run, **elsewhere, **({"load_average_1min": 6.25} if index == 1 else {})} for index, run in enumerate(runs)]
    runs[2] = {**runs[2], "measured_on": "device=CPU | threads=1", "date": "2026-01-05"}
    assert calibrate_lab1.main(["--profile", "full", "--out", str(tmp_path / "a.json"), "--combine",
                                _runs_file(tmp_path / "elsewhere.json", "full", runs, stored["poor_runs"]),
                                "--write-calibration"]) == 0
    full = calibration.load("lab1")["profiles"]["full"]
    assert full["measured_on"] == "device=cuda (NVIDIA H200) | threads=4; device=CPU | threads=1"
    assert full["date"] == "2026-01-05" and full["load_average_1min"] == 6.25
    assert calibration.thresholds("lab1", "full").measured_on == full["measured_on"]


def test_a_run_measured_now_records_the_kernels_thread_count():
    import calibration_common

    origin = calibration_common.run_origin(kernel_threads=3)
    assert origin["measured_on"].endswith("threads=3") and set(origin) == set(calibration_common.RUN_ORIGIN_KEYS)
    runs = [{"seed": 0}, {"seed": 1, **origin}]
    measured_on, date, _ = calibration_common.entry_origin(runs)
    here = calibration_common.run_origin()["measured_on"]  # the run without a record
    assert measured_on == "; ".join(dict.fromkeys([here, origin["measured_on"]]))
    assert date == origin["date"]


def test_retiring_a_profile_drops_its_thresholds_and_its_checks_say_what_changed(tmp_path, monkeypatch):
    # After the lab itself changes (another loss), a profile's stored runs describe another
    # notebook: `--retire` turns it into a fallback that says so, without training anything.
    import calibrate_lab4

    stored = calibration.load("lab4")
    folder = tmp_path / "calibration"
    folder.mkdir()
    both_measured = copy.deepcopy(stored)
    both_measured["profiles"]["full"] = copy.deepcopy(stored["profiles"]["fast"])
    (folder / "lab4.json").write_text(json.dumps(both_measured))
    monkeypatch.setattr(calibration, "CALIBRATION_DIR", folder)
    calibration.load.cache_clear()
    try:
        what = "a feature term joined the training loss"
        assert calibrate_lab4.main(["--profile", "full", "--retire", what]) == 0
        written = json.loads((folder / "lab4.json").read_text())["profiles"]
        full = calibration.thresholds("lab4", "full")
        assert written["fast"] == both_measured["profiles"]["fast"]
        assert set(written["full"]) == {"measured", "fallback", "why"} and written["full"]["fallback"] == "fast"
        assert not full.measured and full == calibration.thresholds("lab4", "fast")
        assert what in full.caveat() and "--profile full --seeds" in full.caveat()
        # Nothing to fall back to, or nothing said: refused, and the file is unchanged.
        with pytest.raises(calibration.CalibrationError, match="no other measured profile"):
            calibrate_lab4.main(["--profile", "fast", "--retire", what])
        with pytest.raises(calibration.CalibrationError, match="Say what changed"):
            calibrate_lab4.main(["--profile", "fast", "--retire", "  "])
        assert json.loads((folder / "lab4.json").read_text())["profiles"] == written
    finally:
        calibration.load.cache_clear()
