"""Hidden checks: instructor side only; may compare against course_lib.reference."""

from __future__ import annotations

import functools
import importlib

from autograder.subject import LocalSubject

__all__ = ["reference_subject"]


@functools.cache
def reference_subject(module: str, *, trusted: bool = False) -> LocalSubject:
    """The reference solution of assignment module ``module`` (``"em"``, ...) as a subject.

    The one way hidden checks build the reference: they compute what they expect by running
    the same public probes on it. Built once per module. ``trusted=True`` skips the transport
    round trip (a speed-up for checks that call the reference many times).
    """
    reference = importlib.import_module(f"course_lib.reference.{module}")
    return LocalSubject(
        {name: getattr(reference, name) for name in reference.__all__}, trusted=trusted
    )
