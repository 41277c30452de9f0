"""Grading the K-th submission of a manifest: the entry point for a Slurm job array or a Kubernetes Indexed Job.

A manifest lists a class's submissions, either as a JSON list of paths (the file starts with
`[`) or as one path per line (blank lines and lines starting with `#` are skipped). Relative
paths are relative to the manifest's own folder, so every array task finds them whatever its
working directory. Entries are numbered from 0, like `SLURM_ARRAY_TASK_ID` with `--array=0-N`
and Kubernetes' `JOB_COMPLETION_INDEX`; `--index` defaults to whichever of them is set.

Each task writes only its own report folder (atomically, as the Ray engine does); the class
CSV is rebuilt afterwards with `python -m autograder csv DIR`.
"""

import json
import os
import pathlib

from autograder import fleet, grade

INDEX_ENV_VARS = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
COMMENT_PREFIX = "#"


class ManifestError(ValueError):
    """The manifest or the index is unusable; the message says what was received and expected."""


def read_manifest(path):
    """The submission paths a manifest lists, made absolute (relative ones from the manifest's folder).

    Raises:
        ManifestError: for a missing or unreadable file, invalid JSON, non-string entries, or no entry.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"Cannot read the manifest {str(path)!r}: {error}") from None
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"The manifest {str(path)!r} starts with '[' but is not valid JSON ({error}); "
                                f"expected a JSON list of paths, or one path per line.") from None
        if not isinstance(entries, list):
            raise ManifestError(f"The manifest {str(path)!r} must be a JSON list of paths; received a "
                                f"{type(entries).__name__}.")
        wrong = [entry for entry in entries if not isinstance(entry, str) or not entry.strip()]
        if wrong:
            raise ManifestError(f"The manifest {str(path)!r} must list non-empty path strings; received "
                                f"entries such as {wrong[:3]!r}.")
    else:
        entries = [line.strip() for line in text.splitlines()]
        entries = [line for line in entries if line and not line.startswith(COMMENT_PREFIX)]
    if not entries:
        raise ManifestError(f"The manifest {str(path)!r} lists no submission; expected one path per line "
                            f"or a JSON list of paths.")
    base = path.resolve().parent
    return [str(base / entry) for entry in entries]


def resolve_index(index, count):
    """The entry to grade: `index`, or else $SLURM_ARRAY_TASK_ID / $JOB_COMPLETION_INDEX; from 0.

    Raises:
        ManifestError: when none is given, or it is not an integer in [0, count).
    """
    source = "--index"
    if index is None:
        source, index = next(((f"${name}", os.environ[name]) for name in INDEX_ENV_VARS if os.environ.get(name)),
                             (None, None))
        if index is None:
            raise ManifestError(f"No index: give --index K, or set one of ${', $'.join(INDEX_ENV_VARS)} "
                                f"(a Slurm array task or a Kubernetes Indexed Job sets it).")
    try:
        value = int(str(index).strip())
    except ValueError:
        raise ManifestError(f"The index must be an integer; received {index!r} from {source}.") from None
    if not 0 <= value < count:
        raise ManifestError(f"Index out of range: received {value} from {source}; the manifest lists {count} "
                            f"submission(s), so expected 0 to {count - 1} (entries are numbered from 0).")
    return value


def grade_entry(manifest_path, index, out_dir, resume=False, **options):
    """Grades one entry of a manifest into `out_dir/<name>/`; returns (report, entry index, entry path).

    The report folder gets the name a whole-batch run of the manifest would give it, so the
    array's tasks never collide; it is written atomically, never half.

    Raises:
        ManifestError: for a bad manifest, index, or an entry that does not exist.
        FleetError: for --keep-work (the job grades in a private folder it removes).
    """
    entries = read_manifest(manifest_path)
    index = resolve_index(index, len(entries))
    submission = entries[index]
    if not os.path.exists(submission):
        raise ManifestError(f"Entry {index} of the manifest {str(manifest_path)!r} does not exist: {submission!r}.")
    if options.pop("keep_work", False):
        raise fleet.FleetError("--keep-work is not available with --manifest; grade the submission itself "
                               "with --keep-work.")
    name = grade._unique_names(entries)[index]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        previous = grade.finished_report(submission, out_dir / name, options.get("lab"),
                                         options.get("profile", "fast"))
        if previous:
            return previous, index, submission
    grade.grading_secret()  # no secret: a setup error for the caller, not a grader-error report
    report, files = fleet.run_job(fleet.pack_submission(submission), name, options, f"manifest-{index}")
    fleet.install_report(out_dir, name, files=files)
    return report, index, submission
