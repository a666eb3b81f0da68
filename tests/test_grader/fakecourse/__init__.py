"""A tiny test-only assignment, ``00_fake``, so grader tests run in seconds.

Loaded with ``autograde grade --plugin tests.test_grader.fakecourse`` (public: the worker
loads it too) and ``--plugin tests.test_grader.fakecourse.hidden`` (judge only). Two tasks:
``add_one(x) -> x + 1`` for a float64 array and ``double(t) -> 2 t`` for a tensor, each with
a public and a hidden property, one point each.
"""

from __future__ import annotations

from autograder.tasks import register_assignment

ASSIGNMENT = "00_fake"
register_assignment(
    ASSIGNMENT,
    "fake",
    {"add_one": 2.0, "double": 2.0},
    checks="tests.test_grader.fakecourse.checks",
)

# Imported now, so a worker that preloads this plugin has the probes before its sandbox.
from tests.test_grader.fakecourse import checks  # noqa: E402, F401
