"""Fingerprints: what decides a grade, hashed, so a rerun regrades exactly what changed.

:func:`notebook_digest` is a submission's half of the resume key (the notebook's bytes, a
link hashed as the link); :func:`grader_fingerprint` the grader's half (the grader's and the
course's files, the plugins, the released notebook, the limits, the grading environment and
what results.json shows). A Dask worker compares its own fingerprint with the client's.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from autograder.grader import sandbox
from autograder.grader.report import HIDDEN_VISIBILITY
from autograder.grader.submissions import Submission, read_nofollow, symlink_in

__all__ = [
    "AFTER_GRADING",
    "GRADING_PACKAGES",
    "fingerprint_files",
    "grader_fingerprint",
    "grading_environment",
    "notebook_digest",
]


def notebook_digest(submission: Submission) -> str:
    """SHA-256 of the notebook's bytes ("" when there is none): the resume key.

    A symbolic link is hashed as the link (its target's name), never as the file it names.
    """
    if submission.notebook is None:
        return ""
    try:
        link = symlink_in(submission)
        if link is not None:
            return hashlib.sha256(
                b"symlink:" + os.fsencode(link) + b"->" + os.fsencode(os.readlink(link))
            ).hexdigest()
        return hashlib.sha256(read_nofollow(submission.notebook)).hexdigest()
    except OSError:
        return ""


def _package_files(directory: Path) -> list[Path]:
    """Every file of a package tree that grading may import or read (bytecode caches aside)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix not in (".pyc", ".pyo")
    )


#: The instructor's tools that read graded results and never decide one (class report,
#: similarity, late policy and LMS export): editing them regrades nobody.
AFTER_GRADING = frozenset(
    {"grader/classreport.py", "grader/similar.py", "grader/course.py"}
)


def fingerprint_files(assignment: str, plugins: Sequence[str] = ()) -> list[Path]:
    """The files :func:`grader_fingerprint` hashes: every file of the ``autograder`` and
    ``course_lib`` packages (a helper such as ``course_lib/reference/_autograd.py`` is imported
    by several references, so hashing "this assignment's modules" misses it), the plugins'
    packages, and the released notebook of ``assignment``."""
    autograder_dir = Path(importlib.import_module("autograder").__file__).parent  # type: ignore[arg-type]
    course_dir = Path(importlib.import_module("course_lib").__file__).parent  # type: ignore[arg-type]
    files = [
        p
        for p in _package_files(autograder_dir)
        if p.relative_to(autograder_dir).as_posix() not in AFTER_GRADING
    ] + _package_files(course_dir)
    root = sandbox.repo_root()
    if root is not None:  # the release decides which cells are grade cells
        files += [root / "assignments" / assignment / f"{assignment}.ipynb"]
    for plugin in plugins:
        path = Path(importlib.import_module(plugin).__file__)  # type: ignore[arg-type]
        files += _package_files(path.parent) if path.name == "__init__.py" else [path]
    return list(dict.fromkeys(files))


#: The distributions whose versions decide grades (every runtime dependency of the course
#: package but tqdm): the fingerprint records them, ``constraints/grading.txt`` pins them.
GRADING_PACKAGES = (
    "hypothesis",
    "matplotlib",
    "nbformat",
    "numpy",
    "scikit-learn",
    "scipy",
    "torch",
)


def grading_environment() -> dict[str, str]:
    """Python's implementation and version and each of :data:`GRADING_PACKAGES`'s installed
    version (``torch`` with its build, ``2.13.0+cpu``; ``absent`` when not installed)."""
    found = {
        "python": f"{platform.python_implementation()} {platform.python_version()}"
    }
    for name in GRADING_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def grader_fingerprint(
    limits: sandbox.Limits,
    assignment: str,
    plugins: Sequence[str] = (),
    hidden_visibility: str = HIDDEN_VISIBILITY,
) -> str:
    """Hash of what decides the grades of ``assignment``: every file of the grader's and the
    course's packages, the plugins, the released notebook, the limits, the environment
    (:func:`grading_environment`: a Dask worker or a resumed run with another Python, torch,
    NumPy or Hypothesis grades differently) and what results.json shows
    (``hidden_visibility``)."""
    digest = hashlib.sha256(json.dumps(limits.__dict__, sort_keys=True).encode())
    digest.update(assignment.encode())
    digest.update(json.dumps(grading_environment(), sort_keys=True).encode())
    digest.update(hidden_visibility.encode())
    for file in fingerprint_files(assignment, plugins):
        if file.is_file():
            digest.update(str(file.relative_to(file.parent.parent)).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]
