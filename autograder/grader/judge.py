"""Grading one submission: read the notebook, run it in a sandboxed worker, run every property.

The judge is trusted and holds the hidden checks; the submission's code runs only in the
worker (:mod:`autograder.grader.remote`). A submission is never dropped: an unreadable notebook, a
crash, a hang or an attempt on the secrets gives zero where it applies, with the reason in
the feedback and a flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import platform
import re
import resource
import shutil
import signal
import stat
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autograder.core import CheckResult, Property, run_property
from autograder.feedback import one_cause
from autograder.grader import sandbox
from autograder.grader.remote import RemoteSubject, Session, prestart_zygote
from autograder.grader.report import HIDDEN_VISIBILITY, Outcome
from autograder.secrets import is_secret
from autograder.subject import StudentError
from autograder.tasks import ASSIGNMENTS, load_plugins, properties, tasks_of

__all__ = [
    "NotebookError",
    "Submission",
    "find_submissions",
    "grade_submission",
    "clean_stale_workdirs",
    "GRADING_PACKAGES",
    "grader_fingerprint",
    "grading_environment",
    "judge_init",
    "read_code_cells",
    "strip_magics",
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


def _read_nofollow(path: str, limit: int | None = None) -> bytes:
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
        return hashlib.sha256(_read_nofollow(submission.notebook)).hexdigest()
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
        raw = _read_nofollow(path, MAX_NOTEBOOK_BYTES)
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


# --------------------------------------------------------------------------- grading


@dataclass
class JudgeConfig:
    """What every submission of a batch shares."""

    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    #: Paths the worker may not read besides the secrets: the output folder, the submissions.
    secret_paths: tuple[str, ...] = ()
    #: Extra modules registering assignments (tests, course extensions): public ones are
    #: loaded in the worker too; one with a ``hidden`` component stays with the judge.
    plugins: tuple[str, ...] = ()
    #: :func:`grader_fingerprint` per assignment, recorded in each results.json (the resume key).
    fingerprints: dict[str, str] = field(default_factory=dict)
    levels: tuple[str, ...] | None = None
    #: Gradescope ``visibility`` of the hidden tier's tests in results.json.
    hidden_visibility: str = HIDDEN_VISIBILITY


def _public(plugins: Sequence[str]) -> list[str]:
    """The plugins a worker may import too (:func:`autograder.secrets.is_secret` says no)."""
    return [p for p in plugins if not is_secret(p)]


def _secret(plugins: Sequence[str]) -> list[str]:
    """The judge-only plugins (their hidden checks)."""
    return [p for p in plugins if is_secret(p)]


def _module_files(modules: Sequence[str]) -> list[str]:
    return [str(importlib.import_module(m).__file__) for m in modules]


def _preload(public_plugins: Sequence[str]) -> list[str]:
    """What a worker imports before it enters the sandbox: the same for every assignment, so
    one zygote per judge serves them all (plugins bring their own check modules)."""
    checks_dir = Path(importlib.import_module("autograder.checks").__file__).parent  # type: ignore[arg-type]
    # Modules and packages (an assignment's checks by role: problems, probes, ...), sorted.
    checks = [
        f"autograder.checks.{info.name}"
        for info in pkgutil.iter_modules([str(checks_dir)])
    ]
    base = [
        "numpy",
        "torch",
        # Importing torch._dynamo wraps torch.manual_seed, and the first optimizer.step() of
        # any training loop imports it: load it before the worker snapshots torch's functions
        # for tamper detection, or honest training cells look like tampering.
        "torch._dynamo",
        "autograder.subject",
        "autograder.transport",
        "autograder.probes",
        "course_lib",
    ]
    if importlib.util.find_spec("matplotlib") is not None:
        # Every notebook plots: import pyplot (and build its font cache) once per zygote.
        base.append("matplotlib.pyplot")
    if importlib.util.find_spec("sklearn") is not None:
        # 04 and 05 import scikit-learn (a data set, two classifiers) in their first cell:
        # once per zygote instead of about 0.6 s in every such notebook.
        base += ["sklearn.datasets", "sklearn.linear_model", "sklearn.neighbors"]
    return [*public_plugins, *base, *checks]


#: What a judge may allocate for the checks' own work (references, Hypothesis), on top of
#: its imports, three copies of the largest result (the channel's buffer, the payload, the
#: decoded tensors) and the worker's budget (a zygote restarted by the judge inherits the cap).
JUDGE_WORK_MB = 2048


def _data_mb() -> int:
    """This process's data segment (``VmData``: heap and private writable mappings), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) // 1024
    return 0


def limit_judge_memory(limits: sandbox.Limits, work_mb: int = JUDGE_WORK_MB) -> int:
    """Cap this judge's memory (``RLIMIT_DATA``, the soft limit) whatever a result claims: a
    backstop under :func:`autograder.transport.decode`'s own bounds. Past the cap an
    allocation fails: the check in progress scores zero with the ``memory`` flag
    (:func:`_within_memory`), or, if the judge dies, the batch grades the submission zero
    with ``crashed`` alone in a judge of its own.

    Returns:
        The cap in MB.
    """
    cap = _data_mb() + work_mb + 3 * limits.result_mb + limits.memory_mb
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard >> 20)
    resource.setrlimit(resource.RLIMIT_DATA, (cap << 20, hard))
    return cap


def judge_init(plugins: Sequence[str], limits: sandbox.Limits | None = None) -> None:
    """Runs once in each judge process: die with the parent, start the zygote, load the
    checks, cap the judge's memory (:func:`limit_judge_memory`).

    Args:
        plugins: The plugins the batch loaded (public and judge-only).
        limits: The batch's limits (default: :class:`~autograder.grader.sandbox.Limits`).
    """
    sandbox.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    prestart_zygote(_preload(_public(plugins)))
    torch.set_num_threads(1)
    load_plugins(plugins)
    limit_judge_memory(limits or sandbox.Limits())


def clean_stale_workdirs() -> None:
    """Remove worker directories (``autograde-<pid>-...``) left by judges that were killed."""
    for path in Path(tempfile.gettempdir()).glob("autograde-*-*"):
        match = re.match(r"autograde-(\d+)-", path.name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _zero(prop: Property, feedback: str, flags: list[str]) -> CheckResult:
    return CheckResult(
        prop.task,
        prop.name,
        prop.tier,
        0.0,
        prop.points,
        False,
        feedback,
        0.0,
        list(flags),
    )


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def _within_memory(prop: Property, flags: list[str]) -> Property:
    """``prop`` whose running out of the judge's memory (:func:`limit_judge_memory`) is the
    submission's zero with the ``memory`` flag, never a grader error: only what the worker
    sent can make a check outgrow a cap sized for honest results."""

    def fn(subject: Any) -> None:
        try:
            prop.fn(subject)
        except Exception as error:
            if not _out_of_memory(error):
                raise
            if "memory" not in flags:
                flags.append("memory")
            raise StudentError(
                "bad_result",
                "returned results too large for the grader to check within its memory limit",
            ) from None

    return dataclasses.replace(prop, fn=fn)


def _all_properties(assignment: str) -> list[Property]:
    return [prop for task in tasks_of(assignment) for prop in properties(task.id)]


def _where(cell: int | None) -> str:
    return f" (cell {cell})" if cell is not None else ""


def _hint_missing(result: CheckResult, cell_errors: dict[int, str]) -> None:
    if not result.passed and "is not defined" in result.feedback and cell_errors:
        number, error = sorted(cell_errors.items())[0]
        result.feedback += f"\n  Note: cell {number} of your notebook {error}"


def zero_outcome(
    submission: Submission, config: JudgeConfig, flag: str, message: str
) -> Outcome:
    """Zero on every check of ``submission``, each with ``message`` and ``flag``: for what
    the submission caused before any check could run (a link, a killed judge)."""
    outcome = Outcome(
        student=submission.student,
        assignment=submission.assignment,
        notebook_sha256=notebook_digest(submission),
        grader=config.fingerprints.get(submission.assignment, ""),
        flags=[flag],
        hidden_visibility=config.hidden_visibility,
    )
    outcome.tests = [
        _zero(p, message, [flag]) for p in _all_properties(submission.assignment)
    ]
    return outcome


def grade_submission(submission: Submission, config: JudgeConfig) -> Outcome:
    """Grade one submission: never raises for anything the submission does.

    Raises:
        GraderError: the worker cannot be started at all (grading itself is broken).
    """
    started = time.monotonic()
    digest = notebook_digest(submission)
    props = _all_properties(submission.assignment)
    outcome = Outcome(
        student=submission.student,
        assignment=submission.assignment,
        notebook_sha256=digest,
        grader=config.fingerprints.get(submission.assignment, ""),
        hidden_visibility=config.hidden_visibility,
    )
    link = symlink_in(submission)
    if link is not None:
        where = printable(
            os.path.relpath(link, Path(submission.notebook or link).parents[2])
        )
        message = (
            f"Not graded: {where} is a symbolic link, which the grader never follows "
            "(it could name someone else's work): submit the notebook file itself."
        )
        outcome.flags.append("symlink")
        outcome.tests = [_zero(p, message, ["symlink"]) for p in props]
        outcome.seconds = time.monotonic() - started
        return outcome
    try:
        cells, outcome.notes = read_code_cells(
            submission.notebook, submission.assignment
        )
    except Exception as error:  # whatever the file holds, the submission gets a row
        if isinstance(error, NotebookError):
            message = str(error)
        elif isinstance(error, OSError):
            message = f"the notebook could not be read ({error.strerror})"
        else:
            message = f"the notebook is not a well-formed Jupyter notebook ({type(error).__name__})"
        outcome.flags.append("invalid_notebook")
        outcome.tests = [
            _zero(p, f"Not graded: {message}.", ["invalid_notebook"]) for p in props
        ]
        outcome.seconds = time.monotonic() - started
        return outcome

    public = _public(config.plugins)
    session = Session(
        cells,
        config.limits,
        preload=_preload(public),
        probe_modules=("autograder", "course_lib", *public),
        secret_paths=(*config.secret_paths, *_module_files(_secret(config.plugins))),
        secret_modules=tuple(_secret(config.plugins)),
        levels=config.levels,
    )
    try:
        with contextlib.suppress(TimeoutError):
            session.run_notebook()
        outcome.sandbox = session.level
        outcome.tests = _run_properties(session, props)
    finally:
        session.close()
    outcome.cell_errors = dict(sorted(session.cell_errors.items()))
    outcome.output_bytes = session.output_bytes
    outcome.cpu = dict(session.cpu)
    for event in session.events:
        note = f"{event.op}: {event.what}{_where(event.cell)}" + (
            f" (while checking {event.task})" if event.task else ""
        )
        outcome.notes.append(note)
    flags = {flag for test in outcome.tests for flag in test.flags}
    if any(e.op == "refused" for e in session.events):
        flags.add("refused")
    outcome.flags = sorted(set(outcome.flags) | flags)
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_properties(session: Session, props: list[Property]) -> list[CheckResult]:
    if not session.notebook_ran:
        message = (
            "Not graded: your notebook did not finish running within the time limit."
        )
        return [_zero(p, message, ["timeout"]) for p in props]
    notebook_forbidden = [
        e for e in session.events if e.op == "forbidden" and e.task is None
    ]
    if notebook_forbidden:
        first = notebook_forbidden[0]
        message = f"Not graded: your notebook tried to {first.what}{_where(first.cell)}, which submissions may not do."
        return [_zero(p, message, ["forbidden"]) for p in props]
    subject = RemoteSubject(session)
    results = []
    for prop in props:
        if session.time_left() <= 1:
            results.append(
                _zero(
                    prop,
                    "Not run: this submission used up its time limit.",
                    ["timeout"],
                )
            )
            continue
        subject.begin(prop)
        result = run_property(_within_memory(prop, subject.flags), subject)
        result.flags = sorted(set(result.flags) | set(subject.flags))
        _hint_missing(result, session.cell_errors)
        results.append(result)
    session.begin_task(None)
    # An attempt on the secrets or the judge while a task was checked: the task scores zero.
    for task in {e.task for e in session.events if e.op == "forbidden" and e.task}:
        what = next(
            e.what for e in session.events if e.op == "forbidden" and e.task == task
        )
        for index, result in enumerate(results):
            if result.task == task:
                prop = props[index]
                results[index] = _zero(
                    prop,
                    f"Zero for {task}: while it was checked, your code tried to {what}, which submissions may not do.",
                    ["forbidden"],
                )
    return one_cause(results)
