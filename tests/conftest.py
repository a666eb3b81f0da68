"""Shared test configuration: markers, GPU auto-skip, fast-failing mutants, a dev profile."""

from __future__ import annotations

import os
import sys

# nbgrader runs `alembic` from PATH; tests run `nbgrader` and `autograde`: put this
# interpreter's bin first, so `.venv/bin/python -m pytest` works without activating.
os.environ["PATH"] = (
    os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)

# Must be set before autograder.profiles is imported: mutants fail without shrinking.
os.environ.setdefault("AUTOGRADER_SHRINK", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Tests of course_lib (not grading) use a small, derandomized profile of their own.
settings.register_profile(
    "dev", max_examples=25, deadline=None, derandomize=True, database=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
