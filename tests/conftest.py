"""Test setup: the torch backend before keras, the real data, the fast profile."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("COURSE_PROFILE", "fast")
os.environ.setdefault("MPLBACKEND", "Agg")
if not os.environ.get("COURSE_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["COURSE_DATA_DIR"] = str(SHARED_DATA)

import course_lib  # noqa: E402,F401  (selects the torch backend before any test imports keras)
