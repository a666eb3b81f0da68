"""Every catalogued known-bug hint is produced by the corpus mutant it names.

A :class:`~autograder.compare.KnownBug` names the ``tests/corpus`` mutant that has its bug;
grading that mutant must show the hint (with its placeholders filled in) in the feedback of
some failed property. A hint no mutant reaches is dead code; a renamed mutant breaks here.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest

from autograder import compare
from autograder import feedback as feedback_module
from autograder.tasks import COURSE_ASSIGNMENTS
from tests import corpus

for _module in COURSE_ASSIGNMENTS.values():
    importlib.import_module(f"autograder.checks.{_module}")
    importlib.import_module(f"autograder.hidden.{_module}")

MUTANTS = {e.id: e for e in corpus.load() if e.kind == "mutant"}
BY_MUTANT: dict[str, list[compare.KnownBug]] = defaultdict(list)
for _bug in compare.KNOWN_BUGS:
    BY_MUTANT[_bug.mutant].append(_bug)
SLOW_MODULES = {"vae"}  # as in test_corpus.py: grading the VAE mutants takes minutes


def test_the_catalogue_is_not_empty_and_names_real_mutants() -> None:
    assert len(compare.KNOWN_BUGS) >= 50
    unknown = sorted(m for m in BY_MUTANT if m not in MUTANTS)
    assert not unknown, f"known bugs name mutants the corpus does not have: {unknown}"


def test_every_assignment_has_a_catalogue() -> None:
    modules = {MUTANTS[m].module for m in BY_MUTANT if m in MUTANTS}
    # The course's own: a plugin (the grader tests' fake course) may have registered more
    # in this process.
    assert modules == set(COURSE_ASSIGNMENTS.values())


def _params() -> list[object]:
    return [
        pytest.param(
            mutant,
            id=mutant,
            marks=[pytest.mark.slow] if MUTANTS[mutant].module in SLOW_MODULES else [],
        )
        for mutant in sorted(BY_MUTANT)
        if mutant in MUTANTS
    ]


@pytest.mark.parametrize("mutant", _params())
def test_hint_is_produced_by_its_mutant(mutant: str) -> None:
    feedback = "\n".join(
        r.feedback for r in corpus.grade(MUTANTS[mutant]) if not r.passed
    )
    missing = [
        bug.hint for bug in BY_MUTANT[mutant] if not bug.pattern().search(feedback)
    ]
    assert not missing, f"{mutant} never shows {missing}; its feedback:\n{feedback}"


def test_placeholders_are_filled_and_matched() -> None:
    bug = compare.KnownBug("test/only", "off by a factor of {S} = num_samples")
    compare.KNOWN_BUGS.remove(bug)
    assert bug.text(S=7) == "off by a factor of 7 = num_samples"
    assert bug.pattern().search("x: off by a factor of 12 = num_samples.")
    assert not bug.pattern().search("off by a factor of = num_samples")


#: Mutants whose feedback may name another mutant's known bug, because on the checks'
#: inputs both bugs compute the same result (``all_known_bugs`` would name both).
COINCIDE: dict[str, set[str]] = {}


def _all_mutants() -> list[object]:
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.slow] if entry.module in SLOW_MODULES else [],
        )
        for name, entry in sorted(MUTANTS.items())
    ]


@pytest.mark.parametrize("mutant", _all_mutants())
def test_one_cause_one_message(mutant: str) -> None:
    """Every hint a mutant is shown is its own bug's (one cause, one message), and the
    failing-input block appears once per task."""
    results = corpus.grade(MUTANTS[mutant])
    feedback = "\n".join(r.feedback for r in results if not r.passed)
    assert feedback.count("Smallest failing input") <= 1, feedback
    assert feedback.count("Rebuild it in one line") <= 1, feedback
    allowed = {mutant} | COINCIDE.get(mutant, set())
    own = {bug.hint for m in allowed for bug in BY_MUTANT.get(m, [])}
    task = MUTANTS[mutant].task
    # Only this task's catalogue entries: another task's hint found here is either the same
    # text (a shared catalogue, e.g. the sign and 1/S bugs of both score estimators) or a
    # phrase its wording happens to contain ("... has the wrong sign").
    wrong = sorted(
        bug.mutant
        for bug in feedback_module.named_bugs(feedback)
        if bug.mutant.split("/")[0] == task
        and bug.mutant not in allowed
        and bug.hint not in own
    )
    assert not wrong, f"{mutant} is told about {wrong}; its feedback:\n{feedback}"
