#!/usr/bin/env bash
# The test command: sets up if needed, then runs the whole test suite (fast profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec python -m pytest -ra --durations=15 "$@"
