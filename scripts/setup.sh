#!/usr/bin/env bash
# Sets up the course environment in .venv (idempotent: a second run only checks).
#   torch: the CPU build where there is no NVIDIA GPU, a CUDA build where there is one.
#   bubblewrap: sandbox for grading kernels (installed with apt when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${COURSE_VENV:-.venv}"
CPU_TORCH="${COURSE_CPU_TORCH:-torch==2.13.0}"
GPU_TORCH="${COURSE_GPU_TORCH:-torch>=2.3,<=2.14.1}"
STAMP="$VENV/.course-installed"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing a CUDA build of torch ($GPU_TORCH)"
    pip_install "$GPU_TORCH"
  else
    echo "setup: no GPU, installing the CPU build of torch ($CPU_TORCH)"
    pip_install "$CPU_TORCH"
  fi
fi

wanted="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing the course package and its dependencies"
  pip_install -e ".[dev,prepare,fleet]"
  "$VENV/bin/python" -c "import course_lib, autograder, nbgrader, tensorflow_datasets, ray" 
  echo "$wanted" > "$STAMP"
fi

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (grading sandbox)"
    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
      || echo "setup: WARNING: bubblewrap could not be installed; grading runs without a file/network sandbox"
  else
    echo "setup: NOTE: install bubblewrap (apt-get install bubblewrap) to sandbox grading kernels"
  fi
fi
# The grading secret: probe inputs are drawn from it. Made once, kept out of git and out of
# every sandbox (only the grader reads it); set COURSE_GRADER_SECRET instead on runners that
# must share one.
SECRET_FILE="${COURSE_GRADER_SECRET_FILE:-.grader-secret}"
if [ -z "${COURSE_GRADER_SECRET:-}" ] && [ ! -s "$SECRET_FILE" ]; then
  (umask 077 && "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(32))" > "$SECRET_FILE")
  echo "setup: wrote a new grading secret to $SECRET_FILE"
fi
"$VENV/bin/python" -c "import course_lib; print('setup: ready:', course_lib.describe_device())"
