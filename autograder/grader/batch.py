"""A batch: plan what to grade, run the plan on an executor, summarise what it did.

:func:`grade_batch` is :func:`plan_batch` (discovery, the resume check against each
results.json, the judges' shared :class:`~autograder.grader.judge.JudgeConfig`),
:func:`run_batch` (the pending submissions on an :class:`Executor`: the local judge pool,
:class:`autograder.grader.pool.LocalPool`, or a Dask cluster,
:class:`autograder.grader.cluster.DaskCluster`) and :func:`summarise_batch` (the gradebook,
the summary table, the exit status). The command line (:mod:`autograder.grader.cli`) only
turns arguments into these calls.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from autograder.grader import cluster
from autograder.grader.fingerprint import grader_fingerprint, notebook_digest
from autograder.grader.judge import JudgeConfig, clean_stale_workdirs
from autograder.grader.pool import LocalPool
from autograder.grader.report import (
    HIDDEN_VISIBILITY,
    ResultsRecord,
    load_results,
    summary_table,
    write_gradebook,
)
from autograder.grader.sandbox import (
    ISOLATING,
    Limits,
    isolation_available,
    levels_to_try,
)
from autograder.grader.submissions import (
    Submission,
    find_submissions,
    submissions_root,
)
from autograder.tasks import TASKS, load_plugins

__all__ = [
    "BatchPlan",
    "BatchRun",
    "Executor",
    "Results",
    "UsageError",
    "grade_batch",
    "plan_batch",
    "run_batch",
    "summarise_batch",
]

#: A results.json's contents, as written and as read back.
Results = ResultsRecord


class Executor(Protocol):
    """What grades a plan's pending submissions: :class:`autograder.grader.pool.LocalPool`
    (judge processes on this machine) or :class:`autograder.grader.cluster.DaskCluster`."""

    def run(
        self,
        pending: list[Submission],
        config: JudgeConfig,
        out: Path,
        progress: bool,
        finished: dict[str, Results],
    ) -> list[str]:
        """Grade ``pending`` with ``config``: write each submission's files under ``out`` as
        it is graded and record its results.json in ``finished`` (by key); never stop for
        what a submission does.

        Returns:
            The submissions that grading itself could not handle, as messages.
        """
        ...


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- grading a batch


class UsageError(Exception):
    """The batch cannot be graded as asked (exit status 2); the message says why."""


@dataclass
class BatchPlan:
    """What a batch will grade, decided before any judge starts (:func:`plan_batch`)."""

    #: Where the outputs go.
    out: Path
    #: Every submission of the batch (of its shard), sorted.
    submissions: list[Submission]
    #: The submissions to grade now (no up-to-date results.json).
    pending: list[Submission]
    #: results.json contents by submission key: those up to date now, then those graded.
    finished: dict[str, Results]
    #: What every judge of the batch needs: limits, plugins, secrets, fingerprints, levels.
    config: JudgeConfig
    #: Discovery problems (``"student/assignment: ..."``): never graded, reported at the end.
    problems: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None


@dataclass
class BatchRun:
    """What running a plan did (:func:`run_batch`); the results are in the plan's ``finished``."""

    #: Submissions that grading itself could not handle, as messages.
    failures: list[str]
    #: Wall-clock seconds the judges took.
    seconds: float


def _levels(sandbox_level: str, insecure: bool) -> tuple[str, ...] | None:
    """The sandbox levels a batch may use: the one asked for, else never a non-isolating one
    unless ``insecure`` (None: whatever works)."""
    if sandbox_level != "auto":
        return (sandbox_level,)
    if insecure:
        return None
    return tuple(level for level in levels_to_try() if level in ISOLATING)


def _remove_partial_writes(out: Path) -> None:
    """Delete temporary files of writes cut short by a kill: never a result."""
    for partial in out.glob("*/*/.*.tmp"):
        owner = partial.suffixes[-2].lstrip(".") if len(partial.suffixes) > 1 else ""
        if not _alive(owner):
            partial.unlink(missing_ok=True)


def plan_batch(
    submitted: Path,
    out: Path,
    *,
    limits: Limits | None = None,
    plugins: Sequence[str] = (),
    force: bool = False,
    sandbox_level: str = "auto",
    assignments: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    insecure: bool = False,
    shard: tuple[int, int] | None = None,
    hidden_visibility: str = HIDDEN_VISIBILITY,
) -> BatchPlan:
    """Find the submissions under ``submitted`` and decide which need grading into ``out``.

    A submission whose results.json records the same notebook digest and grader fingerprint
    is done; ``force`` regrades everything. Creates ``out`` and cleans what killed runs left.

    Raises:
        UsageError: No isolating sandbox here (and not ``insecure``), ``submitted`` is not a
            folder, or it holds no submissions.
    """
    limits = limits or Limits()
    if not insecure and (
        sandbox_level == "rlimits"
        or (sandbox_level == "auto" and not isolation_available())
    ):
        raise UsageError(
            "no isolating sandbox here (run as root, or where unprivileged user "
            "namespaces are allowed: sysctl kernel.unprivileged_userns_clone=1 / "
            "user.max_user_namespaces > 0). The rlimits level only has an audit hook, which a "
            "submission can switch off to read the hidden checks or other students' work; "
            "pass --insecure to grade anyway (never for real submissions)."
        )
    plugins = load_plugins(plugins)
    if not submitted.is_dir():
        raise UsageError(f"{submitted} is not a folder")
    submissions, problems = find_submissions(
        submitted, assignments=assignments, students=students
    )
    if shard is not None:
        submissions, problems = cluster.select_shard(submissions, problems, shard)
    if not submissions and not problems and shard is None:
        raise UsageError(
            f"no submissions under {submitted} (expected <student>/<assignment>/<assignment>.ipynb)"
        )
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_workdirs()
    _remove_partial_writes(out)
    fingerprints = {
        a: grader_fingerprint(limits, a, plugins, hidden_visibility)
        for a in sorted({s.assignment for s in submissions})
    }
    pending: list[Submission] = []
    finished: dict[str, Results] = {}
    for submission in submissions:
        existing = (
            None
            if force
            else load_results(out, submission.student, submission.assignment)
        )
        extra: Mapping[str, object] = existing.get("extra_data", {}) if existing else {}
        if (
            existing
            and extra.get("notebook_sha256") == notebook_digest(submission)
            and extra.get("grader") == fingerprints[submission.assignment]
        ):
            finished[submission.key] = existing
        else:
            pending.append(submission)
    config = JudgeConfig(
        limits=limits,
        secret_paths=(str(out.resolve()), str(submissions_root(submitted).resolve())),
        plugins=tuple(plugins),
        fingerprints=fingerprints,
        levels=_levels(sandbox_level, insecure),
        hidden_visibility=hidden_visibility,
    )
    return BatchPlan(out, submissions, pending, finished, config, problems, shard)


def run_batch(
    plan: BatchPlan,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> BatchRun:
    """Grade the plan's pending submissions with ``jobs`` judge processes, or on the Dask
    cluster at ``scheduler``; each result is written and recorded in ``plan.finished``."""
    failures = list(plan.problems)
    started = time.monotonic()
    executor: Executor = (
        cluster.DaskCluster(scheduler) if scheduler else LocalPool(jobs)
    )
    if plan.pending:
        failures += executor.run(
            plan.pending, plan.config, plan.out, progress, plan.finished
        )
    return BatchRun(failures, time.monotonic() - started)


def summarise_batch(plan: BatchPlan, run: BatchRun, stream: TextIO) -> int:
    """Write the gradebook (and a shard's manifest), print the summary; return the status.

    Returns:
        0 when every submission was graded, whatever the scores; 1 otherwise (a discovery
        problem, a grading failure, or a check the grader itself could not run).
    """
    out = plan.out
    all_results = [
        plan.finished[s.key] for s in plan.submissions if s.key in plan.finished
    ]
    write_gradebook(out / "gradebook.csv", all_results, TASKS)
    if plan.shard is not None:
        cluster.write_shard_manifest(out, plan.shard, plan.submissions)
    print(summary_table(all_results), file=stream)
    levels_used = sorted(
        {
            str(r["extra_data"]["sandbox"])
            for r in all_results
            if r["extra_data"].get("sandbox")
        }
    )
    graded_now = sum(1 for s in plan.pending if s.key in plan.finished)
    rate = (
        f", {60 * graded_now / run.seconds:.1f} submissions/minute"
        if graded_now and run.seconds > 0
        else ""
    )
    print(
        f"\nGraded {len(all_results)} of {len(plan.submissions)} submissions ({graded_now} "
        f"this run in {run.seconds:.1f} s{rate}); sandbox: {', '.join(levels_used) or '-'}; "
        f"results in {out}/, gradebook {out / 'gradebook.csv'}",
        file=stream,
    )
    failures = list(run.failures)
    grader_errors = [
        r["extra_data"]["student_id"] + "/" + r["extra_data"]["assignment_id"]
        for r in all_results
        if "grader_error" in (r["extra_data"].get("flags") or [])
    ]
    if grader_errors:
        failures.append(
            f"checks that the grader itself could not run (see grader_error in results.json): {', '.join(grader_errors)}"
        )
    for failure in failures:
        print(f"autograde: NOT GRADED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def grade_batch(
    submitted: Path,
    out: Path,
    *,
    jobs: int = 1,
    limits: Limits | None = None,
    plugins: Sequence[str] = (),
    force: bool = False,
    sandbox_level: str = "auto",
    progress: bool = True,
    assignments: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    stream: TextIO | None = None,
    insecure: bool = False,
    scheduler: str | None = None,
    shard: tuple[int, int] | None = None,
    hidden_visibility: str = HIDDEN_VISIBILITY,
) -> int:
    """Grade every submission under ``submitted`` into ``out``; return the exit status.

    :func:`plan_batch`, :func:`run_batch`, then :func:`summarise_batch`. Without
    ``insecure``, grading needs an isolating sandbox level
    (:data:`autograder.grader.sandbox.ISOLATING`): the status is 2 where none can work.
    ``scheduler`` (``tcp://HOST:PORT`` or ``local:N``) grades on a Dask cluster and ``shard``
    ``(I, N)`` keeps the I-th of N disjoint parts (:mod:`autograder.grader.cluster`).
    """
    try:
        plan = plan_batch(
            submitted,
            out,
            limits=limits,
            plugins=plugins,
            force=force,
            sandbox_level=sandbox_level,
            assignments=assignments,
            students=students,
            insecure=insecure,
            shard=shard,
            hidden_visibility=hidden_visibility,
        )
    except UsageError as error:
        print(f"autograde: {error}", file=sys.stderr)
        return 2
    print(
        f"autograde: {len(plan.submissions)} submissions in {submitted}: "
        f"{len(plan.finished)} already graded, {len(plan.pending)} to grade "
        + (f"on {scheduler}" if scheduler else f"with {jobs} job(s)"),
        file=sys.stderr,
    )
    run = run_batch(plan, jobs=jobs, scheduler=scheduler, progress=progress)
    return summarise_batch(plan, run, stream or sys.stdout)
