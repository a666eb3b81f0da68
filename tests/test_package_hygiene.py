"""Package-wide hygiene that grading depends on."""

from __future__ import annotations

import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("course_lib/**/*.py"), *ROOT.glob("autograder/**/*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_compiles_without_warnings(path: pathlib.Path) -> None:
    """A SyntaxWarning at import (an invalid escape in a docstring, say) goes to stderr, and
    nbgrader scores a grade cell that writes to stderr 0 (Python >= 3.12 shows them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")
