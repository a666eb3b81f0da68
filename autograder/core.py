"""Properties, their registry, and running one property into a scored result.

A property is one graded statement about one task (``"rows of resp sum to 1"``), worth some
points, in the public or the hidden tier. Check modules declare them with :func:`check`::

    @check("e_step", "rows of the responsibilities sum to 1", points=1)
    @settings(GRADING)
    @given(problem=gmm_problems())
    def rows_sum_to_one(subject, problem):
        out = subject.call(probes.invoke_probe, "e_step", problem.X, ...)
        expect(..., "rows of resp sum to ... : did you normalise over the data axis?")

The tier comes from the module: ``autograder.checks.*`` is public, ``autograder.hidden.*``
is hidden (it may compare against ``course_lib.reference``; students never get it).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from autograder.flags import Flag
from autograder.secrets import is_secret
from autograder.subject import StudentError, Subject
from autograder.timelimit import time_limit

__all__ = [
    "CheckResult",
    "Failure",
    "Property",
    "Tier",
    "check",
    "expect",
    "registered",
    "run_property",
]

PropertyFn = Callable[[Subject], None]
#: Public properties ship with the assignment (``autograder.checks``); hidden ones run only at
#: grading time (``autograder.hidden``).
Tier = Literal["public", "hidden"]
_REGISTRY: dict[str, list[Property]] = {}


class Failure(AssertionError):
    """A property does not hold; the message is what the student reads.

    ``headline`` (optional) is the part of the message that states what is wrong, without the
    advice (``"resp is wrong at index (0, 1): got 0.3, expected 0.9"``): when an earlier
    failure of the task already named the cause, the feedback keeps only the headline
    (:func:`autograder.feedback.one_cause`).
    """

    def __init__(self, message: str = "", headline: str = "") -> None:
        super().__init__(message)
        self.headline = headline


class _PropertyTimeout(BaseException):
    """Raised from a signal handler; a BaseException so student ``except Exception`` can't eat it."""


class _ShrinkBudgetSpent(BaseException):
    """Ends Hypothesis's search for a smaller failing input after a fixed number of runs.

    A BaseException, so it leaves Hypothesis's engine (which catches only ``Exception``) and
    :func:`run_property` reports the last input that failed, with its own message.
    """


#: How many more runs of a property Hypothesis may spend, after the first failure, looking
#: for a smaller failing input. A count, not seconds: the score and the reported input are
#: then the same however busy the machine is (Hypothesis's own shrink limit is wall-clock).
SHRINK_RUNS = 40

#: What precedes the failing input in a property's feedback.
INPUT_LINE = "\n  Smallest failing input: "


@dataclass
class _Attempts:
    """What the runs of one property saw: the latest failure and the input that caused it."""

    failure: BaseException | None = None
    inputs: str = ""
    runs_after_failure: int = 0


_ATTEMPTS: list[_Attempts] = []  # a stack: the innermost run_property is last


def _round_trips(value: Any) -> bool:
    """True when ``repr(value)`` is the constructor call that rebuilds an equal value."""
    cls = type(value)
    try:
        rebuilt = eval(repr(value), {cls.__qualname__: cls})
    except Exception:
        return False
    return type(rebuilt) is cls and repr(rebuilt) == repr(value)


def _import_path(cls: type) -> str:
    """The shortest module path that exports ``cls``: an assignment's checks package
    (``autograder.checks.vae``) re-exports the problems of its ``problems`` module."""
    parts = cls.__module__.split(".")
    for end in range(3, len(parts)):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None and getattr(module, cls.__qualname__, None) is cls:
            return module.__name__
    return cls.__module__


def _describe_inputs(kwargs: dict[str, Any]) -> str:
    """The drawn inputs as one line a student can paste to rebuild them.

    ``problem=ModuleProblem(x_dim=20, ...)``; when an input is an instance of a class from a
    public check module, the line starts with its import, so
    ``from autograder.checks.vae import ModuleProblem; problem = ModuleProblem(...)`` rebuilds it.
    """
    imports: dict[str, list[str]] = {}
    parts = []
    for name, value in kwargs.items():
        if name == "subject":
            continue
        parts.append(f"{name}={value!r}")
        cls = type(value)
        if cls.__module__.startswith("autograder.checks.") and _round_trips(value):
            imports.setdefault(_import_path(cls), []).append(cls.__qualname__)
    text = ", ".join(parts)
    if imports:
        lines = [
            f"from {m} import {', '.join(sorted(set(n)))}" for m, n in imports.items()
        ]
        assigned = "; ".join(p.replace("=", " = ", 1) for p in parts)
        text += f"\n  Rebuild it in one line: {'; '.join(lines)}; {assigned}"
    return text


def _budgeted(inner: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hypothesis test body: remember each failure and its input, bound the shrinking."""

    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        attempts = _ATTEMPTS[-1] if _ATTEMPTS else None
        if attempts is None:
            return inner(*args, **kwargs)
        if attempts.failure is not None:
            attempts.runs_after_failure += 1
            if attempts.runs_after_failure > SHRINK_RUNS:
                raise _ShrinkBudgetSpent()
        try:
            return inner(*args, **kwargs)
        except Exception as error:
            attempts.failure, attempts.inputs = error, _describe_inputs(kwargs)
            raise

    return run


def expect(condition: object, message: str) -> None:
    """Raise :class:`Failure` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Failure(message)


@dataclass(frozen=True)
class Property:
    """One graded statement about one task."""

    task: str
    name: str
    points: float
    tier: Tier
    fn: PropertyFn = field(repr=False, compare=False)
    timeout_s: float = 60.0
    #: Stated false-failure probability for a correct implementation; None = deterministic.
    alpha: float | None = None

    @property
    def test_name(self) -> str:
        """The Gradescope test name: ``"<task>: <name>"``."""
        return f"{self.task}: {self.name}"


def bound_shrinking(fn: Any) -> Any:
    """Make a Hypothesis test's search for a smaller failing input stop after ``SHRINK_RUNS`` runs.

    :func:`check` applies it to every property; :func:`run_property` then reports the last
    failing input. Idempotent; a function without ``@given`` is returned unchanged.
    """
    inner = getattr(fn, "hypothesis", None)
    if inner is not None and not getattr(inner.inner_test, "_budgeted", False):
        wrapped = _budgeted(inner.inner_test)
        wrapped._budgeted = True  # type: ignore[attr-defined]
        inner.inner_test = wrapped
    return fn


def seed_once(fn: Any) -> Any:
    """Give a derandomized Hypothesis test the seed derandomizing would give it, once.

    With ``derandomize=True`` Hypothesis seeds every run from a digest of the test's source
    (``function_digest``: ``inspect.getsource``, ``tokenize``, SHA-384), and digests it again as
    its example-database key: about 7 ms per property run, a fifth of the corpus tests' time.
    The same integer as an explicit ``hypothesis.seed`` gives the same ``Random`` and so the
    same examples, for the digest's cost once per process; with no database the key is never
    read (``tests/test_autograder/test_engine.py`` checks both). Idempotent; a test that is
    not derandomized, or has a database, is returned unchanged.
    """
    inner = getattr(fn, "hypothesis", None)
    chosen = getattr(fn, "_hypothesis_internal_use_settings", None)
    if (
        inner is None
        or chosen is None
        or not chosen.derandomize
        or chosen.database is not None
        or getattr(fn, "_hypothesis_internal_use_seed", None) is not None
    ):
        return fn
    from hypothesis import seed
    from hypothesis.internal.reflection import function_digest

    seed(int.from_bytes(function_digest(inner.inner_test), "big"))(fn)
    fn._hypothesis_internal_database_key = None
    return fn


def check(
    task: str,
    name: str,
    *,
    points: float,
    timeout_s: float = 60.0,
    alpha: float | None = None,
) -> Callable[[Any], Any]:
    """Register the decorated function as a property of ``task``; the module sets the tier.

    ``alpha`` marks a statistical property and states its false-failure probability for a
    correct implementation (``make calibrate`` measures it); deterministic ones leave it None.
    """

    def register(fn: Any) -> Any:
        module = getattr(fn, "__module__", "") or ""
        inner = getattr(fn, "hypothesis", None)
        module = getattr(getattr(inner, "inner_test", None), "__module__", module)
        tier: Tier = "hidden" if is_secret(module) else "public"
        bound_shrinking(fn)
        prop = Property(task, name, float(points), tier, fn, timeout_s, alpha)
        existing = _REGISTRY.setdefault(task, [])
        if any(p.name == name for p in existing):
            raise ValueError(f"duplicate property {name!r} for task {task!r}")
        existing.append(prop)
        return fn

    return register


def registered(task: str) -> list[Property]:
    """Properties registered so far for ``task`` (import the check modules first)."""
    return list(_REGISTRY.get(task, []))


@dataclass
class CheckResult:
    """The outcome of one property on one submission."""

    task: str
    name: str
    tier: Tier
    score: float
    max_score: float
    passed: bool
    feedback: str
    seconds: float = 0.0
    flags: list[Flag] = field(default_factory=list)
    #: True when the property failed on a wrong result (a :class:`Failure`), not an error
    #: the code raised, a timeout or a crash: only then can an earlier failure explain it.
    wrong_result: bool = False
    #: The :class:`Failure`'s headline (what is wrong, without the advice), if it had one.
    headline: str = ""
    #: The failing input as a student rebuilds it (the text after "Smallest failing input: ").
    inputs: str = ""

    @property
    def test_name(self) -> str:
        """The Gradescope test name."""
        return f"{self.task}: {self.name}"

    @property
    def message(self) -> str:
        """The feedback without its failing-input lines."""
        return self.feedback.split(INPUT_LINE, 1)[0]


def _counterexample(error: BaseException) -> str:
    """Hypothesis's 'Falsifying example' note, without the subject argument."""
    for note in getattr(error, "__notes__", []) or []:
        if note.startswith(
            ("Falsifying example", "Failing test case", "Failing explicit example")
        ):
            text = note.split("(", 1)[-1].rsplit(")", 1)[0]
            parts = [
                p.split("  # ")[0].strip()
                for p in text.split("\n")
                if p.strip() and "subject=" not in p
            ]
            return " ".join(parts).rstrip(",")
    return ""


#: The kinds of :class:`StudentError` that flag the check (the others are the answer's fault).
_FLAGGED_KINDS: dict[str, Flag] = {
    "timeout": "timeout",
    "crashed": "crashed",
    "forbidden": "forbidden",
}


def _feedback(error: BaseException) -> tuple[str, list[Flag]]:
    if isinstance(error, StudentError):
        flags: list[Flag] = (
            [_FLAGGED_KINDS[error.kind]] if error.kind in _FLAGGED_KINDS else []
        )
        text = (
            error.summary if error.kind == "missing" else f"Your code {error.summary}"
        )
        return text, flags
    if isinstance(error, Failure):
        return str(error), []
    if isinstance(error, AssertionError):
        return str(error) or "an assertion failed", []
    if type(error).__name__ in (
        "Flaky",
        "FlakyFailure",
        "FlakyReplay",
        "FlakyStrategyDefinition",
    ):
        return (
            "your code gave different results for the same input: does it draw random numbers "
            "without the seed or noise it was given?",
            [],
        )
    return (
        f"the grader could not run this check ({type(error).__name__}: {error}); tell your instructor",
        ["grader_error"],
    )


def _is_flaky(error: BaseException) -> bool:
    return type(error).__name__.startswith("Flaky")


def _timed_out(error: BaseException | None) -> bool:
    return isinstance(error, StudentError) and error.kind == "timeout"


def run_property(prop: Property, subject: Subject) -> CheckResult:
    """Run one property: full points if it holds, zero with feedback otherwise.

    Output the check or the student's code writes is swallowed (a notebook grade cell must
    write nothing to stderr); warnings are recorded, never shown.
    """
    start = time.perf_counter()
    sink = io.StringIO()
    passed, feedback = False, ""
    flags: list[Flag] = []
    example, shown_error = "", None
    attempts = _Attempts()
    _ATTEMPTS.append(attempts)
    try:
        with (
            warnings.catch_warnings(record=True),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            time_limit(prop.timeout_s, _PropertyTimeout),
        ):
            warnings.simplefilter("always")
            seed_once(prop.fn)(subject)
        passed = True
    except _PropertyTimeout:
        feedback, flags = (
            f"this check did not finish within {prop.timeout_s:.0f} s of computing: look for an infinite loop or very slow code",
            ["timeout"],
        )
    except _ShrinkBudgetSpent:
        # The search for a smaller input stopped after a fixed number of runs: report the
        # last input that failed, with the message it produced.
        assert attempts.failure is not None
        shown_error, example = attempts.failure, attempts.inputs
        feedback, flags = _feedback(attempts.failure)
    except Exception as error:
        shown: BaseException = error
        if _is_flaky(error) and _timed_out(attempts.failure):
            # A run was cut short by a time limit and the replay was not: a timeout, not flakiness.
            assert attempts.failure is not None
            shown = attempts.failure
        feedback, flags = _feedback(shown)
        shown_error = shown
        example = attempts.inputs if attempts.failure is not None else ""
        example = example or _counterexample(shown)
    finally:
        _ATTEMPTS.remove(attempts)
    if example:
        feedback += INPUT_LINE + example
    seconds = time.perf_counter() - start
    score = prop.points if passed else 0.0
    if not math.isfinite(score):
        score = 0.0
    wrong = isinstance(shown_error, AssertionError) and not flags
    return CheckResult(
        prop.task,
        prop.name,
        prop.tier,
        score,
        prop.points,
        passed,
        feedback,
        seconds,
        flags,
        wrong_result=wrong,
        headline=getattr(shown_error, "headline", "") if wrong else "",
        inputs=example,
    )
