"""Zero results: the one builder of a check, or a whole submission, that scores nothing.

Every path that grades a submission without its checks running uses it: what the judge
refuses before starting a worker (a symbolic link, an unreadable notebook, a notebook that
timed out or tried a forbidden thing), and what an executor records when grading itself was
cut short (the local pool's judge that died twice, ``crashed``; the Dask worker killed on
every try, ``killed_worker``). A zero check keeps the property's points as its maximum, so
the gradebook's totals do not depend on why a submission scored nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from autograder.core import CheckResult, Property
from autograder.flags import Flag
from autograder.grader.fingerprint import notebook_digest
from autograder.grader.report import Outcome
from autograder.grader.submissions import Submission
from autograder.tasks import properties, tasks_of

# The judge builds its checks from these zeros: no import of it at run time (no cycle).
if TYPE_CHECKING:
    from autograder.grader.judge import JudgeConfig

__all__ = ["all_properties", "zero_check", "zero_outcome"]


def all_properties(assignment: str) -> list[Property]:
    """Every property of ``assignment``, in grading order (its tasks', each task's own)."""
    return [prop for task in tasks_of(assignment) for prop in properties(task.id)]


def zero_check(prop: Property, feedback: str, flags: Iterable[Flag]) -> CheckResult:
    """``prop`` scored zero of its points, not passed, with ``feedback`` and ``flags``."""
    return CheckResult(
        prop.task,
        prop.name,
        prop.tier,
        0.0,
        prop.points,
        False,
        feedback,
        0.0,
        list(flags),
    )


def zero_outcome(
    submission: Submission, config: JudgeConfig, flag: Flag, message: str
) -> Outcome:
    """Zero on every check of ``submission``, each with ``message`` and ``flag``: for what
    the submission caused before any check could run, or while grading itself was cut short
    (a killed judge, a killed Dask worker)."""
    outcome = Outcome(
        student=submission.student,
        assignment=submission.assignment,
        notebook_sha256=notebook_digest(submission),
        grader=config.fingerprints.get(submission.assignment, ""),
        flags=[flag],
        hidden_visibility=config.hidden_visibility,
    )
    outcome.tests = [
        zero_check(p, message, [flag]) for p in all_properties(submission.assignment)
    ]
    return outcome
