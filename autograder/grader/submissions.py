"""Submissions: finding them in a class folder and reading a notebook's code cells.

Discovery (:func:`find_submissions`: ``<student>/<assignment>/<assignment>.ipynb`` under a
folder or an nbgrader course's ``submitted/``), the names the grader shows
(:func:`printable`), and reading a notebook without following links
(:func:`read_code_cells`: grade cells removed, IPython magics made Python). Nothing here runs
student code.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.grader import sandbox
from autograder.tasks import ASSIGNMENTS

__all__ = [
    "MAX_NOTEBOOK_BYTES",
    "NotebookError",
    "Submission",
    "find_submissions",
    "known_grade_cells",
    "printable",
    "read_code_cells",
    "read_nofollow",
    "strip_magics",
    "submissions_root",
    "symlink_in",
]

MAX_NOTEBOOK_BYTES = 64 << 20
_MAGIC_KEEP_BODY = {"time", "capture", "prun"}
_ASSIGN_MAGIC = re.compile(r"^[A-Za-z_][\w.,\s\[\]]*=\s*[%!]")
_HELP = re.compile(r"^\??[A-Za-z_][\w.]*\?{1,2}$")


@dataclass(frozen=True)
class Submission:
    """One student's notebook for one assignment."""

    student: str
    assignment: str
    notebook: str | None

    @property
    def key(self) -> str:
        """``student/assignment``."""
        return f"{self.student}/{self.assignment}"


def printable(name: str) -> str:
    """A folder name as the grader shows and records it: every name, however odd, one-to-one.

    Bytes that are not UTF-8 (``os.listdir`` keeps them as surrogates) become ``\\xNN``,
    control and format characters (a terminal's escape sequences, bidirectional overrides,
    newlines) ``\\xNN`` (below 0x80) or ``\\uNNNN``, a backslash two backslashes; anything else is kept,
    so an ordinary student id is its own printable form.
    """
    out = []
    for char in name:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of one raw byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            # \\xNN only below 0x80, so never the same text as an undecodable byte
            out.append(
                f"\\x{code:02x}"
                if code < 0x80
                else f"\\u{code:04x}"
                if code <= 0xFFFF
                else f"\\U{code:08x}"
            )
        else:
            out.append(char)
    return "".join(out)


class NotebookError(ValueError):
    """The notebook cannot be read; the message is what the student reads."""


# --------------------------------------------------------------------------- discovery


def submissions_root(path: Path) -> Path:
    """``path`` itself, or its ``submitted/`` folder when ``path`` is an nbgrader course."""
    nested = path / "submitted"
    if nested.is_dir() and not (path / "submitted" / "submitted").exists():
        return nested
    return path


def find_submissions(
    path: Path,
    *,
    assignments: Iterable[str] | None = None,
    students: Iterable[str] | None = None,
) -> tuple[list[Submission], list[str]]:
    """Every ``<student>/<assignment>/<assignment>.ipynb`` under ``path`` (or its ``submitted/``).

    A student is known by :func:`printable` of the folder's name (the same as the name
    for ordinary ids), so a name that is not UTF-8 or holds escape sequences is graded and
    shown escaped; ``students`` may name either form.

    Returns:
        The submissions, sorted, and the problems found (unknown assignment folders).
    """
    root = submissions_root(path)
    wanted_a = set(assignments) if assignments else None
    wanted_s = set(students) if students else None
    found, problems = [], []
    for student_dir in sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        student = printable(student_dir.name)
        if wanted_s is not None and not {student_dir.name, student} & wanted_s:
            continue
        for assignment_dir in sorted(
            p
            for p in student_dir.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        ):
            assignment = assignment_dir.name
            if wanted_a is not None and assignment not in wanted_a:
                continue
            if assignment not in ASSIGNMENTS:
                problems.append(
                    f"{student}/{printable(assignment)}: unknown assignment {printable(assignment)!r}"
                )
                continue
            notebook = assignment_dir / f"{assignment}.ipynb"
            if not (notebook.is_file() or notebook.is_symlink()):
                others = sorted(
                    p for p in assignment_dir.glob("*.ipynb") if p.is_file()
                )
                notebook = others[0] if len(others) == 1 else None  # type: ignore[assignment]
            found.append(
                Submission(student, assignment, str(notebook) if notebook else None)
            )
    return found, problems


def read_nofollow(path: str, limit: int | None = None) -> bytes:
    """The bytes of the file at ``path`` itself, never of what a symbolic link points to.

    Raises:
        OSError: ``ELOOP`` for a link; ``EFBIG`` past ``limit`` bytes; any other read error.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if limit is not None and info.st_size > limit:
            raise OSError(errno.EFBIG, "file too large", path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read() if limit is None else handle.read(limit + 1)
    finally:
        os.close(fd)


def symlink_in(submission: Submission) -> str | None:
    """The first symbolic link on the way to the notebook, if any: the notebook itself, its
    assignment folder or the student's folder (``<student>/<assignment>/<notebook>``).

    A link can name the instructor's source notebook or a classmate's folder; the grader
    never follows one where a submission's path is read.
    """
    if submission.notebook is None:
        return None
    notebook = Path(submission.notebook)
    for part in (notebook, notebook.parent, notebook.parent.parent):
        if part.is_symlink():
            return str(part)
    return None


# --------------------------------------------------------------------------- notebooks


def strip_magics(source: str) -> str:
    """IPython-only lines become ``pass`` (indentation kept); ``%time stmt`` keeps ``stmt``."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in _MAGIC_KEEP_BODY:
            return ""  # %%bash, %%writefile, %%html...: not Python
        lines = lines[1:]
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("%time ", "%prun ")):
            out.append(indent + stripped.split(maxsplit=1)[1])
        elif (
            stripped.startswith(("%", "!"))
            or _ASSIGN_MAGIC.match(stripped)
            or _HELP.match(stripped)
        ):
            out.append(indent + "pass")
        else:
            out.append(line)
    return "\n".join(out)


def _text(source: Any) -> str:
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


@functools.cache
def known_grade_cells(assignment: str) -> tuple[frozenset[str], frozenset[str]]:
    """Grade-cell ids and (released) sources of the course's own notebooks, where present."""
    ids: set[str] = set()
    sources: set[str] = set()
    roots = [r for r in (sandbox.repo_root(), Path.cwd()) if r is not None]
    for root in roots:
        for folder in ("assignments", "release", "solutions", "source"):
            path = root / folder / assignment / f"{assignment}.ipynb"
            try:
                cells = json.loads(path.read_text()).get("cells", [])
            except (OSError, ValueError, AttributeError):
                continue
            for cell in cells:
                meta = (cell.get("metadata") or {}).get("nbgrader") or {}
                if meta.get("grade") and not meta.get("solution"):
                    ids.add(str(meta.get("grade_id", "")))
                    if folder in ("assignments", "release"):
                        sources.add(_normalise(_text(cell.get("source"))))
    ids.discard("")
    return frozenset(ids), frozenset(sources)


def _nbgrader_meta(cell: dict[str, Any]) -> dict[str, Any]:
    metadata = cell.get("metadata")
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def _is_grade_cell(
    meta: dict[str, Any], source: str, known: tuple[frozenset[str], frozenset[str]]
) -> bool:
    if meta.get("solution") is True:
        return False  # a manually graded answer: the student's code
    grade_id = str(meta.get("grade_id", ""))
    if meta.get("grade") is True or grade_id.endswith("_check") or grade_id in known[0]:
        return True
    return _normalise(source) in known[1]


def read_code_cells(
    path: str | None, assignment: str
) -> tuple[list[tuple[int, str]], list[str]]:
    """The code cells to run, as ``(cell number, source)``, grade cells removed; and notes.

    Raises:
        NotebookError: the file is missing, too large, not JSON or not a notebook.
    """
    if path is None:
        raise NotebookError(
            f"no notebook found: submit {assignment}.ipynb in the {assignment} folder"
        )
    try:
        raw = read_nofollow(path, MAX_NOTEBOOK_BYTES)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotebookError(
                "the notebook is a symbolic link: submit the notebook file itself"
            ) from None
        if error.errno == errno.EFBIG:
            raise NotebookError(
                f"the notebook is larger than {MAX_NOTEBOOK_BYTES >> 20} MB: clear its outputs and resubmit"
            ) from None
        raise
    try:
        data = json.loads(raw)
    except (RecursionError, MemoryError):
        raise NotebookError(
            "the notebook is not a Jupyter notebook: its JSON is nested too deeply to read"
        ) from None
    except UnicodeDecodeError:
        raise NotebookError(
            "the notebook is not valid JSON (it is not UTF-8 text): was it saved by Jupyter?"
        ) from None
    except json.JSONDecodeError as error:
        raise NotebookError(
            f"the notebook is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
            "was it edited outside Jupyter? Download a fresh copy and move your answers over"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError(
            "the file is not a Jupyter notebook (nbformat 4): it has no list of cells"
        )
    known = known_grade_cells(assignment)
    cells, grade_ids = [], []
    for number, cell in enumerate(data["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _text(cell.get("source"))
        meta = _nbgrader_meta(cell)
        if _is_grade_cell(meta, source, known):
            grade_ids.append(str(meta.get("grade_id", f"cell {number}")))
            continue
        cells.append((number, strip_magics(source)))
    notes = []
    missing = sorted(known[0] - set(grade_ids))
    if missing and known[0]:
        notes.append(
            f"grade cells missing from the notebook: {', '.join(missing)} (the grader runs every check anyway)"
        )
    duplicated = sorted({g for g in grade_ids if grade_ids.count(g) > 1})
    if duplicated:
        notes.append(
            f"grade cells duplicated: {', '.join(duplicated)} (ignored: the grader runs each check once)"
        )
    metadata = data.get("metadata")
    spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    kernel = spec.get("name") if isinstance(spec, dict) else None
    if isinstance(kernel, str) and kernel and not kernel.startswith("python"):
        notes.append(
            f"kernel {kernel!r} ignored: the grader runs the notebook with Python"
        )
    return cells, notes
