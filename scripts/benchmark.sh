#!/usr/bin/env bash
# The benchmark command (not part of the test run): Keras/torch step-time ratios of the
# lab models, a profile of the worst ones, and optionally the grading cost per lab.
#
#   bash scripts/benchmark.sh                    # step times + profiles -> build/benchmarks/
#   BENCHMARK_GRADE=1 bash scripts/benchmark.sh  # also grade the lab solutions (1-3 min each)
#   bash scripts/benchmark.sh --models lab3_dense_vae --how fit,train_function   # any options
#
# Single-threaded on purpose (shared machines): both sides use 1 torch thread.
# It runs in the caller's folder, so that relative paths in the options (--second-evaluator
# FILES, --grading-dir DIR, BENCHMARK_OUT) mean what they mean there.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
source "$REPO/scripts/env.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
OUT="${BENCHMARK_OUT:-$REPO/build/benchmarks}"
mkdir -p "$OUT"
if [ $# -gt 0 ]; then
  exec python -m benchmarks --out "$OUT/benchmarks.md" --json "$OUT/benchmarks.json" "$@"
fi
options=(--how fit,train_function --profile lab3_dense_vae,lab1_cnn)
if [ "${BENCHMARK_GRADE:-0}" = "1" ]; then
  options+=(--grade lab1,lab2,lab3,lab4,lab5 --grading-dir "$OUT/grading")
fi
python -m benchmarks "${options[@]}" --out "$OUT/benchmarks.md" --json "$OUT/benchmarks.json"
echo "Benchmark report: $OUT/benchmarks.md"
