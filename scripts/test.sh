#!/usr/bin/env bash
# The test command: sets up if needed, checks that the generated folders are fresh, runs
# the main job (grades every reference solution; fails unless all get full marks), then
# the whole test suite (fast profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
python scripts/generate_assignments.py --check
bash scripts/main.sh
exec python -m pytest -ra --durations=15 "$@"
