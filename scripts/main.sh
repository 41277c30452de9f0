#!/usr/bin/env bash
# The main job: set up, build the student versions, grade the reference solutions of every
# lab in the fast profile, and print a summary. Exits non-zero unless every reference
# solution gets full marks (a course version that cannot grade its own solutions is broken).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
OUT="${COURSE_OUT:-build/reference-grades}"
WORKERS="${COURSE_WORKERS:-2}"
python scripts/generate_assignments.py
rm -rf "$OUT"
if python -m autograder grade solutions/lab*/lab*.ipynb --out "$OUT" --workers "$WORKERS" --expect-full-marks; then
  echo "main: every reference solution got full marks. Class CSV: $OUT/grades.csv"
else
  echo "main: FAILED: the reference solutions did not all get full marks (see above and $OUT/*/report.json)" >&2
  exit 1
fi
