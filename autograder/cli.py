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
    return parser


def _expand(paths):
    expanded = []
    for path in paths:
        if os.path.isdir(path):
            entries = sorted(os.path.join(path, entry) for entry in os.listdir(path) if not entry.startswith("."))
            expanded.extend(entries)
        else:
            expanded.append(path)
    return expanded


def main(argv=None):
    arguments = _parser().parse_args(argv)
    import course_lib
    from autograder.grade import DEFAULT_MEMORY_LIMIT_MB, grade_batch

    profile = course_lib.active_profile(arguments.profile)
    submissions = _expand(arguments.submissions) if arguments.expand else arguments.submissions
    print(f"Grading {len(submissions)} submission(s), profile={profile}, {course_lib.describe_device()}",
          flush=True)
    reports = grade_batch(
        submissions,
        arguments.out,
        workers=arguments.workers,
        progress=lambda line: print(line, flush=True),
        lab=arguments.lab,
        profile=profile,
        timeout_s=arguments.timeout,
        memory_limit_mb=arguments.memory_mb or DEFAULT_MEMORY_LIMIT_MB,
        data_dir=arguments.data_dir,
        keep_work=arguments.keep_work,
        resume=arguments.resume,
    )
    total = sum(report["score"] for report in reports)
    maximum = sum(report["max_score"] for report in reports)
    print(f"Done: {len(reports)} graded, {total:g}/{maximum:g} points in all. Reports in {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
