"""Every correct implementation gets full marks; every mutant loses points on its task."""

from __future__ import annotations

import pytest

from autograder.core import CheckResult
from autograder.tasks import COURSE_ASSIGNMENTS, TASKS
from tests import corpus

ENTRIES = corpus.load()
SLOW_MODULES = {"vae"}


def _params(kind: str) -> list[object]:
    marks = lambda e: [pytest.mark.slow] if e.module in SLOW_MODULES else []  # noqa: E731
    return [pytest.param(e, id=e.id, marks=marks(e)) for e in ENTRIES if e.kind == kind]


def _grade(entry: corpus.Entry) -> list[CheckResult]:
    return corpus.grade(entry)


@pytest.mark.parametrize("entry", _params("variant"))
def test_correct_implementation_gets_full_marks(entry: corpus.Entry) -> None:
    results = _grade(entry)
    failed = [f"{r.name}: {r.feedback}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert sum(r.score for r in results) == TASKS[entry.task].points


@pytest.mark.parametrize("entry", _params("mutant"))
def test_mutant_loses_points(entry: corpus.Entry) -> None:
    results = _grade(entry)
    assert sum(r.score for r in results) < TASKS[entry.task].points, (
        f"{entry.name} got full marks"
    )
    failed = [r for r in results if not r.passed]
    assert all(r.feedback.strip() for r in failed), "a failed property gave no feedback"
    assert not any("grader_error" in r.flags for r in failed), [
        r.feedback for r in failed
    ]


def test_every_task_has_variants_and_mutants() -> None:
    # The course's tasks: a plugin (the grader tests' fake course) may have registered more
    # in this process.
    for task in (t for t, v in TASKS.items() if v.assignment in COURSE_ASSIGNMENTS):
        kinds = [e.kind for e in ENTRIES if e.task == task and e.name != "reference"]
        assert kinds.count("variant") >= 3, f"{task}: fewer than 3 correct variants"
        assert kinds.count("mutant") >= 5, f"{task}: fewer than 5 mutants"
