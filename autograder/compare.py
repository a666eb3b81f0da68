"""Comparisons whose failure messages tell a student what to look at.

Also the judge's side of two shared contracts: :func:`expect_no_side_effects` turns a probe's
:class:`~autograder.probes.SideEffects` into feedback, and :class:`KnownBug` /
:func:`first_known_bug` name a bug when a wrong result equals what a catalogued wrong formula
gives (every catalogued hint names the corpus mutant that has the bug; a test runs each one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from autograder.core import Failure
from autograder.probes import SideEffects

__all__ = [
    "KNOWN_BUGS",
    "KnownBug",
    "as_numpy",
    "assert_close",
    "assert_shape",
    "close",
    "expect_no_graph",
    "expect_no_side_effects",
    "expect_untouched",
    "Catalogue",
    "all_known_bugs",
    "first_known_bug",
    "hint_for",
    "present",
    "same_values",
]

T = TypeVar("T")

#: Every :class:`KnownBug` ever built, in order (``tests/test_autograder/test_known_bugs.py``
#: checks that each hint is produced by the corpus mutant it names).
KNOWN_BUGS: list[KnownBug] = []


@dataclass(frozen=True)
class KnownBug:
    """A wrong formula students write, the hint that names it, and the mutant that has it.

    Attributes:
        mutant: ``"<task>/<name>"`` of the ``tests/corpus`` mutant with this bug; its
            feedback must contain the hint.
        hint: What the student reads; may hold ``{name}`` placeholders filled by :meth:`text`.
    """

    mutant: str
    hint: str

    def __post_init__(self) -> None:
        KNOWN_BUGS.append(self)

    def text(self, **values: Any) -> str:
        """The hint with its ``{name}`` placeholders filled in from ``values``."""
        text = self.hint
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    def pattern(self) -> re.Pattern[str]:
        """A regular expression matching the hint whatever its placeholders were filled with."""
        pieces = _PLACEHOLDER.split(self.hint)
        return re.compile(".+?".join(re.escape(piece) for piece in pieces), re.DOTALL)


_PLACEHOLDER = re.compile(r"\{[A-Za-z_]\w*\}")


def present(value: T | None, what: str) -> T:
    """``value``, or a :class:`Failure` saying ``what`` is missing (an optional probe field)."""
    if value is None:
        raise Failure(what)
    return value


#: A catalogue of known bugs: each with what it would return, computed from a context the
#: check builds (the inputs, the right answer, intermediate terms).
Catalogue = Sequence[tuple[KnownBug, Callable[..., Any]]]


def _known_bugs(
    got: Any,
    catalogue: Catalogue,
    matches: Callable[[Any, Any], bool],
    context: tuple[Any, ...],
) -> Iterator[KnownBug]:
    """The known bugs whose wrong result ``matches`` ``got``, in catalogue order, computed
    lazily (so the first match costs only the candidates before it)."""
    for bug, wrong in catalogue:
        try:
            with np.errstate(all="ignore"):
                candidate = wrong(*context)
            hit = matches(got, candidate)
        except (
            Exception
        ):  # a diagnostic must never turn a wrong answer into a grader error
            continue
        if hit:
            yield bug


def first_known_bug(
    got: Any,
    catalogue: Catalogue,
    matches: Callable[[Any, Any], bool],
    *context: Any,
) -> KnownBug | None:
    """The first known bug whose wrong result ``matches`` what the student returned.

    Args:
        got: The student's result.
        catalogue: ``(bug, wrong)`` pairs in order of preference; ``wrong(*context)`` computes
            what the bug would return (a candidate that cannot be computed is skipped).
        matches: ``matches(got, candidate)``: whether the student's result is the bug's.
        context: What ``wrong`` needs.
    """
    return next(_known_bugs(got, catalogue, matches, context), None)


def all_known_bugs(
    got: Any,
    catalogue: Catalogue,
    matches: Callable[[Any, Any], bool],
    *context: Any,
) -> list[KnownBug]:
    """Every known bug whose wrong result ``matches`` ``got`` (two bugs can coincide)."""
    return list(_known_bugs(got, catalogue, matches, context))


def same_values(
    got: Any,
    candidate: Any,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    equal_nan: bool = False,
    cast: bool = False,
    exact_zeros: bool = False,
) -> bool:
    """The known-bug matcher: whether ``got`` is what a catalogued wrong formula computes.

    Tensors are compared as tensors (``torch.allclose``), anything else as numpy arrays
    (``np.allclose``); the shapes must agree. A check module binds its tolerances once
    (``functools.partial``) and hands the result to :func:`first_known_bug` / :func:`hint_for`.

    Args:
        got: The student's result.
        candidate: What the bug computes.
        rtol, atol: The tolerance (a bug differs by O(1); round-off is far below).
        equal_nan: NaN where the formula gives NaN counts as the same value (an overflow
            that turns into ``0 * inf`` is that formula's signature).
        cast: Compare ``got`` in the candidate's dtype (a tensor ``got`` of another dtype
            otherwise cannot match: ``torch.allclose`` raises and the candidate is skipped).
        exact_zeros: Where the bug gives exactly 0, so must ``got`` (a hard assignment's
            zeros are exact; a result merely near one-hot is another bug).

    >>> same_values(np.array([1.0, 0.0]), np.array([1.0 + 1e-9, 0.0]))
    True
    >>> same_values(np.array([1.0, 1e-12]), np.array([1.0, 0.0]), exact_zeros=True)
    False
    """
    if isinstance(candidate, torch.Tensor):
        return (
            candidate.shape == got.shape
            and bool(
                torch.allclose(
                    got.to(candidate.dtype) if cast else got,
                    candidate,
                    rtol=rtol,
                    atol=atol,
                    equal_nan=equal_nan,
                )
            )
            and (not exact_zeros or bool((got[candidate == 0] == 0).all()))
        )
    got, candidate = np.asarray(got), np.asarray(candidate)
    return (
        got.shape == candidate.shape
        and bool(np.allclose(got, candidate, rtol=rtol, atol=atol, equal_nan=equal_nan))
        and (not exact_zeros or bool(np.all(got[candidate == 0] == 0)))
    )


def hint_for(
    got: Any,
    catalogue: Catalogue,
    matches: Callable[[Any, Any], bool],
    *context: Any,
) -> str:
    """The hint of :func:`first_known_bug`, or ``""`` when no known bug matches."""
    bug = first_known_bug(got, catalogue, matches, *context)
    return "" if bug is None else bug.hint


def expect_no_side_effects(
    task: str,
    effects: SideEffects,
    names: Sequence[str],
    *,
    mutated: str = "compute new tensors instead",
    grad_left: str = "use torch.autograd.grad instead of .backward()",
    flag_changed: str = "work on copies, p.detach().clone().requires_grad_(True)",
) -> None:
    """Fail when a probe saw ``task`` modify, leave ``.grad`` on, or re-flag its arguments.

    Args:
        task: The student's function.
        effects: What the probe reported (positions into ``names``).
        names: The argument names, by position, as the student reads them.
        mutated, grad_left, flag_changed: What to do instead, for each kind of side effect.
    """
    for positions, what, advice in (
        (effects.get("mutated", []), "modified", mutated),
        (effects.get("grad_left", []), "left .grad on", grad_left),
        (effects.get("flag_changed", []), "changed requires_grad of", flag_changed),
    ):
        if positions:
            which = ", ".join(
                f"`{names[i]}`" if i < len(names) else f"argument {i}"
                for i in positions
            )
            in_place = " in place" if what == "modified" else ""
            raise Failure(f"{task} {what} {which}{in_place}: {advice}")


def expect_untouched(
    out: SideEffects,
    name: str,
    names: Sequence[str] | None = None,
    *,
    arg_names: Mapping[str, Sequence[str]] | None = None,
    then: Sequence[str] = (),
    mutated: str = "compute new tensors instead",
    grad_left: str = "use torch.autograd.grad instead of .backward()",
    flag_changed: str = "work on copies, p.detach().clone().requires_grad_(True)",
) -> None:
    """:func:`expect_no_side_effects` for the student's ``name``, its arguments named by
    ``names`` or, when omitted, by the check module's table ``arg_names[name]`` (then
    ``then``, arguments every call of the module adds). A check module binds its table and
    advice once::

        expect_untouched = partial(compare.expect_untouched, arg_names=ARG_NAMES, mutated=...)
        expect_untouched(out, "e_step")
    """
    if names is None:
        if arg_names is None:
            raise TypeError("expect_untouched needs names or arg_names")
        names = arg_names[name]
    expect_no_side_effects(
        name,
        out,
        (*names, *then),
        mutated=mutated,
        grad_left=grad_left,
        flag_changed=flag_changed,
    )


def expect_no_graph(
    task: str,
    positions: Sequence[int],
    names: Sequence[str],
    *,
    inputs: str,
    advice: str = "take gradients without create_graph=True, or .detach() what you return",
) -> None:
    """Fail when results of ``task`` at ``positions`` still hold an autograd graph.

    A gradient estimate is data for an optimiser step: one that still holds a graph
    (``requires_grad``, a ``grad_fn``, or a view of a tensor with one; see
    :func:`autograder.probes.holds_graph`) keeps every intermediate of the step alive, and
    memory grows with each step of a training loop.

    Args:
        task: The student's function.
        positions: Which results hold a graph (from :func:`autograder.probes.graph_held`).
        names: The results' names, by position.
        inputs: How the inputs were handed over (``"plain tensors"``, ``"leaves that require
            grad"``), so the student can reproduce it.
        advice: What to do instead.
    """
    if positions:
        which = " and ".join(
            names[i] if i < len(names) else f"result {i}" for i in positions
        )
        raise Failure(
            f"{task} returned {which} still attached to an autograd graph (requires_grad or "
            f"grad_fn) when called with {inputs}: a gradient that holds a graph keeps the whole "
            f"step alive in a training loop; {advice}"
        )


def as_numpy(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a :class:`Failure` naming ``what``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Failure(f"{what} should be numbers, got {type(value).__name__}") from None
    return array


def assert_shape(value: Any, shape: tuple[int, ...], what: str, hint: str = "") -> None:
    """Fail unless ``value`` has exactly ``shape``."""
    actual = tuple(getattr(value, "shape", ()))
    if actual != tuple(shape):
        message = f"{what} has shape {actual}, expected {tuple(shape)}"
        raise Failure(message + (f": {hint}" if hint else ""))


def assert_close(
    actual: Any,
    expected: Any,
    what: str,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    hint: str = "",
) -> None:
    """Fail with the worst entry (index, got, expected) unless ``actual ≈ expected``.

    NaN or infinity where the expected value is finite gets its own message.
    """
    got = as_numpy(actual, what)
    want = as_numpy(expected, what)
    if got.shape != want.shape:
        shape = f"{what} has shape {got.shape}, expected {want.shape}"
        raise Failure(shape + (f": {hint}" if hint else ""), headline=shape)
    finite = np.isfinite(want)
    bad_finite = finite & ~np.isfinite(got)
    if bad_finite.any():
        index = tuple(int(i) for i in np.argwhere(bad_finite)[0])
        message = f"{what} is {got[index]} at index {index} where {want[index]:.6g} was expected"
        raise Failure(
            message + (f": {hint}" if hint else ": look for overflow, log(0) or 0/0"),
            headline=message,
        )
    error = np.where(finite, np.abs(got - want) - (atol + rtol * np.abs(want)), 0.0)
    if (error > 0).any() or (~finite & (got != want)).any():
        flat = (
            int(np.argmax(error))
            if (error > 0).any()
            else int(np.argmax(~finite & (got != want)))
        )
        index = (
            tuple(int(i) for i in np.unravel_index(flat, want.shape))
            if want.shape
            else ()
        )
        location = f" at index {index}" if index else ""
        message = f"{what} is wrong{location}: got {got[index]:.6g}, expected {want[index]:.6g}"
        raise Failure(message + (f". {hint}" if hint else ""), headline=message)


def close(
    got: Any,
    want: Any,
    what: str,
    hint: Callable[[], str] | str = "",
    *,
    rtol: float,
    atol: float,
    diagnose: Callable[[Any, Any, Callable[[], str] | str], str] | None = None,
    instead: str | None = None,
) -> None:
    """:func:`assert_close`, building the (costly) hint only when it fails.

    Args:
        hint: The advice, or a function that builds it (called only on a failure).
        diagnose: ``diagnose(got, want, hint)`` builds the advice instead (a check module's
            own reading of a near miss, e.g. lost precision); it must never raise.
        instead: When given, the advice whatever the values (extreme inputs whose hints
            presume the ordinary case right, when it is not).
    """
    try:
        assert_close(got, want, what, rtol=rtol, atol=atol)
    except Failure:
        if instead is not None:
            text = instead
        elif diagnose is not None:
            text = diagnose(got, want, hint)
        else:
            text = hint if isinstance(hint, str) else hint()
        assert_close(got, want, what, rtol=rtol, atol=atol, hint=text)
