"""The one start-up step of `python jobs/X.py`, imported first by every job run as a script.

Python puts the script's directory (jobs/) first on sys.path, where jobs/train.py,
jobs/curate.py and jobs/synth.py would shadow the packages of the same name, and Ray
copies the driver's path onto every worker (whose actors would then fail to unpickle).
Drop jobs/ and put the repository root first. Then check that this interpreter has
raymill's dependencies: under `ray job submit` the entrypoint's `python` is whichever one
is first on the PATH that `ray start` ran with, often not the project's venv.
The installed commands (`raymill curate ...`, `raymill-train ...`) need none of this.
"""
from __future__ import annotations

import importlib.util
import os
import sys

JOBS_DIR = os.path.dirname(os.path.realpath(__file__))
REPO_ROOT = os.path.dirname(JOBS_DIR)

sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != JOBS_DIR]
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# What every job imports before it can say anything useful itself.
REQUIRED = ("yaml", "pyarrow", "ray")
missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
if missing:
    print(f"error: {sys.executable} lacks raymill's dependencies ({', '.join(missing)}); run the job with the "
          "project's interpreter (e.g. .venv/bin/python, or activate the venv before `ray start`) "
          "or install raymill into this one: pip install -e .", file=sys.stderr)
    sys.exit(2)
