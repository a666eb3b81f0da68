"""Grading one submission: run its notebook in a sandboxed worker, then every property.

The judge is trusted and holds the hidden checks; the submission's code runs only in the
worker (:mod:`autograder.grader.remote`). A submission is never dropped: an unreadable notebook, a
crash, a hang or an attempt on the secrets gives zero where it applies, with the reason in
the feedback and a flag (:mod:`autograder.grader.outcome`). Finding and reading submissions
is :mod:`autograder.grader.submissions`, the resume key :mod:`autograder.grader.fingerprint`;
their names are re-exported here for the callers that knew them from this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import re
import resource
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autograder.core import CheckResult, Property, run_property
from autograder.feedback import one_cause
from autograder.flags import Flag
from autograder.grader import sandbox
from autograder.grader.fingerprint import (
    GRADING_PACKAGES,
    fingerprint_files,
    grader_fingerprint,
    grading_environment,
    notebook_digest,
)
from autograder.grader.outcome import all_properties, zero_check, zero_outcome
from autograder.grader.remote import (
    RemoteSubject,
    Session,
    prestart_zygote,
    use_mother,
)
from autograder.grader.report import HIDDEN_VISIBILITY, Outcome
from autograder.grader.submissions import (
    MAX_NOTEBOOK_BYTES,
    NotebookError,
    Submission,
    find_submissions,
    printable,
    read_code_cells,
    strip_magics,
    submissions_root,
    symlink_in,
)
from autograder.secrets import is_secret
from autograder.subject import StudentError
from autograder.tasks import ASSIGNMENTS, load_plugins

__all__ = [
    "JUDGE_WORK_MB",
    "JudgeConfig",
    "clean_stale_workdirs",
    "grade_submission",
    "judge_init",
    "limit_judge_memory",
    # re-exported from autograder.grader.submissions, .fingerprint and .outcome
    "ASSIGNMENTS",
    "GRADING_PACKAGES",
    "MAX_NOTEBOOK_BYTES",
    "NotebookError",
    "Submission",
    "find_submissions",
    "fingerprint_files",
    "grader_fingerprint",
    "grading_environment",
    "notebook_digest",
    "printable",
    "read_code_cells",
    "strip_magics",
    "submissions_root",
    "zero_outcome",
]


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


def worker_preload(plugins: Sequence[str]) -> list[str]:
    """What the batch's workers import before their sandbox (:func:`_preload` of the public
    ``plugins``): a zygote's or the batch's mother's imports."""
    return _preload(_public(plugins))


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


def judge_init(
    plugins: Sequence[str],
    limits: sandbox.Limits | None = None,
    mother: socket.socket | None = None,
) -> None:
    """Runs once in each judge process: die with the parent, start the zygote, load the
    checks, cap the judge's memory (:func:`limit_judge_memory`).

    Args:
        plugins: The plugins the batch loaded (public and judge-only).
        limits: The batch's limits (default: :class:`~autograder.grader.sandbox.Limits`).
        mother: The socket of the batch's :class:`~autograder.grader.remote.Mother`: the
            zygote is then a fork of it (no imports); None: the judge starts its own.
    """
    sandbox.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    preload = worker_preload(plugins)
    use_mother(mother, preload)
    prestart_zygote(preload)
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


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def _within_memory(prop: Property, flags: list[Flag]) -> Property:
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


def _where(cell: int | None) -> str:
    return f" (cell {cell})" if cell is not None else ""


def _hint_missing(result: CheckResult, cell_errors: dict[int, str]) -> None:
    if not result.passed and "is not defined" in result.feedback and cell_errors:
        number, error = sorted(cell_errors.items())[0]
        result.feedback += f"\n  Note: cell {number} of your notebook {error}"


def grade_submission(submission: Submission, config: JudgeConfig) -> Outcome:
    """Grade one submission: never raises for anything the submission does.

    Raises:
        GraderError: the worker cannot be started at all (grading itself is broken).
    """
    started = time.monotonic()
    digest = notebook_digest(submission)
    props = all_properties(submission.assignment)
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
        outcome.tests = [zero_check(p, message, ["symlink"]) for p in props]
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
            zero_check(p, f"Not graded: {message}.", ["invalid_notebook"])
            for p in props
        ]
        outcome.seconds = time.monotonic() - started
        return outcome

    public = _public(config.plugins)
    session = Session(
        cells,
        config.limits,
        preload=worker_preload(config.plugins),
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
    flags: set[Flag] = {flag for test in outcome.tests for flag in test.flags}
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
        return [zero_check(p, message, ["timeout"]) for p in props]
    notebook_forbidden = [
        e for e in session.events if e.op == "forbidden" and e.task is None
    ]
    if notebook_forbidden:
        first = notebook_forbidden[0]
        message = f"Not graded: your notebook tried to {first.what}{_where(first.cell)}, which submissions may not do."
        return [zero_check(p, message, ["forbidden"]) for p in props]
    subject = RemoteSubject(session)
    results = []
    for prop in props:
        if session.time_left() <= 1:
            results.append(
                zero_check(
                    prop,
                    "Not run: this submission used up its time limit.",
                    ["timeout"],
                )
            )
            continue
        subject.begin(prop)
        result = run_property(_within_memory(prop, subject.flags), subject)
        result.flags = sorted(set(result.flags) | set(subject.flags))
        # Tampering during this property is recorded against its task here, before the next
        # property starts (Session.audit); a worker that cannot be audited voids the result.
        unaudited = session.audit()
        if unaudited is not None:
            session.poisoned.setdefault(prop.task, ("crashed", unaudited))
            result = zero_check(
                prop,
                f"Zero: once this check had run, your code {unaudited}, so its results cannot be trusted.",
                ["crashed"],
            )
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
                results[index] = zero_check(
                    prop,
                    f"Zero for {task}: while it was checked, your code tried to {what}, which submissions may not do.",
                    ["forbidden"],
                )
    return one_cause(results)
