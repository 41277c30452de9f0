#!/usr/bin/env bash
# The main job: set up, build the student versions, grade the reference solutions of every
# lab in the fast profile, and print a summary. Exits non-zero unless every reference
# solution gets full marks (a course version that cannot grade its own solutions is broken).
#
#   COURSE_OUT=DIR   where the reports go (default build/reference-grades in the repository;
#                    a relative DIR is taken from the folder the command is called in). The
#                    folder is emptied first, so it must be new, empty or an earlier output.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd -P)"
MARKER=".course-reference-grades"
# Resolved before moving into the repository: a relative COURSE_OUT means the caller's folder.
OUT="$(realpath -m -- "${COURSE_OUT:-$REPO/build/reference-grades}")"
cd "$REPO"
# Before anything else: the folder is deleted below, and only an earlier output may be.
if [ -d "$OUT" ]; then
  case "$REPO/" in
    "${OUT%/}"/*)
      echo "main: COURSE_OUT=${COURSE_OUT:-} is $OUT, which holds the repository: refusing to delete it. Expected a folder for the reports only." >&2
      exit 2 ;;
  esac
  if [ -n "$(ls -A "$OUT")" ] && [ ! -e "$OUT/$MARKER" ] && [ ! -f "$OUT/grades.csv" ]; then
    echo "main: COURSE_OUT=${COURSE_OUT:-} ($OUT) holds files that are not an earlier main run's reports (no $MARKER or grades.csv): refusing to delete them. Expected a new or empty folder, or an earlier output folder." >&2
    exit 2
  fi
elif [ -e "$OUT" ]; then
  echo "main: COURSE_OUT=${COURSE_OUT:-} ($OUT) is a file, not a folder: refusing to replace it." >&2
  exit 2
fi
bash scripts/setup.sh
source scripts/env.sh
WORKERS="${COURSE_WORKERS:-2}"
python scripts/generate_assignments.py
rm -rf "$OUT"
mkdir -p "$OUT"
touch "$OUT/$MARKER"
if python -m autograder grade solutions/lab*/lab*.ipynb --out "$OUT" --workers "$WORKERS" --expect-full-marks; then
  echo "main: every reference solution got full marks. Class CSV: $OUT/grades.csv"
else
  echo "main: FAILED: the reference solutions did not all get full marks (see above and $OUT/*/report.json)" >&2
  exit 1
fi
