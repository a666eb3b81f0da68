"""Demo cells that use a student's function before it is written.

A released notebook's solution cells hold nbgrader's stub, ``raise NotImplementedError()``.
A demo cell that calls such a stub would stop "Run All" with a traceback, and the grade
cells below it would never run. Wrap the demo instead::

    with skip_unimplemented(e_step, m_step):
        fit = fit_em(X, 3, e_step=e_step)
        plot_fit(fit)

While ``e_step`` is the stub the cell prints one line, ``run after you implement e_step: it
raises NotImplementedError``, and Run All goes on. Only the stub is forgiven: the
``NotImplementedError`` must be raised *in the body* of one of the named functions (or of a
method of a named class) and carry no message, as nbgrader's stub does. Any other error,
including a ``NotImplementedError`` raised deeper down (a torch op missing for a dtype) or
one with a message, propagates with its traceback, because then the student's code ran and
they need to see what went wrong.

Works as a decorator too (``@skip_unimplemented(e_step)`` on a demo function).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from types import CodeType, TracebackType
from typing import Any

__all__ = ["skip_unimplemented"]


def _code_objects(obj: Any) -> Iterator[tuple[CodeType, str]]:
    """The code objects whose frames count as ``obj``'s body, with the name to print.

    A function gives its own code; ``functools.partial`` its wrapped function's; a class
    (or an instance of one, e.g. an ``nn.Module``) every function defined in its body,
    including static/class methods and properties; a bound method its function's.
    """
    if isinstance(obj, functools.partial):
        yield from _code_objects(obj.func)
        return
    if inspect.ismethod(obj):
        yield from _code_objects(obj.__func__)
        return
    if inspect.isfunction(obj):
        yield obj.__code__, obj.__name__
        return
    cls = obj if isinstance(obj, type) else type(obj)
    if cls.__module__ == "builtins":
        return
    for attr in vars(cls).values():
        members = (
            (attr.fget, attr.fset, attr.fdel)
            if isinstance(attr, property)
            else (getattr(attr, "__func__", attr),)
        )
        for member in members:
            if inspect.isfunction(member):
                yield member.__code__, cls.__name__


def _raising_frame_code(tb: TracebackType | None) -> CodeType | None:
    """The code object of the frame where the exception was raised (the innermost one)."""
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code


class skip_unimplemented(contextlib.ContextDecorator):
    """Turn the nbgrader stub of the named student functions into one printed line.

    Args:
        *functions: the student's functions or classes the wrapped code needs (at least one).

    Attributes:
        skipped: the name of the stub that raised, or ``None`` when the code ran through.
    """

    def __init__(self, *functions: Callable[..., Any] | type) -> None:
        if not functions:
            raise TypeError(
                "skip_unimplemented() needs the student functions the cell uses, "
                "e.g. skip_unimplemented(e_step)"
            )
        self._names: dict[CodeType, str] = {}
        for function in functions:
            found = dict(_code_objects(function))
            if not found:
                raise TypeError(
                    f"skip_unimplemented() takes the student's functions or classes, "
                    f"not {type(function).__name__} {function!r}"
                )
            self._names.update(found)
        self.skipped: str | None = None

    def __enter__(self) -> skip_unimplemented:
        self.skipped = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is not NotImplementedError or exc is None or exc.args:
            return (
                False  # not the stub: a real error (or a message) shows its traceback
            )
        code = _raising_frame_code(tb)
        name = self._names.get(code) if code is not None else None
        if name is None:
            return False  # raised deeper than the student's own function body
        self.skipped = name
        print(f"run after you implement {name}: it raises NotImplementedError")
        return True
