#!/usr/bin/env bash
# The main job: set up, build the student versions, grade the reference solutions of
# every lab in the fast profile, and print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
python scripts/generate_assignments.py
OUT="${COURSE_OUT:-build/reference-grades}"
python -m autograder grade solutions/lab*/lab*.ipynb --out "$OUT"
echo "Class CSV: $OUT/grades.csv"
