"""`python -m autograder grade SUBMISSION [SUBMISSION ...] --out DIR` (and `grade --manifest`, `csv DIR`)"""

import argparse
import functools
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    grade = commands.add_parser("grade", help="grade notebooks (files, or folders holding one)")
    grade.add_argument("submissions", nargs="*", help="notebook files or submission folders")
    grade.add_argument("--out", required=True, help="report folder (one sub-folder per submission)")
    grade.add_argument("--lab", help="lab name (default: from each notebook's metadata or name)")
    grade.add_argument("--profile", choices=["fast", "full"], help="run profile (default: $COURSE_PROFILE or fast)")
    grade.add_argument("--timeout", type=int, help="seconds per notebook (default: the profile's)")
    grade.add_argument("--memory-mb", type=int, default=None, help="kernel memory limit in MiB")
    grade.add_argument("--workers", type=int, default=1, help="submissions graded at once")
    grade.add_argument("--resume", action="store_true", help="skip submissions already graded unchanged")
    grade.add_argument("--keep-work", action="store_true", help="keep each submission's scratch folder")
    grade.add_argument("--data-dir", help="data folder for the kernels (default: $COURSE_DATA_DIR)")
    grade.add_argument("--expand", action="store_true",
                       help="treat each given folder as a class folder: grade every entry inside it")
    grade.add_argument("--expect-full-marks", action="store_true",
                       help="exit with status 1 unless every submission gets full marks (reference solutions)")
    # --engine ray: one Ray task per submission on a cluster (autograder/fleet.py).
    grade.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: a process pool on this machine (default); ray: a Ray cluster")
    grade.add_argument("--address", help="Ray cluster to join (HOST:PORT from `ray start --head`; "
                       "default: start a local cluster)")
    grade.add_argument("--gpus-per-job", type=float, default=0.0,
                       help="GPUs per submission with --engine ray (fractional shares a GPU; default 0)")
    grade.add_argument("--cpus-per-job", type=float, default=1.0,
                       help="CPUs per submission with --engine ray (default 1)")
    # --manifest: the K-th submission only, for Slurm job arrays / Kubernetes Indexed Jobs (autograder/manifest.py).
    grade.add_argument("--manifest", help="file listing the submissions (one path per line, or a JSON list); "
                       "grades only entry --index")
    grade.add_argument("--index", help="entry of --manifest to grade, from 0 (default: $SLURM_ARRAY_TASK_ID "
                       "or $JOB_COMPLETION_INDEX)")
    # nbgrader-autograde: the grader's points into an nbgrader course's gradebook (autograder/nbgrader_sync.py).
    sync = commands.add_parser("nbgrader-autograde",
                               help="grade an nbgrader course's submissions and write the points into its gradebook")
    sync.add_argument("assignment", help="nbgrader assignment (e.g. lab3)")
    sync.add_argument("--course-dir", default=".", help="nbgrader course folder (default: the working directory)")
    sync.add_argument("--student", nargs="+", help="student ids (default: every submitted/<student>/<assignment>/)")
    sync.add_argument("--workers", type=int, default=1, help="submissions graded at once")
    sync.add_argument("--profile", choices=["fast", "full"], help="run profile (default: $COURSE_PROFILE or fast)")
    sync.add_argument("--timeout", type=int, help="seconds per notebook (default: the profile's)")
    sync.add_argument("--memory-mb", type=int, default=None, help="kernel memory limit in MiB")
    sync.add_argument("--data-dir", help="data folder for the kernels (default: $COURSE_DATA_DIR)")
    sync.add_argument("--resume", action="store_true", help="skip submissions already graded unchanged")
    sync.add_argument("--reports-dir", help="grader reports (default: <course>/autograded-reports/<assignment>)")
    class_csv = commands.add_parser("csv", help="rebuild DIR/grades.csv from the report folders in DIR")
    class_csv.add_argument("out", help="report folder (as given to grade --out)")
    # gradescope-bundle: the Gradescope autograder zip of one lab (autograder/gradescope.py).
    bundle = commands.add_parser("gradescope-bundle", help="write the Gradescope autograder zip of a lab")
    bundle.add_argument("--lab", required=True, help="lab name (labN)")
    bundle.add_argument("--out", required=True, help="zip file to write")
    bundle.add_argument("--profile", choices=["fast", "full"], default="fast",
                        help="run profile used on Gradescope (default: fast)")
    bundle.add_argument("--visibility", help="visibility of the per-check results: visible, hidden, "
                        "after_due_date or after_published (default: $COURSE_GRADESCOPE_VISIBILITY "
                        "or after_due_date)")
    bundle.add_argument("--data-dir", help="folder of .npz data files to include in the zip")
    return parser


# Entries of a class folder that are never submissions (and are skipped with a note).
IGNORED_ENTRIES = (".DS_Store", ".ipynb_checkpoints", "__MACOSX", ".git", "Thumbs.db")


def _expand(paths, say=print):
    """Every entry of each class folder in `paths` (files are kept as they are)."""
    expanded = []
    for path in paths:
        if os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                if entry in IGNORED_ENTRIES:
                    say(f"Skipped {os.path.join(path, entry)!r}: not a submission ({entry} is ignored).")
                    continue
                expanded.append(os.path.join(path, entry))
        else:
            expanded.append(path)
    return expanded


def main(argv=None):
    arguments = _parser().parse_args(argv)
    if arguments.command == "nbgrader-autograde":
        from autograder.nbgrader_sync import run_from_arguments

        return run_from_arguments(arguments)
    if arguments.command == "gradescope-bundle":
        from autograder.gradescope import write_bundle

        try:
            path = write_bundle(arguments.lab, arguments.out, profile=arguments.profile,
                                visibility=arguments.visibility, data_dir=arguments.data_dir)
        except (ValueError, FileNotFoundError) as error:
            print(f"gradescope-bundle: {error}", file=sys.stderr)
            return 2
        print(f"Wrote the Gradescope autograder for {arguments.lab} to {path}")
        return 0
    if arguments.command == "csv":
        return _rebuild_csv(arguments.out)
    problem = _grade_arguments_problem(arguments)
    if problem:
        print(f"grade: {problem}", file=sys.stderr)
        return 2
    import course_lib
    from autograder.grade import DEFAULT_MEMORY_LIMIT_MB, GraderSetupError, grade_batch
    from autograder.sandbox import SandboxError

    profile = course_lib.active_profile(arguments.profile)
    if arguments.manifest:
        return _grade_manifest_entry(arguments, profile, DEFAULT_MEMORY_LIMIT_MB)
    submissions = _expand(arguments.submissions) if arguments.expand else arguments.submissions
    missing = [path for path in submissions if not os.path.exists(path)]
    if missing:
        print(f"grade: no such file or folder: {', '.join(repr(path) for path in missing)} "
              f"(working directory: {os.getcwd()})", file=sys.stderr)
        return 2
    print(f"Grading {len(submissions)} submission(s), profile={profile}, {course_lib.describe_device()}",
          flush=True)
    try:
        reports = _grade(arguments, submissions, profile, grade_batch, DEFAULT_MEMORY_LIMIT_MB)
    except (GraderSetupError, SandboxError) as error:
        print(f"grade: the grader is not set up to grade here, nothing was graded.\n{error}", file=sys.stderr)
        return 2
    except _fleet_error() as error:
        print(f"grade: {error}", file=sys.stderr)
        return 2
    total = sum(report["score"] for report in reports)
    maximum = sum(report["max_score"] for report in reports)
    print(f"Done: {len(reports)} graded, {total:g}/{maximum:g} points in all. Reports in {arguments.out}")
    return _exit_status(arguments, reports)


def _exit_status(arguments, reports):
    broken = [report["submission"] for report in reports if report["status"] == "grader error"]
    if broken:
        print(f"grade: grading-infrastructure errors (not the students' fault) for: {', '.join(broken)}; "
              f"see their report.json", file=sys.stderr)
        return 1
    if arguments.expect_full_marks:
        short = [f"{report['submission']} ({report['score']:g}/{report['max_score']:g}: {report['summary'][:300]})"
                 for report in reports if report["score"] < report["max_score"] or report["max_score"] == 0]
        if short:
            print("grade: expected full marks, but these did not get them:\n  " + "\n  ".join(short), file=sys.stderr)
            return 1
    return 0


def _fleet_error():
    from autograder.fleet import FleetError

    return FleetError


def _grade_arguments_problem(arguments):
    """What is wrong with `grade`'s arguments before anything is imported or graded, or None."""
    if arguments.manifest and arguments.submissions:
        return (f"give submissions or --manifest, not both; received --manifest {arguments.manifest!r} and "
                f"{len(arguments.submissions)} submission(s).")
    if not arguments.manifest and not arguments.submissions:
        return "no submissions: give notebook files or folders, or --manifest FILE --index K."
    if arguments.index is not None and not arguments.manifest:
        return f"--index {arguments.index!r} needs --manifest FILE."
    if arguments.manifest and arguments.engine == "ray":
        return "--manifest grades one entry on this machine; it does not combine with --engine ray."
    if arguments.engine == "ray":
        from autograder.fleet import FleetError, import_ray

        try:
            import_ray()
        except FleetError as error:
            return str(error)
    elif arguments.address or arguments.gpus_per_job or arguments.cpus_per_job != 1.0:
        return "--address, --gpus-per-job and --cpus-per-job need --engine ray."
    return None


def _rebuild_csv(out_dir):
    from autograder.reports import read_reports, write_class_csv

    if not os.path.isdir(out_dir):
        print(f"csv: no such report folder: {out_dir!r} (working directory: {os.getcwd()})", file=sys.stderr)
        return 2
    path = write_class_csv(out_dir)
    print(f"Wrote {path} ({len(read_reports(out_dir))} submission(s)).")
    return 0


def _grade_manifest_entry(arguments, profile, default_memory_mb):
    from autograder.fleet import FleetError
    from autograder.grade import GraderSetupError
    from autograder.manifest import ManifestError, grade_entry

    try:
        report, index, submission = grade_entry(
            arguments.manifest, arguments.index, arguments.out, resume=arguments.resume, lab=arguments.lab,
            profile=profile, timeout_s=arguments.timeout, memory_limit_mb=arguments.memory_mb or default_memory_mb,
            data_dir=arguments.data_dir, keep_work=arguments.keep_work,
        )
    except (ManifestError, FleetError, GraderSetupError) as error:
        print(f"grade: {error}", file=sys.stderr)
        return 2
    print(f"Entry {index} ({submission}): {report['score']:g}/{report['max_score']:g} ({report['status']}). "
          f"Report in {os.path.join(arguments.out, report['submission'])}. When every entry is done: "
          f"python -m autograder csv {arguments.out}")
    return _exit_status(arguments, [report])


def _grade(arguments, submissions, profile, grade_batch, default_memory_mb):
    if arguments.engine == "ray":
        from autograder.fleet import grade_fleet

        grade_batch = functools.partial(grade_fleet, address=arguments.address,
                                        cpus_per_job=arguments.cpus_per_job, gpus_per_job=arguments.gpus_per_job,
                                        local_cpus=_local_cpus(arguments))
    return grade_batch(
        submissions,
        arguments.out,
        progress=lambda line: print(line, flush=True),
        lab=arguments.lab,
        profile=profile,
        timeout_s=arguments.timeout,
        memory_limit_mb=arguments.memory_mb or default_memory_mb,
        data_dir=arguments.data_dir,
        keep_work=arguments.keep_work,
        resume=arguments.resume,
        **({} if arguments.engine == "ray" else {"workers": arguments.workers}),
    )


def _local_cpus(arguments):
    """CPUs of the local Ray cluster: --workers jobs at once when given, else every core (Ray's choice)."""
    return arguments.workers * arguments.cpus_per_job if arguments.workers > 1 else None


if __name__ == "__main__":
    sys.exit(main())
