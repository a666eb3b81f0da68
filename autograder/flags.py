"""The flags a graded check or submission can carry: one vocabulary for everything that
writes or reads them (the engine, the judge, the executors, results.json and its readers).

A flag says why points were lost other than by a wrong answer, or what a human should look
at; results.json lists them per test (``tags``) and per submission (``extra_data.flags``).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["FLAGS", "Flag"]

Flag = Literal[
    # the student's code
    "timeout",  # a check, a cell or the whole notebook ran past its time limit
    "crashed",  # the worker died, or the judge died twice on this submission
    "forbidden",  # an attempt on the secrets or the grader: zero for the task
    "refused",  # a resource the sandbox does not offer (network, ctypes, many processes)
    "memory",  # past the worker's or the judge's memory limit
    "processes",  # past the process limit (a fork bomb, contained)
    "malformed_result",  # a result the judge could not read (a forged or tampered payload)
    # the submission's files
    "symlink",  # a notebook or folder that is a symbolic link: never followed
    "invalid_notebook",  # missing, too large, not JSON or not a notebook
    # grading itself
    "grader_error",  # a check the grader could not run: the instructor must look
    "killed_worker",  # grading killed the Dask worker on every try
]
#: Every :data:`Flag`.
FLAGS: frozenset[str] = frozenset(get_args(Flag))
