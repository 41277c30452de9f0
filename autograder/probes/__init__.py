"""Probes: the grader's code that questions a submission after its notebook has run.

The kernel only exports what the notebook produced (`export.py`: trained models, histories,
plain values). A fresh sandboxed probe process (`runtime.py`) then calls the student's
definitions and models on inputs chosen by the grader and returns raw results (arrays,
small facts). Probes decide nothing: the checks in `autograder/checks` judge those results
in the grader's own process.
"""
