"""The corpus that tests the checks: correct variants and wrong-on-purpose implementations.

One module per assignment (``tests/corpus/em.py`` ...). Each registers implementations with
decorators::

    @variant("e_step")
    def e_step_with_scipy_logsumexp(X, weights, means, covs): ...   # must get full marks

    @mutant("e_step")
    def e_step_normalises_over_data(X, weights, means, covs): ...   # must lose points

    equivalent("e_step", "e_step_cauchy_tan_pi_u", "tan has period pi: same law")  # listed, not dropped

A mutant is named after its bug. Other tasks of the assignment resolve to the reference, so
a mutant is judged only on its own task.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autograder.core import CheckResult
from autograder.grade import run_task
from autograder.randomness import seed_globals
from autograder.subject import LocalSubject
from autograder.tasks import COURSE_ASSIGNMENTS, TASKS

MODULES = tuple(COURSE_ASSIGNMENTS.values())  # the course's, never a plugin's


@dataclass(frozen=True)
class Entry:
    """One implementation in the corpus."""

    module: str
    task: str
    name: str
    kind: str  # "variant" | "mutant"
    obj: Any

    @property
    def id(self) -> str:
        return f"{self.task}/{self.name}"


_ENTRIES: list[Entry] = []
EQUIVALENT: dict[str, tuple[str, str]] = {}  # name -> (task, reason)


def _register(kind: str, task: str) -> Callable[[Any], Any]:
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}")

    def decorate(obj: Any) -> Any:
        module = obj.__module__.rsplit(".", 1)[-1]
        _ENTRIES.append(Entry(module, task, obj.__name__, kind, obj))
        return obj

    return decorate


def variant(task: str) -> Callable[[Any], Any]:
    """Register a correct implementation of ``task`` (must get full marks)."""
    return _register("variant", task)


def mutant(task: str) -> Callable[[Any], Any]:
    """Register a wrong implementation of ``task``, named after its bug (must lose points)."""
    return _register("mutant", task)


def equivalent(task: str, name: str, reason: str) -> None:
    """Record a mutant left out because it is equivalent or statistically invisible."""
    EQUIVALENT[name] = (task, reason)


def load(modules: tuple[str, ...] = MODULES) -> list[Entry]:
    """Import the corpus modules and return their entries, references included as variants."""
    for module in modules:
        importlib.import_module(f"tests.corpus.{module}")
    reference_entries = []
    for module in modules:
        ref = importlib.import_module(f"course_lib.reference.{module}")
        for task in (t for t in TASKS.values() if t.module == module):
            reference_entries.append(
                Entry(module, task.id, "reference", "variant", getattr(ref, task.id))
            )
    return reference_entries + [e for e in _ENTRIES if e.module in modules]


def namespace(entry: Entry) -> dict[str, Any]:
    """The reference names of the entry's assignment, with the entry in its task's place."""
    ref = importlib.import_module(f"course_lib.reference.{entry.module}")
    names = {name: getattr(ref, name) for name in getattr(ref, "__all__", [])}
    names[entry.task] = entry.obj
    return names


_GRADED: dict[str, list[CheckResult]] = {}


def grade(entry: Entry) -> list[CheckResult]:
    """Every property (both tiers) of the entry's task, run once per test session.

    ``tests/test_autograder/test_corpus.py`` and ``test_known_bugs.py`` read the same
    results, so the corpus is graded once however many tests look at it.
    """
    key = f"{entry.module}/{entry.id}"
    if key not in _GRADED:
        # As the CI grader's worker starts each notebook (worker._warm_up): a mutant that draws
        # unseeded randomness gets the same feedback whatever ran before it in this process.
        seed_globals()
        _GRADED[key] = run_task(
            entry.task, LocalSubject(namespace(entry)), ("public", "hidden")
        )
    return _GRADED[key]
