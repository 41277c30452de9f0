#!/usr/bin/env bash
# The prepared GPU run (see scripts/gpu_run.py): grades every lab's reference solution in
# the full profile through the real grader, grades SHARE_KERNELS kernels on one GPU at once,
# and runs the Keras/PyTorch benchmark; every figure lands in $OUT.
#
#   On a GPU machine without network (Python 3.12 + CUDA torch), after scripts/gpu_pack.sh here:
#     bash scripts/gpu_run.sh    # carry .whl build/gpu-data/shared/mnist.npz build/gpu-data/cifar10.npz
#   Anywhere with this project's .venv (what CI runs):
#     bash scripts/gpu_run.sh --tiny
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd -P)"
# OUT: where the figures go (default build/gpu-run in the repository). Resolved before moving
# into the repository: a relative OUT means the caller's folder.
OUT="$(realpath -m -- "${OUT:-$REPO/build/gpu-run}")"
cd "$REPO"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then
  # This project's own environment (scripts/setup.sh), as here and in CI.
  source scripts/env.sh
  PY=python
elif [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  # The GPU machine: a venv over its own torch/numpy, with the wheels that travelled and this checkout.
  python3 -m venv --system-site-packages .gpu-venv || exit 3
  .gpu-venv/bin/python -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check .whl/*.whl || exit 3
  site="$(.gpu-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PWD" > "$site/course-checkout.pth"
  PY="$PWD/.gpu-venv/bin/python"
  export PATH="$PWD/.gpu-venv/bin:$PATH"
  if [ -d build/gpu-data ]; then
    [ -e build/gpu-data/mnist.npz ] || ln -s shared/mnist.npz build/gpu-data/mnist.npz
    export COURSE_DATA_DIR="${COURSE_DATA_DIR:-$PWD/build/gpu-data}"
  fi
else
  echo "gpu_run: neither a .venv (scripts/setup.sh) nor wheels in .whl/ (scripts/gpu_pack.sh) to run with" >&2
  exit 2
fi
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1
export COURSE_GRADER_ISOLATION="${COURSE_GRADER_ISOLATION:-auto}"
# A secret of this run's own: no grading secret travels to another machine.
if [ -z "${COURSE_GRADER_SECRET:-}" ] && [ ! -s .grader-secret ]; then
  COURSE_GRADER_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
  export COURSE_GRADER_SECRET
fi
"$PY" scripts/gpu_run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
