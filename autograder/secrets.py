"""What is secret: the one rule the notebooks, the CI grader and the bundles share.

The answers live in two subpackages, :data:`PRIVATE_SUBPACKAGES`: ``course_lib/reference``
(the reference solutions) and ``autograder/hidden`` (the hidden checks). A plugin's module is
secret, like them, when a part of its dotted name is ``hidden``
(``tests.test_grader.fakecourse.hidden``). Whatever is secret

- is left out of the student bundle (``scripts/student_bundle.py``) and readable only by root
  in the Gradescope image (``scripts/gradescope_bundle.py``);
- is judge-only in the CI grader: a sandboxed worker can neither read its folder nor import
  it (:func:`autograder.grader.sandbox.plan`), no probe may live in it
  (:func:`autograder.grader.remote.probe_address`) and nothing defined in it is unpickled next
  to student code (:mod:`autograder.transport`);
- makes a property defined in it a hidden-tier one (:func:`autograder.core.check`).

``tests/test_grader/test_secrets.py`` checks that every one of those agrees with this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "HIDDEN_CHECKS",
    "PRIVATE_SUBPACKAGES",
    "SECRET_MODULES",
    "is_secret",
    "secret_dirs",
]

#: Inside each public package, the subpackages that never leave the instructor's machine.
PRIVATE_SUBPACKAGES: dict[str, tuple[str, ...]] = {
    "course_lib": ("reference",),
    "autograder": ("hidden",),
}
#: The same subpackages as module names.
SECRET_MODULES: tuple[str, ...] = tuple(
    f"{package}.{sub}" for package, subs in PRIVATE_SUBPACKAGES.items() for sub in subs
)
#: The course's hidden checks (present only where the instructor installed them).
HIDDEN_CHECKS = "autograder.hidden"
#: A part of a module's dotted name that makes it judge-only (the hidden tier of a plugin).
_HIDDEN_PART = "hidden"


def is_secret(module: str, extra: Iterable[str] = ()) -> bool:
    """Whether ``module`` must stay on the judge's side.

    Args:
        module: A dotted module name.
        extra: More secret module names (a judge's own additions); a module under one of
            them is secret too.

    Returns:
        True for a module in or under :data:`SECRET_MODULES` or ``extra``, or one with a
        part named ``hidden``.
    """
    prefixes = (*SECRET_MODULES, *extra)
    return _HIDDEN_PART in module.split(".") or any(
        module == p or module.startswith(p + ".") for p in prefixes
    )


def secret_dirs() -> list[Path]:
    """The folders of :data:`SECRET_MODULES` as installed here (resolved; they need not exist).

    Only the public parent packages are imported, never a secret one.
    """
    dirs = []
    for package, subs in PRIVATE_SUBPACKAGES.items():
        parent = Path(importlib.import_module(package).__file__).resolve().parent  # type: ignore[arg-type]
        dirs += [parent / sub for sub in subs]
    return dirs
