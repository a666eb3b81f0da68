"""Grading in a notebook: one task's checks from a grade cell (:func:`grade`), in-process.

:func:`run_task` is the same without printing (scripts and tests); the CI grader grades whole
submissions in a sandbox instead (:mod:`autograder.grader`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from autograder.core import CheckResult, run_property
from autograder.feedback import one_cause
from autograder.randomness import seeded_globals
from autograder.subject import LocalSubject, Subject
from autograder.tasks import TASKS, hidden_available, properties

__all__ = ["format_report", "grade", "run_task", "validate_preview", "validating"]

_TIERS = {"public": ("public",), "hidden": ("hidden",), "all": ("public", "hidden")}


def validating() -> bool:
    """True while nbgrader's Validate runs the notebook (toolbar button or ``nbgrader validate``).

    nbgrader 0.9.6 runs Validate with ``NBGRADER_EXECUTION=validate`` (``validator.py``) and
    autograding with ``NBGRADER_EXECUTION=autograde``; an interactive kernel has neither.
    """
    return os.environ.get("NBGRADER_EXECUTION") == "validate"


def validate_preview(task_id: str, results: list[CheckResult]) -> float:
    """What a public-only grade cell is worth under Validate: the task's points × pass fraction.

    Validate compares a grade cell's value with the cell's points, which are the *task's*
    points, while a student's release runs only the public checks (worth less). Scaling
    :math:`s = P_{\\text{task}} \\cdot e/m` (``e`` public points earned of ``m``) gives exactly
    ``P_task`` when every public check passes (``e/m`` is exactly 1.0 in floating point) and
    less whenever one fails, so Validate passes a correct notebook and names a wrong cell.
    Autograding never uses this: its score stays exact.
    """
    possible = sum(r.max_score for r in results)
    earned = sum(r.score for r in results)
    if possible <= 0:
        return 0.0
    return float(TASKS[task_id].points * earned / possible)


def run_task(
    task_id: str, subject: Subject, tiers: tuple[str, ...] = ("public", "hidden")
) -> list[CheckResult]:
    """Run every property of ``task_id`` in ``tiers`` against ``subject``, one message per
    cause (:func:`autograder.feedback.one_cause`)."""
    return one_cause(
        [run_property(prop, subject) for prop in properties(task_id, tiers)]
    )


def format_report(task_id: str, results: list[CheckResult], tier_label: str) -> str:
    """A short, plain-text report: one line per property, feedback under each failure."""
    earned = sum(r.score for r in results)
    possible = sum(r.max_score for r in results)
    lines = [f"{task_id} — {tier_label} checks: {earned:g} / {possible:g} points"]
    shown: set[str] = set()  # an error your code raised is printed once per task
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        lines.append(f"  [{mark}] {r.name}  ({r.score:g}/{r.max_score:g})")
        if not r.passed and r.feedback:
            first = r.feedback.splitlines()[0]
            if first in shown:
                lines.append("         the same error as above")
                continue
            shown.add(first)
            lines.extend("         " + line for line in r.feedback.splitlines())
    return "\n".join(lines)


def grade(
    task_id: str,
    impl: Any = None,
    *,
    tier: str = "public",
    namespace: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> float:
    """Check one task from a notebook; print feedback to stdout and return the points earned.

    A grade cell ends with the returned number as its last expression, which nbgrader reads
    as partial credit. Nothing is written to stderr.

    Args:
        task_id: A task from ``autograder.tasks.TASKS`` (the function or class name).
        impl: The student's function or class; defaults to ``namespace[task_id]``.
        tier: ``"public"`` (closed forms and invariants, shipped to students), ``"hidden"``
            (instructor side only) or ``"all"``.
        namespace: Where to find the student's other names; defaults to the caller's globals.
        quiet: Print nothing.

    Returns:
        Points earned on the properties that ran. Under nbgrader's Validate only (see
        :func:`validating`), the public tier returns :func:`validate_preview` instead, and the
        hidden tier (instructor's source notebooks) returns its points minus that preview's
        excess over the exact public points, so ``public + hidden`` stays exact there too.
    """
    if task_id not in TASKS:
        raise KeyError(f"unknown task {task_id!r}; known: {', '.join(TASKS)}")
    if tier not in _TIERS:
        raise ValueError(f"tier must be one of {', '.join(_TIERS)}, got {tier!r}")
    if namespace is None:
        frame = inspect.currentframe()
        namespace = (
            frame.f_back.f_globals
            if frame is not None and frame.f_back is not None
            else {}
        )
    names = dict(namespace)
    if impl is not None:
        names[task_id] = impl
    tiers = _TIERS[tier]
    if "hidden" in tiers and not hidden_available():
        if not quiet:
            print(f"{task_id}: hidden checks run when your notebook is graded.")
        tiers = tuple(t for t in tiers if t != "hidden")
        if not tiers:
            return 0.0
    with seeded_globals():
        results = run_task(task_id, LocalSubject(names), tiers)
    earned = float(sum(r.score for r in results))
    if not quiet:
        print(format_report(task_id, results, "/".join(tiers)))
        if tiers == ("public",):
            remaining = TASKS[task_id].points - sum(r.max_score for r in results)
            if remaining > 0:
                print(
                    f"  (+{remaining:g} more points from hidden checks when your notebook is graded)"
                )
    if validating() and tiers == ("public",):
        preview = validate_preview(task_id, results)
        if not quiet:
            print(
                f"  Validate counts this cell as {preview:g} / {TASKS[task_id].points:g}: "
                "the task's points times the share of public checks passed."
            )
        return preview
    if validating() and tiers == ("hidden",):
        # The source's grade cell adds this to the public tier's preview: undo its excess.
        with seeded_globals():
            public = run_task(task_id, LocalSubject(names), ("public",))
        excess = validate_preview(task_id, public) - sum(r.score for r in public)
        return earned - float(excess)
    return earned
