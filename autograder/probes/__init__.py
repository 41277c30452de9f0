"""Probes: code that runs inside the submission's kernel after the notebook.

A probe calls the student's objects on inputs chosen by the grader and saves the raw
results (arrays, small facts). It decides nothing: the checks in `autograder/checks`
judge those results in the grader's own process, where student code cannot reach.
"""
