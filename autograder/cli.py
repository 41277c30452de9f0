"""`python -m autograder grade SUBMISSION [SUBMISSION ...] --out DIR`"""

import argparse
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    grade = commands.add_parser("grade", help="grade notebooks (files, or folders holding one)")
    grade.add_argument("submissions", nargs="+", help="notebook files or submission folders")
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
    import course_lib
    from autograder.grade import DEFAULT_MEMORY_LIMIT_MB, GraderSetupError, grade_batch
    from autograder.sandbox import SandboxError

    profile = course_lib.active_profile(arguments.profile)
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
    total = sum(report["score"] for report in reports)
    maximum = sum(report["max_score"] for report in reports)
    print(f"Done: {len(reports)} graded, {total:g}/{maximum:g} points in all. Reports in {arguments.out}")
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


def _grade(arguments, submissions, profile, grade_batch, default_memory_mb):
    return grade_batch(
        submissions,
        arguments.out,
        workers=arguments.workers,
        progress=lambda line: print(line, flush=True),
        lab=arguments.lab,
        profile=profile,
        timeout_s=arguments.timeout,
        memory_limit_mb=arguments.memory_mb or default_memory_mb,
        data_dir=arguments.data_dir,
        keep_work=arguments.keep_work,
        resume=arguments.resume,
    )


if __name__ == "__main__":
    sys.exit(main())
