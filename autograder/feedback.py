"""One cause, one message: a task's feedback after its properties ran.

One bug usually fails several properties of a task. Each property's own advice is written for
the case where it is the only one failing, so after the first diagnosis the others would point
elsewhere (a mean instead of a sum in ``e_step`` is reported against the log-likelihood, then
against "the -(1/2) log det Sigma_k term" by the affine-invariance check). :func:`one_cause`
rewrites the results of one grading run, task by task:

- The first wrong result whose feedback names a known bug (a
  :class:`~autograder.compare.KnownBug` hint: the wrong result equals what that bug computes)
  sets the task's cause. A later wrong result that names no known bug, or the same one, keeps
  only what is wrong (its :class:`~autograder.core.Failure` headline) and says it has the same
  cause as that property; one that names a different known bug keeps its message (a second
  diagnosed bug). Errors the code raised, timeouts and crashes are never rewritten.
- The "Smallest failing input / Rebuild it in one line" block appears once per task, with the
  first failure that has one; a later failure omits it when it has the same input or the same
  cause, and otherwise names its own input on one line.

Scores are never touched: only the feedback text.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

from autograder import compare
from autograder.compare import KnownBug
from autograder.core import INPUT_LINE, CheckResult

__all__ = ["OTHER_INPUT_LINE", "named_bugs", "one_cause", "same_cause"]

#: What precedes a later failure's input when it differs from the one already shown.
OTHER_INPUT_LINE = "\n  Failing input of this check: "


@functools.cache
def _pattern(bug: KnownBug) -> re.Pattern[str]:
    return bug.pattern()


def named_bugs(text: str) -> set[KnownBug]:
    """The known bugs whose hint (placeholders filled in any way) appears in ``text``."""
    return {bug for bug in compare.KNOWN_BUGS if _pattern(bug).search(text)}


def _named_hints(text: str) -> set[str]:
    """The hints named in ``text`` (several families' mutants can share one hint's text)."""
    return {bug.hint for bug in named_bugs(text)}


def same_cause(headline: str, first: CheckResult) -> str:
    """The message of a later failure explained by ``first``'s diagnosis."""
    said = f'same cause as above ("{first.name}"): fix that first'
    return f"{headline}: {said}" if headline else f"this check fails too, {said}"


def one_cause(results: Sequence[CheckResult]) -> list[CheckResult]:
    """``results`` (in the order they ran, any number of tasks) with one message per cause."""
    causes: dict[str, tuple[CheckResult, set[str]]] = {}
    inputs_shown: dict[str, str] = {}
    rewritten = []
    for result in results:
        if result.passed or not result.feedback:
            rewritten.append(result)
            continue
        message, explained = result.message, False
        if result.wrong_result:
            named = _named_hints(message)
            cause = causes.get(result.task)
            if cause is None:
                if named:
                    causes[result.task] = (result, named)
            elif not named or named & cause[1]:
                message, explained = same_cause(result.headline, cause[0]), True
        lines = _input_lines(result, inputs_shown, explained)
        rewritten.append(dataclasses.replace(result, feedback=message + lines))
    return rewritten


def _input_lines(result: CheckResult, shown: dict[str, str], explained: bool) -> str:
    """The failing-input block the first time a task shows one; later, one line for another
    input of a failure the cause above does not explain, else nothing."""
    if not result.inputs:
        return ""
    first = shown.get(result.task)
    if first is None:
        shown[result.task] = result.inputs
        return INPUT_LINE + result.inputs
    if explained or first == result.inputs:
        return ""
    return OTHER_INPUT_LINE + result.inputs.split("\n", 1)[0]
