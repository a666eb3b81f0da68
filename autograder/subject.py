"""The student's code as the checks see it: reached only through probes.

A *probe* is a public, module-level function ``probe(student, *args, **kwargs)`` that runs
next to the student's code, calls what it needs through ``student.<name>`` and returns plain
data (tensors, arrays, numbers). Checks never touch student objects directly; they call
``subject.call(probe, ...)``. In a notebook the subject is :class:`LocalSubject`; the CI
grader supplies a subject whose probes run in a sandboxed worker process. Both round-trip
arguments and results through :mod:`autograder.transport`, so they behave the same.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar, cast, get_args

from autograder import transport

__all__ = [
    "STUDENT_ERROR_KINDS",
    "LocalSubject",
    "Student",
    "StudentError",
    "StudentErrorKind",
    "Subject",
    "describe_exception",
]

T = TypeVar("T")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


#: Why a probe got no usable result from the student's code. ``raised``: it raised (the
#: type, message and line); ``missing``: a name is not defined; ``not_implemented``: the stub
#: is still there; ``bad_result``: it returned something unusable (wrong type, shape, not
#: differentiable, not transportable); ``timeout``: it ran past the time limit; ``crashed``:
#: the worker process died; ``forbidden``: the sandbox refused what it tried.
StudentErrorKind = Literal[
    "raised",
    "missing",
    "not_implemented",
    "bad_result",
    "timeout",
    "crashed",
    "forbidden",
]
STUDENT_ERROR_KINDS: frozenset[str] = frozenset(get_args(StudentErrorKind))


class StudentError(Exception):
    """The student's code raised, returned something unusable, hung, or is missing.

    ``kind`` is a :data:`StudentErrorKind`; ``summary`` is what the student reads.
    """

    kind: StudentErrorKind

    def __init__(self, kind: StudentErrorKind | str, summary: str) -> None:
        # ``str`` is accepted for kinds that crossed the process boundary (checked here).
        if kind not in STUDENT_ERROR_KINDS:
            raise ValueError(f"unknown StudentError kind {kind!r}")
        super().__init__(summary)
        self.kind, self.summary = cast(StudentErrorKind, kind), summary


class Subject(Protocol):
    """Anything that can run a probe next to the student's code."""

    def call(self, probe: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``probe(student, *args, **kwargs)`` and return its (transported) result."""
        ...


class Student:
    """Attribute access to the names a submission defines; a missing name is a clear error."""

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._namespace[name]
        except KeyError:
            raise StudentError(
                "missing",
                f"`{name}` is not defined: run the cell that defines it (and keep its name)",
            ) from None


def _is_student_frame(filename: str) -> bool:
    if filename.startswith(_PACKAGE_DIR):
        return False
    markers = (
        "site-packages",
        "dist-packages",
        os.sep + "lib" + os.sep + "python",
        "<frozen",
    )
    return not any(marker in filename for marker in markers)


def describe_exception(error: BaseException) -> StudentError:
    """Turn an exception raised inside student code into feedback: type, message, the line."""
    if isinstance(error, StudentError):
        return error
    if isinstance(error, NotImplementedError):
        return StudentError(
            "not_implemented",
            "raised NotImplementedError: replace `raise NotImplementedError()` with your code",
        )
    message = f"raised {type(error).__name__}: {error}".strip()
    if len(message) > 500:
        message = message[:500] + " ..."
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if _is_student_frame(f.filename)
    ]
    if frames:
        frame = frames[-1]
        where = (
            f" (in `{frame.name}`, line {frame.lineno}: `{(frame.line or '').strip()}`)"
        )
        message += where
    if isinstance(error, transport.TransportError):
        return StudentError(
            "bad_result", f"returned something that cannot be checked: {error}"
        )
    return StudentError("raised", message)


class LocalSubject:
    """Runs probes in this process, against a namespace (a notebook's globals, say).

    ``trusted=True`` (the reference only) skips the transport round trip of arguments and
    results; student code always goes through it.
    """

    def __init__(self, namespace: Mapping[str, Any], *, trusted: bool = False) -> None:
        self.student = Student(namespace)
        self.trusted = trusted

    def call(self, probe: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Copy the arguments across, run the probe, and copy the result back."""
        if self.trusted:
            return probe(self.student, *args, **kwargs)
        args, kwargs = transport.unpickle_args(transport.pickle_args(args, kwargs))
        try:
            result = probe(self.student, *args, **kwargs)
            payload = transport.encode(result)
        except (Exception, SystemExit) as error:
            raise describe_exception(error) from None
        value = transport.decode(payload)
        problem = transport.result_problem(probe, value)
        if problem:
            raise StudentError(
                "bad_result", f"returned something the grader cannot read: {problem}"
            )
        return value  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "<submission>"
