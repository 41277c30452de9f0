"""The labs' calibrated thresholds: one file format, one loader, one writer.

Every lab keeps its thresholds in `autograder/calibration/<lab>.json`::

    {
      "format": 2,
      "lab": "lab3",
      "script": "scripts/calibrate_lab3.py",        # what wrote the file
      "description": "...",
      "profiles": {
        "fast": {                                     # a measured profile
          "measured": true,
          "measured_on": "<device line>", "date": "YYYY-MM-DD", "load_average_1min": 1.0,
          "budget": {...the profile's settings...},
          "seeds": [0, 1, 2],
          "thresholds": {"max_frechet_distance": 334.0, ...},   # what the checks read
          "quantities": {
            "max_frechet_distance": {
              "quantity": "what is measured, and how",
              "direction": "at_most",                  # a good model is at most the threshold
              "known_good": {"what": "...", "values": [...], "mean": .., "std": .., "worst": ..},
              "known_poor": {"what": "...", "values": {"name": value, ...}, "best": ..},
              "rule": "how the threshold follows from both sides",
              "threshold": 334.0
            }
          },
          "details": {...the lab's own raw measurements...}
        },
        "full": {"measured": false, "fallback": "fast", "why": "...",   # an unmeasured profile
                 "measured_so_far": {...}}    # optional: runs measured, too few to set thresholds
      }
    }

A profile that has not been measured names the measured profile whose thresholds it uses
(`fallback`) and says why; the checks that use such thresholds say so in their message and
the report says so in its `calibration` entry. Numbers are never copied between profiles.
A profile with fewer than `MIN_KNOWN_GOOD_RUNS` reference runs stays unmeasured; the runs it
has are kept in its `measured_so_far` entry (machine, date, budget, seeds, details), so that a
later session or machine adds the missing seeds instead of starting again.
"""

import datetime
import functools
import json
import math
import pathlib

import numpy as np

FORMAT = 2
CALIBRATION_DIR = pathlib.Path(__file__).resolve().parent / "calibration"
DIRECTIONS = ("at_least", "at_most")
# A threshold rests on at least this many known-good (reference) runs, each its own seed.
MIN_KNOWN_GOOD_RUNS = 3
PARTIAL_KEYS = ("measured_on", "date", "budget", "seeds", "details")


class CalibrationError(ValueError):
    """A calibration file is missing, malformed, or has no thresholds for a profile."""


def calibration_path(lab_name):
    """The calibration file of `lab_name` (e.g. "lab3")."""
    return CALIBRATION_DIR / f"{lab_name}.json"


@functools.lru_cache(maxsize=None)
def load(lab_name):
    """Reads and validates the calibration file of `lab_name`.

    Returns:
        The file's content as a dict.

    Raises:
        CalibrationError: if the file is missing or does not follow the format.
    """
    path = calibration_path(lab_name)
    if not path.is_file():
        raise CalibrationError(f"No calibration file for {lab_name!r}: expected {path}.")
    calibration = json.loads(path.read_text())
    validate(calibration, source=str(path))
    return calibration


def validate(calibration, source="calibration"):
    """Checks the format of a calibration dict (see the module docstring).

    Raises:
        CalibrationError: naming the first problem found and where it is.
    """
    if calibration.get("format") != FORMAT:
        raise CalibrationError(f"{source}: format {calibration.get('format')!r}, expected {FORMAT}.")
    profiles = calibration.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise CalibrationError(f"{source}: no 'profiles' entry (received {type(profiles).__name__}).")
    for name, entry in profiles.items():
        where = f"{source}: profile {name!r}"
        if entry.get("measured"):
            _validate_measured(entry, where)
        else:
            target = entry.get("fallback")
            if target not in profiles or not profiles[target].get("measured"):
                raise CalibrationError(
                    f"{where} is not measured and its fallback {target!r} is not a measured profile "
                    f"(measured: {sorted(p for p, e in profiles.items() if e.get('measured'))})."
                )
            if not entry.get("why"):
                raise CalibrationError(f"{where} is not measured and does not say why.")
            if "measured_so_far" in entry:
                _validate_partial(entry["measured_so_far"], where)


def _validate_partial(partial, where):
    missing = [key for key in PARTIAL_KEYS if key not in partial]
    if missing:
        raise CalibrationError(f"{where}: 'measured_so_far' has no {missing} (expected {list(PARTIAL_KEYS)}).")
    seeds = [run["seed"] for run in partial["details"].get("runs", [])]
    if seeds != list(partial["seeds"]):
        raise CalibrationError(f"{where}: 'measured_so_far' lists seeds {partial['seeds']} but its runs have "
                               f"seeds {seeds}.")
    if len(seeds) >= MIN_KNOWN_GOOD_RUNS:
        raise CalibrationError(f"{where}: 'measured_so_far' has {len(seeds)} reference runs, enough for "
                               f"thresholds ({MIN_KNOWN_GOOD_RUNS}): derive them (--write-calibration).")


def _validate_measured(entry, where):
    for key in ("measured_on", "date", "budget", "seeds", "thresholds", "quantities"):
        if key not in entry:
            raise CalibrationError(f"{where} is measured but has no {key!r}.")
    if set(entry["thresholds"]) != set(entry["quantities"]):
        raise CalibrationError(
            f"{where}: thresholds {sorted(entry['thresholds'])} and quantities "
            f"{sorted(entry['quantities'])} do not name the same values."
        )
    for key, quantity in entry["quantities"].items():
        if quantity.get("direction") not in DIRECTIONS:
            raise CalibrationError(f"{where}, {key}: direction {quantity.get('direction')!r}, expected one of {DIRECTIONS}.")
        for side in ("known_good", "known_poor"):
            if not quantity.get(side, {}).get("values"):
                raise CalibrationError(f"{where}, {key}: no {side} values.")
        if quantity.get("threshold") != entry["thresholds"][key]:
            raise CalibrationError(
                f"{where}, {key}: threshold {entry['thresholds'][key]!r} differs from its quantity's "
                f"{quantity.get('threshold')!r}."
            )


class Thresholds(dict):
    """The thresholds a profile's checks use, with where they were measured.

    A plain dict of {name: value}, plus:
        lab, profile: what was asked for.
        source_profile: the measured profile the values come from.
        measured_on: that profile's machine line.
        why: why `profile` has no measurement of its own ("" when it has).
        settings_changed: {key: (calibrated, now)} where the profile's settings differ from
            those its thresholds were measured at (empty when they match).
    """

    def __init__(self, values, lab, profile, source_profile, measured_on, why="", directions=None,
                 settings_changed=None):
        super().__init__(values)
        self.settings_changed = dict(settings_changed or {})
        self.lab = lab
        self.profile = profile
        self.source_profile = source_profile
        self.measured_on = measured_on
        self.why = why
        self.directions = dict(directions or {})
        # What `holds()` compared: {name: {"value", "threshold", "holds"}}, for the report.
        self.compared = {}

    def holds(self, name, value):
        """Whether `value` is on the good side of threshold `name` (its calibrated direction).

        The comparison is recorded in `compared`, so that a report carries the measured
        quantity next to the threshold it was held against.

        Raises:
            CalibrationError: if `name` is not a calibrated threshold of this profile.
        """
        if name not in self or name not in self.directions:
            raise CalibrationError(f"No calibrated threshold {name!r} for {self.lab} (known: {sorted(self)}).")
        threshold = self[name]
        value = float(value)
        good = value <= threshold if self.directions[name] == "at_most" else value >= threshold
        self.compared[name] = {"value": round(value, 6), "threshold": threshold, "holds": bool(good)}
        return good

    @property
    def measured(self):
        return self.profile == self.source_profile

    def caveat(self):
        """A sentence for check messages; empty when the profile was measured itself, as it is now."""
        if self.measured and self.settings_changed:
            changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in sorted(self.settings_changed.items()))
            return (f"Note: the '{self.profile}' profile's settings changed since its thresholds were measured "
                    f"({changes}); re-run scripts/calibrate_{self.lab}.py --profile {self.profile}.")
        if self.measured:
            return ""
        return (f"Note: the '{self.profile}' profile's thresholds are not measured yet ({self.why}); "
                f"this check uses those measured for the '{self.source_profile}' profile.")

    def describe(self):
        """The report's `calibration` entry."""
        return {
            "lab": self.lab,
            "profile": self.profile,
            "measured": self.measured,
            "thresholds_from_profile": self.source_profile,
            "measured_on": self.measured_on,
            "settings_changed": {key: list(pair) for key, pair in self.settings_changed.items()},
            "note": self.caveat() or "thresholds measured for this profile",
        }


def thresholds(lab_name, profile):
    """The thresholds the checks of `lab_name` apply in `profile`.

    Returns:
        A `Thresholds` (a dict of name -> value that knows where it was measured).

    Raises:
        CalibrationError: if the lab has no such profile.
    """
    profiles = load(lab_name)["profiles"]
    if profile not in profiles:
        raise CalibrationError(
            f"No calibrated thresholds of {lab_name} for the run profile {profile!r} "
            f"(calibrated profiles: {sorted(profiles)})."
        )
    entry = profiles[profile]
    source = profile if entry.get("measured") else entry["fallback"]
    measured = profiles[source]
    directions = {name: quantity["direction"] for name, quantity in measured["quantities"].items()}
    changed = _settings_changed(lab_name, profile, measured["budget"]) if source == profile else {}
    return Thresholds(measured["thresholds"], lab_name, profile, source, measured["measured_on"],
                      why="" if source == profile else entry["why"], directions=directions,
                      settings_changed=changed)


def _settings_changed(lab_name, profile, budget):
    """{key: (calibrated, now)} where `profile`'s current settings of the lab differ from `budget`."""
    from course_lib.profiles import settings

    try:
        now = settings(lab_name, profile)
    except ValueError:  # a lab or profile course_lib does not know: nothing to compare with
        return {}
    missing = "(not set)"
    return {key: (budget.get(key, missing), now.get(key, missing)) for key in sorted(set(budget) | set(now))
            if budget.get(key, missing) != now.get(key, missing)}


# --------------------------------------------------------------------- writing


def summary(values):
    """Mean, sample standard deviation, min and max of a list of numbers (rounded)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise CalibrationError("summary() received no values.")
    return {
        "values": [round(float(value), 6) for value in array],
        "mean": round(float(array.mean()), 6),
        "std": round(float(array.std(ddof=1)) if array.size > 1 else 0.0, 6),
        "min": round(float(array.min()), 6),
        "max": round(float(array.max()), 6),
    }


def quantity(description, direction, good_values, good_what, poor_values, poor_what, rule, threshold):
    """One calibrated quantity: both measured sides, the rule, and the threshold.

    Args:
        description: what is measured, and how.
        direction: "at_least" (a good model scores at least the threshold) or "at_most".
        good_values: the known-good runs' values (list).
        good_what: what the known-good runs are (seeds, budget, variants).
        poor_values: {name: value} of the known-poor models.
        poor_what: what the known-poor models are.
        rule: how the threshold follows from the two sides.
        threshold: the threshold.

    Returns:
        The quantity's entry, with the worst good and best poor values and the margins.

    Raises:
        CalibrationError: if the direction is unknown, a side is empty, or the threshold
            does not separate the worst good value from the best poor one.
    """
    if direction not in DIRECTIONS:
        raise CalibrationError(f"direction {direction!r}, expected one of {DIRECTIONS}.")
    if not poor_values:
        raise CalibrationError(f"{description}: no known-poor values.")
    if len(good_values) < MIN_KNOWN_GOOD_RUNS:
        raise CalibrationError(f"{description}: {len(good_values)} known-good value(s) {list(good_values)}; a "
                               f"threshold needs at least {MIN_KNOWN_GOOD_RUNS} (one per seed).")
    good = summary(good_values)
    lower_is_better = direction == "at_most"
    worst_good = good["max"] if lower_is_better else good["min"]
    best_poor = (min if lower_is_better else max)(poor_values.values())
    separates = worst_good <= threshold < best_poor if lower_is_better else best_poor < threshold <= worst_good
    if not separates:
        raise CalibrationError(
            f"{description}: threshold {threshold} does not separate the worst known-good value "
            f"{worst_good} from the best known-poor value {best_poor} ({direction})."
        )
    return {
        "quantity": description,
        "direction": direction,
        "known_good": dict(good, what=good_what, worst=worst_good),
        "known_poor": {"what": poor_what, "values": dict(poor_values), "best": best_poor},
        "rule": rule,
        "margin": {"good_side": _ratio(worst_good, threshold), "poor_side": _ratio(threshold, best_poor)},
        "threshold": threshold,
    }


def _ratio(a, b):
    """How far apart two values are, as max/min (1.0 = equal), or the difference at 0."""
    if a > 0 and b > 0:
        return round(max(a, b) / min(a, b), 4)
    return round(abs(a - b), 6)


def geometric_midpoint(low, high):
    """Halfway on a log scale between two positive values."""
    return math.sqrt(low * high)


def write_profile(path, lab_name, script, description, profile, entry):
    """Writes one measured profile into a calibration file, keeping the other profiles.

    An unmeasured profile already in the file keeps pointing at its fallback; a profile
    not in the file at all is added as unmeasured, falling back to `profile`.

    Args:
        path: the calibration file (`pathlib.Path`).
        lab_name, script, description: the file's header.
        profile: the profile just measured.
        entry: its measured entry (see the module docstring; `measured` is set here).

    Raises:
        CalibrationError: if the result does not follow the format.
    """
    from course_lib.profiles import PROFILES

    previous = json.loads(path.read_text()) if path.exists() else {}
    profiles = dict(previous.get("profiles", {}))
    profiles[profile] = dict(entry, measured=True)
    for other in PROFILES:
        profiles.setdefault(other, {
            "measured": False, "fallback": profile,
            "why": f"not measured yet; run {script} --profile {other} to measure it",
        })
    _write(path, lab_name, script, description, profiles)


def _write(path, lab_name, script, description, profiles):
    """Validates a whole calibration file's content, then writes it (and forgets the cached one)."""
    calibration = {"format": FORMAT, "lab": lab_name, "script": script, "description": description,
                   "profiles": profiles}
    validate(calibration, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration, indent=2, ensure_ascii=False) + "\n")
    load.cache_clear()


def _measured_other_than(profiles, profile):
    """The first measured profile other than `profile` (a fallback for it), or None."""
    return next((name for name, entry in profiles.items() if name != profile and entry.get("measured")), None)


def write_partial(path, lab_name, script, description, profile, partial):
    """Keeps the runs of a profile that has too few of them for thresholds (`measured_so_far`).

    The profile stays unmeasured: its checks go on using its fallback's thresholds (the
    entry already in the file, else the first measured profile), and its `why` says how
    many reference runs it has and how many it needs.

    Args:
        path, lab_name, script, description: as for `write_profile`.
        profile: the profile the runs belong to.
        partial: {"measured_on", "date", "budget", "seeds", "details"} (see `partial_entry`).

    Raises:
        CalibrationError: if `profile` is already measured (its thresholds would be lost),
            if the file has no measured profile to fall back to, or the result is malformed.
    """
    previous = json.loads(path.read_text()) if path.exists() else {}
    profiles = dict(previous.get("profiles", {}))
    old = profiles.get(profile, {})
    if old.get("measured"):
        raise CalibrationError(
            f"{path}: the {profile!r} profile is measured ({len(old.get('seeds', []))} seeds); refusing to "
            f"replace its thresholds by {len(partial['seeds'])} run(s). Combine the new runs with its "
            f"runs (--combine {path}) to measure it again."
        )
    fallback = old.get("fallback") or _measured_other_than(profiles, profile)
    if fallback is None:
        raise CalibrationError(f"{path}: no measured profile for {profile!r} to fall back to "
                               f"(profiles: {sorted(profiles)}).")
    seeds = list(partial["seeds"])
    profiles[profile] = {
        "measured": False,
        "fallback": fallback,
        "why": (f"{len(seeds)} of the {MIN_KNOWN_GOOD_RUNS} reference runs they need are measured, seeds "
                f"{seeds}; those and the known-poor runs are kept in measured_so_far of {path.name}, and "
                f"{script} --profile {profile} --seeds ... adds the others"),
        "measured_so_far": dict(partial, seeds=seeds),
    }
    _write(path, lab_name, script, description, profiles)


def retire_profile(path, lab_name, script, description, profile, why):
    """Turns a measured profile back into a fallback when what it measured no longer exists.

    For a change to the lab itself (its model, its loss) after which the stored runs describe
    another notebook: their thresholds are dropped (git history keeps them), never combined
    with new runs, and the profile's checks use another measured profile's thresholds and say
    why until it is measured again.

    Args:
        path, lab_name, script, description: as for `write_profile`.
        profile: the profile whose thresholds no longer apply.
        why: what changed, in words (kept in the entry's `why`).

    Raises:
        CalibrationError: on an empty `why`, a profile not in the file, or a file with no other
            measured profile to fall back to.
    """
    if not isinstance(why, str) or not why.strip():
        raise CalibrationError(f"Say what changed to retire {profile!r}'s thresholds. Received: why={why!r}")
    previous = json.loads(path.read_text()) if path.exists() else {}
    profiles = dict(previous.get("profiles", {}))
    if profile not in profiles:
        raise CalibrationError(f"{path} has no profile {profile!r} (profiles: {sorted(profiles)}).")
    fallback = _measured_other_than(profiles, profile)
    if fallback is None:
        raise CalibrationError(f"{path}: no other measured profile for {profile!r} to fall back to "
                               f"(profiles: {sorted(profiles)}); measure one first.")
    profiles[profile] = {
        "measured": False,
        "fallback": fallback,
        "why": (f"retired on {datetime.date.today().isoformat()}: {why.strip()}; its earlier thresholds are in "
                f"git history; {script} --profile {profile} --seeds ... measures it again"),
    }
    _write(path, lab_name, script, description, profiles)


def runs_of(path, profile, key="runs"):
    """The runs (key="runs") or known-poor runs ("poor_runs") kept in a calibration file's profile.

    They are the measured entry's `details`, or the `measured_so_far` details of an
    unmeasured one; an unmeasured profile without runs has none.

    Raises:
        CalibrationError: if the file has no such profile.
    """
    profiles = json.loads(pathlib.Path(path).read_text()).get("profiles", {})
    if profile not in profiles:
        raise CalibrationError(f"{path} has no profile {profile!r} (profiles: {sorted(profiles)}).")
    entry = profiles[profile]
    details = entry.get("details") if entry.get("measured") else entry.get("measured_so_far", {}).get("details")
    return list((details or {}).get(key, []))


def partial_entry(budget, seeds, details, measured_on, date=None, load_average=None):
    """The `measured_so_far` entry of runs too few for thresholds (arguments as `profile_entry`)."""
    entry = profile_entry({}, budget, seeds, details, measured_on, date=date, load_average=load_average)
    return {key: entry[key] for key in (*PARTIAL_KEYS, "load_average_1min")}


def profile_entry(quantities, budget, seeds, details, measured_on, date=None, load_average=None):
    """A measured profile's entry: thresholds from `quantities`, with where and how they were measured.

    Args:
        quantities: {threshold name: `quantity(...)`}.
        budget: the profile's training settings.
        seeds: the known-good runs' training seeds.
        details: the lab's raw measurements (kept for re-derivation).
        measured_on: the machine line (`course_lib.describe_device()`).
        date: ISO date of the measurement (default: today).
        load_average: the machine's 1-minute load when measured.
    """
    import datetime

    return {
        "measured": True,
        "measured_on": measured_on,
        "date": date or datetime.date.today().isoformat(),
        "load_average_1min": load_average,
        "budget": budget,
        "seeds": list(seeds),
        "thresholds": {name: entry["threshold"] for name, entry in quantities.items()},
        "quantities": quantities,
        "details": details,
    }
