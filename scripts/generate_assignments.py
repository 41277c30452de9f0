"""Regenerates assignments/ (student versions) and solutions/ from source/ with nbgrader.

Usage: python scripts/generate_assignments.py [--check] [LAB ...]

--check regenerates into a temporary copy and fails if the committed folders differ.
"""

import argparse
import filecmp
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

COURSE_ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATED = ("assignments", "solutions")


def assignment_names(root):
    return assignment_names_in(root / "source")


def assignment_names_in(folder):
    """Sub-folders of a generated folder (each should have a source/ twin)."""
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def generate(root, names):
    """Runs nbgrader's generate_assignment and generate_solution for `names` in `root`.

    One child process for all assignments (each nbgrader command would pay its start-up).
    """
    # nbgrader runs `alembic` from PATH: use the one beside this interpreter.
    environment = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory() as scratch:
        database = f"sqlite:///{pathlib.Path(scratch) / 'gradebook.db'}"
        subprocess.run(
            [sys.executable, "-c", _NBGRADER_RUNNER, str(root), database, *names],
            cwd=root, env=environment, check=True,
        )
    for name in names:
        write_student_config(root / "assignments" / name, name)


# nbgrader's config does not travel with a released folder, and its default cell timeout
# (30 s) interrupts the training cells, after which `nbgrader validate` still says
# "Success!". This file, beside the released notebook, is read by `nbgrader validate`
# run in that folder.
STUDENT_CONFIG = '''"""Settings for checking {name} before you submit: in this folder run

    nbgrader validate {name}.ipynb

It runs the notebook top to bottom in a fresh kernel, as the grader will, with the
grader's time limit (run profile: $COURSE_PROFILE, default fast). "Success!" means it ran
and the visible tests pass; the points come from the hidden checks of the course grader.
"""

c = get_config()  # noqa: F821  (provided by nbgrader)

try:
    from course_lib.profiles import settings

    c.Execute.timeout = settings("grading")["notebook_timeout_s"]
except Exception:  # course_lib not importable here: the longest profile's limit
    c.Execute.timeout = 5400
c.Execute.kernel_name = "python3"
'''


def write_student_config(folder, name):
    """Writes nbgrader_config.py beside a released notebook (for `nbgrader validate`).

    Args:
        folder: the released folder (assignments/<name>).
        name: the assignment's name.

    Raises:
        FileNotFoundError: if nbgrader wrote no such folder.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"nbgrader generated no released folder. Expected a folder. Received: {folder}")
    (folder / "nbgrader_config.py").write_text(STUDENT_CONFIG.format(name=name))


_NBGRADER_RUNNER = """
import sys
from nbgrader.apps.generateassignmentapp import GenerateAssignmentApp
from nbgrader.apps.generatesolutionapp import GenerateSolutionApp

root, database, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in names:
    for application in (GenerateAssignmentApp, GenerateSolutionApp):
        app = application()
        app.initialize([name, "--force", f"--CourseDirectory.root={root}",
                        f"--CourseDirectory.db_url={database}", "--log-level=WARN"])
        app.start()
        application.clear_instance()
"""


def differences(left, right):
    """Lists files that differ between two folder trees."""
    comparison = filecmp.dircmp(left, right)
    found = [str(pathlib.Path(left) / name) for name in comparison.left_only + comparison.right_only]
    found += [str(pathlib.Path(left) / name) for name in comparison.diff_files]
    for sub in comparison.common_dirs:
        found += differences(pathlib.Path(left) / sub, pathlib.Path(right) / sub)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--root", type=pathlib.Path, default=COURSE_ROOT, help="course folder")
    parser.add_argument("labs", nargs="*")
    arguments = parser.parse_args(argv)
    root = arguments.root.resolve()
    names = arguments.labs or assignment_names(root)
    if not arguments.check:
        generate(root, names)
        print(f"Generated {', '.join(names)} into assignments/ and solutions/.")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        copy = pathlib.Path(scratch) / "course"
        copy.mkdir()
        for item in ("source", "nbgrader_config.py"):
            source = root / item
            (shutil.copytree if source.is_dir() else shutil.copy)(source, copy / item)
        generate(copy, names)
        stale = []
        for folder in GENERATED:
            for name in names:
                committed, fresh = root / folder / name, copy / folder / name
                if not committed.is_dir():
                    stale.append(f"{committed} (missing)")
                elif not fresh.is_dir():
                    stale.append(f"{committed} (nothing generated for it)")
                else:
                    stale += differences(committed, fresh)
            if not arguments.labs:
                orphans = set(assignment_names_in(root / folder)) - set(names)
                stale += [f"{root / folder / name} (no source/{name})" for name in sorted(orphans)]
    if stale:
        print("Generated folders are out of date; run: python scripts/generate_assignments.py")
        print("\n".join(f"  {path}" for path in stale))
        return 1
    print("assignments/ and solutions/ are up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
