"""A tiny test-only assignment, ``00_fake``, so grader tests run in seconds.

Loaded with ``autograde grade --plugin tests.test_grader.fakecourse`` (public: the worker
loads it too) and ``--plugin tests.test_grader.fakecourse.hidden`` (judge only). Two tasks:
``add_one(x) -> x + 1`` for a float64 array and ``double(t) -> 2 t`` for a tensor, each with
a public and a hidden property, one point each.
"""

from __future__ import annotations

import sys

from autograder.tasks import ASSIGNMENTS, TASKS, Task

ASSIGNMENT = "00_fake"
ASSIGNMENTS.setdefault(ASSIGNMENT, "fake")
for _task, _points in (("add_one", 2.0), ("double", 2.0)):
    TASKS.setdefault(_task, Task(_task, ASSIGNMENT, _points))

from tests.test_grader.fakecourse import checks  # noqa: E402 - after the registry entries

sys.modules.setdefault("autograder.checks.fake", checks)
