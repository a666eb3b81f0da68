"""Hypothesis settings for grading: deterministic, no example database, no deadlines.

Every student sees the same examples (``derandomize=True``), a slow submission is not a
failure (``deadline=None``), and health checks never fail a student for the grader's sake.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, settings

__all__ = ["EXACT", "GRADING", "STATISTICAL"]

_BASE: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "report_multiple_bugs": False,
    "print_blob": False,
    "suppress_health_check": list(HealthCheck),
}

# The test suite sets AUTOGRADER_SHRINK=0: mutants then fail fast; grading always shrinks
# so a student sees the smallest counterexample.
if os.environ.get("AUTOGRADER_SHRINK", "1") == "0":
    _BASE["phases"] = [Phase.explicit, Phase.generate]

#: Deterministic properties (common random numbers, exact identities).
GRADING = settings(max_examples=30, **_BASE)

#: Cheaper deterministic properties may ask for more examples.
EXACT = settings(max_examples=60, **_BASE)

#: Statistical properties: a fixed number of executions (for the union bound in their
#: stated false-failure rate) and no shrinking, which would hunt for extreme seeds.
STATISTICAL = settings(
    max_examples=5, **{**_BASE, "phases": [Phase.explicit, Phase.generate]}
)
