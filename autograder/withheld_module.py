"""Stand-in for a course module that is withheld while a lab is graded.

The grading sandbox binds this file read-only over each course module whose code a lab
asks students to write themselves (see `autograder.sandbox.launcher_argv(hidden=...)`).
Importing it fails on purpose, so a submission cannot pass by importing the reference
solution instead of defining the graded pieces in the notebook.
"""

raise ImportError(
    f"The course module {__name__!r} is withheld while this lab is graded: the graded "
    "functions and classes must be the student's own. Define them in your notebook "
    "instead of importing them from the course package."
)
