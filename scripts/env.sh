# Sourced by the scripts: where the data is, and the venv's tools first on PATH.
COURSE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${COURSE_DATA_DIR:-}" ] && [ -d "$COURSE_ROOT/../shared/data" ]; then
  COURSE_DATA_DIR="$(cd "$COURSE_ROOT/../shared/data" && pwd)"
fi
export COURSE_DATA_DIR="${COURSE_DATA_DIR:-}"
export COURSE_PROFILE="${COURSE_PROFILE:-fast}"
export KERAS_BACKEND=torch
export PATH="$COURSE_ROOT/${COURSE_VENV:-.venv}/bin:$PATH"
