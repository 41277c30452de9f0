"""Benchmarks of the course: training step time (Keras vs plain PyTorch) and grading cost.

Run them with `scripts/benchmark.sh` (or `python -m benchmarks --help`); they are not
part of the default test run.
"""
