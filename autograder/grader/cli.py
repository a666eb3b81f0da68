"""``autograde``: grade a class of notebook submissions in CI, sandboxed, parallel and resumable.

Commands::

    autograde grade SUBMITTED --out OUT [--jobs N] [--timeout S] [--memory MB]
    autograde demo                      # make grade: release, then grade examples/submitted
    autograde gradescope --assignment ID  # inside Gradescope's container (run_autograder)
    autograde classroom OUT             # results for GitHub Classroom's grading reporter
    autograde grade SUBMITTED --out OUT --scheduler tcp://HOST:PORT|local:N [--shard I/N]
    autograde merge OUT1 OUT2 ... --out OUT  # the shards' outputs, one gradebook
    autograde grade SUBMITTED --out OUT --course course.toml  # late policy: adjusted scores
    autograde report OUT                # class report: report.html + report.csv
    autograde diff OLD_OUT NEW_OUT      # regrade changelog: who gained/lost points, why
    autograde similar SUBMITTED         # overlapping code (a lead, not a verdict)
    autograde export OUT --format canvas|generic  # the gradebook for an LMS

``SUBMITTED`` is an nbgrader-style tree ``<student_id>/<assignment_id>/<assignment_id>.ipynb``
or an nbgrader course folder (its ``submitted/`` is used). Each submission is graded by a
judge process (``--jobs`` of them run at once) whose student code runs in a sandboxed worker
(:mod:`autograder.grader.sandbox`). Outputs go to ``OUT/<student>/<assignment>/`` (results.json,
feedback.html) and ``OUT/gradebook.csv``. A rerun grades only what is not done yet (or whose
notebook or grader changed). Exit status: 0 when every submission was graded, whatever the
scores; 1 when some could not be graded; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TextIO

from autograder.grader import cluster
from autograder.grader.judge import (
    JudgeConfig,
    Submission,
    clean_stale_workdirs,
    find_submissions,
    grade_submission,
    grader_fingerprint,
    judge_init,
    notebook_digest,
    submissions_root,
    zero_outcome,
)
from autograder.grader.remote import STARTUP_S
from autograder.grader.report import (
    HIDDEN_VISIBILITY,
    VISIBILITIES,
    classroom_result,
    load_results,
    log_graded,
    progress_bar,
    summary_table,
    write_atomic,
    write_gradebook,
    write_submission,
)
from autograder.grader.sandbox import (
    ISOLATING,
    LEVELS,
    Limits,
    isolation_available,
    levels_to_try,
    repo_root,
)
from autograder.tasks import ASSIGNMENTS, TASKS, check_modules, load_plugins

__all__ = [
    "BatchPlan",
    "BatchRun",
    "UsageError",
    "grade_batch",
    "main",
    "plan_batch",
    "run_batch",
    "summarise_batch",
]

Results = dict[str, Any]


# --------------------------------------------------------------------------- judge processes

#: Folder of OUT where each judge says what it is grading (read by the parent's watchdog).
_RUNNING = ".running"


def _running_file(out: str | Path, pid: int) -> Path:
    return Path(out) / _RUNNING / f"{pid}.json"


def _judge_preload(assignments: Iterable[str]) -> list[str]:
    """What the judges of a batch import: this module (it holds :func:`_judge_one`), torch
    and the course's public and hidden checks of the batch's assignments (a plugin's come in
    through ``judge_init``)."""
    modules = [
        "autograder.grader.forkserver_guard",  # first: the server dies with this process
        "torch",
        "autograder.grader.cli",
    ]
    for assignment in sorted(set(assignments) & set(ASSIGNMENTS)):
        modules += [m for m in check_modules(ASSIGNMENTS[assignment]) if m is not None]
    return modules


def _judge_context(assignments: Iterable[str]) -> BaseContext:
    """Judges fork from a server that imported :func:`_judge_preload` once.

    A spawned judge spent about 3 CPU seconds importing torch and the checks, once per judge
    and again each time a broken pool is rebuilt; a fork of the server starts in
    milliseconds. The server is a fresh interpreter that has run nothing but those imports
    (no threads, no student code); it dies with this process
    (:mod:`autograder.grader.forkserver_guard`), and each judge's parent-death signal
    (``judge_init``) then ends the judges.
    """
    context = get_context("forkserver")
    context.set_forkserver_preload(_judge_preload(assignments))
    return context


def _judge_one(submission: Submission, config: JudgeConfig, out: str) -> Results:
    """Runs in a judge process: grade one submission and write its files under ``out``."""
    marker = _running_file(out, os.getpid())
    marker.parent.mkdir(exist_ok=True)
    write_atomic(marker, json.dumps({"key": submission.key, "started": time.time()}))
    outcome = grade_submission(submission, config)
    results = write_submission(Path(out), outcome)
    log_graded(
        Path(out),
        submission.key,
        results,
        outcome.seconds,
        outcome.sandbox,
        judge=os.getpid(),
    )
    marker.unlink(missing_ok=True)
    return results


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
    pending, finished = [], {}
    for submission in submissions:
        existing = (
            None
            if force
            else load_results(out, submission.student, submission.assignment)
        )
        extra = (existing or {}).get("extra_data", {})
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
    if plan.pending and scheduler:
        failures += cluster.run_on_dask(
            scheduler, plan.pending, plan.config, plan.out, progress, plan.finished
        )
    elif plan.pending:
        failures += _run_pool(
            plan.pending, plan.config, plan.out, jobs, progress, plan.finished
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


#: Seconds past a submission's own budget before the watchdog kills its judge.
WATCHDOG_MARGIN_S = 180.0
#: Seconds a judge may stay stopped (SIGSTOP) before the watchdog kills it.
STOPPED_S = 10.0
#: Judge deaths one submission may cause before it gets zeros instead of a retry.
MAX_JUDGE_DEATHS = 2  # once among others, once alone


def _process_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (``T`` stopped), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _running(out: Path) -> dict[int, tuple[str, float]]:
    """What each judge said it is grading: ``{pid: (submission key, start time)}``."""
    found = {}
    for path in (out / _RUNNING).glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            found[int(path.stem)] = (str(data["key"]), float(data["started"]))
    return found


def _watchdog(out: Path, budget: float, stopped_since: dict[int, float]) -> list[str]:
    """Kill judges that are stopped or past ``budget`` seconds on one submission; return the
    keys of the submissions they were grading. Runs in the parent, which no submission
    reaches, so a stopped or hung judge never hangs the batch."""
    killed = []
    now = time.time()
    for pid, (key, started) in _running(out).items():
        state = _process_state(pid)
        if state is None:
            continue
        if state in ("T", "t"):
            stopped_since.setdefault(pid, now)
        else:
            stopped_since.pop(pid, None)
        stuck = now - stopped_since.get(pid, now) > STOPPED_S
        if stuck or now - started > budget:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.append(key)
    return killed


def _record_judge_death(
    submission: Submission, config: JudgeConfig, out: Path, deaths: int
) -> Results:
    outcome = zero_outcome(
        submission,
        config,
        "crashed",
        f"Not graded: the grader's judge process died or was stopped {deaths} times while "
        "grading this submission (killed, stopped, or out of time); the rest of the class was "
        "graded without it.",
    )
    return write_submission(out, outcome)


def _run_pool(
    pending: list[Submission],
    config: JudgeConfig,
    out: Path,
    jobs: int,
    progress: bool,
    finished: dict[str, Results],
) -> list[str]:
    """Grade ``pending`` with ``jobs`` judge processes; survive judges that die or hang.

    A judge that dies (a submission killed it) breaks the pool: a new pool is started, the
    submissions that were in flight become suspects and the rest are queued again. Suspects
    are then graded one at a time, so a suspect whose judge dies again was alone: it alone
    gets zeros with the ``crashed`` flag, and every honest suspect is graded normally. The
    watchdog (in this process, which no submission reaches) kills a judge that stays stopped
    or runs past its submission's budget, which breaks the pool the same way.
    """
    failures: list[str] = []
    queue: list[Submission] = list(pending)
    suspects: list[Submission] = []
    unexplained = (
        0  # pool breaks with no submission in flight: grading itself is broken
    )
    # The submission's budget, two worker starts (the first and one restart), then a margin.
    budget = config.limits.timeout_s + 2 * STARTUP_S + WATCHDOG_MARGIN_S
    (out / _RUNNING).mkdir(exist_ok=True)
    for stale in (out / _RUNNING).glob("*.json"):
        stale.unlink(missing_ok=True)
    bar = progress_bar(len(pending), "grading", progress)
    try:
        while queue or suspects:
            alone = not queue  # suspects: one judge, one submission at a time
            batch = suspects if alone else queue
            pool = ProcessPoolExecutor(
                max_workers=1 if alone else max(1, min(jobs, len(batch))),
                mp_context=_judge_context(s.assignment for s in pending),
                initializer=judge_init,
                initargs=(config.plugins, config.limits),
            )
            futures = {pool.submit(_judge_one, s, config, str(out)): s for s in batch}
            left: list[Submission] = []
            stopped_since: dict[int, float] = {}
            broken = False
            waiting = set(futures)
            while waiting:
                done, waiting = wait(waiting, timeout=2.0, return_when=FIRST_COMPLETED)
                for future in done:
                    submission = futures[future]
                    try:
                        finished[submission.key] = future.result()
                    except BrokenProcessPool:
                        broken = True
                        left.append(submission)
                        continue
                    except (
                        Exception
                    ) as error:  # grading itself failed: report, keep going
                        failures.append(
                            f"{submission.key}: {type(error).__name__}: {error}"
                        )
                    bar.set_postfix_str(submission.key, refresh=False)
                    bar.update(1)
                _watchdog(out, budget, stopped_since)
            if broken:
                # The executor ends the other judges with SIGTERM and waits for them: a stopped
                # judge never acts on it, so every judge left gets SIGKILL first.
                processes = getattr(pool, "_processes", None) or {}
                pids = {p.pid for p in list(processes.values())} | set(_running(out))
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            pool.shutdown(wait=True, cancel_futures=True)
            in_flight = set()
            for pid, (key, _started) in _running(out).items():
                _running_file(out, pid).unlink(missing_ok=True)
                in_flight.add(key)
            left_keys = {s.key for s in left}
            if broken and not in_flight & left_keys:
                unexplained += 1
                if unexplained >= 3:
                    failures += [
                        f"{s.key}: the judge processes keep dying before grading starts"
                        for s in left
                    ]
                    break
            if alone:
                suspects = []
                for submission in left:
                    if broken and submission.key in in_flight:
                        finished[submission.key] = _record_judge_death(
                            submission, config, out, 2
                        )
                        bar.update(1)
                    else:
                        suspects.append(submission)
            else:
                queue = [s for s in left if s.key not in in_flight]
                suspects += [s for s in left if s.key in in_flight]
            if broken:
                print(
                    f"\nautograde: a judge process died while grading "
                    f"{', '.join(sorted(in_flight & left_keys)) or '?'}; "
                    f"{len(queue) + len(suspects)} submission(s) queued again",
                    file=sys.stderr,
                )
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\nautograde: interrupted; {len(finished)} graded. Rerun the same command to resume.",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(130)  # judges and workers die with us (parent-death signals)
    bar.close()
    return failures


# --------------------------------------------------------------------------- commands


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        memory_mb=args.memory,
        timeout_s=args.timeout,
        cell_timeout_s=min(args.cell_timeout, args.timeout),
    )


def _add_limits(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()  # the one statement of the budgets
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout_s,
        metavar="SECONDS",
        help=f"wall clock per submission: notebook and checks (default {defaults.timeout_s:g})",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=defaults.cell_timeout_s,
        metavar="SECONDS",
        help=f"wall clock per notebook cell (default {defaults.cell_timeout_s:g})",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=defaults.memory_mb,
        metavar="MB",
        help=f"memory per submission on top of the libraries (default {defaults.memory_mb})",
    )
    parser.add_argument(
        "--sandbox",
        choices=["auto", *LEVELS],
        default="auto",
        help="isolation level (default: the strongest that works)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="grade even where no isolating level works (rlimits: an audit hook only, which "
        "a submission can defeat); never for real submissions",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE to register more assignments (tests)",
    )
    parser.add_argument(
        "--hidden-visibility",
        choices=VISIBILITIES,
        default=HIDDEN_VISIBILITY,
        help="Gradescope visibility of the hidden checks in results.json (default "
        f"{HIDDEN_VISIBILITY}: students see them once grades are published; public "
        "checks are always visible)",
    )


def _grade(args: argparse.Namespace) -> int:
    shard = None
    if args.shard is not None:
        try:
            shard = cluster.parse_shard(args.shard)
        except ValueError as error:
            print(f"autograde: {error}", file=sys.stderr)
            return 2
    course = _find_course(args.course, args.submitted)
    if isinstance(course, int):
        return course
    status = grade_batch(
        args.submitted,
        args.out,
        jobs=args.jobs,
        limits=_limits(args),
        plugins=args.plugin,
        force=args.force,
        sandbox_level=args.sandbox,
        progress=not args.no_progress,
        assignments=args.assignment,
        students=args.student,
        insecure=args.insecure,
        scheduler=args.scheduler,
        shard=shard,
        hidden_visibility=args.hidden_visibility,
    )
    return _apply_course(course, args.submitted, args.out, status)


def _merge(args: argparse.Namespace) -> int:
    return cluster.merge_outputs(args.parts, args.out, plugins=args.plugin)


def _repo() -> Path:
    return repo_root() or Path.cwd()


def _demo(args: argparse.Namespace) -> int:
    root = _repo()
    release = root / "scripts" / "release.py"
    if release.is_file() and not args.no_release:
        print(
            "autograde demo: releasing the assignments (scripts/release.py)",
            file=sys.stderr,
        )
        done = subprocess.run([sys.executable, str(release)], cwd=root, check=False)
        if done.returncode != 0:
            print(
                "autograde demo: release failed; grading with the assignments as they are",
                file=sys.stderr,
            )
    elif not release.is_file():
        print(
            "autograde demo: scripts/release.py not found; skipping the release",
            file=sys.stderr,
        )
    submitted = root / "examples" / "submitted"
    if not submitted.is_dir():
        print(
            f"autograde demo: {submitted} is missing: run python scripts/make_demo_class.py",
            file=sys.stderr,
        )
        return 2
    out = args.out or root / "out" / "demo"
    status = grade_batch(
        submitted,
        out,
        jobs=args.jobs,
        limits=_limits(args),
        plugins=args.plugin,
        force=args.force,
        sandbox_level=args.sandbox,
        progress=not args.no_progress,
        insecure=args.insecure,
        hidden_visibility=args.hidden_visibility,
    )
    return _demo_instructor(root, submitted, Path(out), status)


def _gradescope(args: argparse.Namespace) -> int:
    """Gradescope's run_autograder: one submission in, /autograder/results/results.json out."""
    assignment = args.assignment
    submission = Path(args.submission)
    # os.walk never enters a linked folder; a linked notebook is kept as a link (below), so
    # the grader flags it instead of grading what it points to.
    notebooks = sorted(
        Path(folder) / name
        for folder, _dirs, names in os.walk(submission, followlinks=False)
        for name in names
        if name.endswith(".ipynb") and ".ipynb_checkpoints" not in Path(folder).parts
    )
    chosen = next(
        (p for p in notebooks if p.name == f"{assignment}.ipynb"),
        notebooks[0] if len(notebooks) == 1 else None,
    )
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autograde-gs-") as tmp:
        tree = Path(tmp) / "submitted" / "submission" / assignment
        tree.mkdir(parents=True)
        if chosen is not None:
            shutil.copyfile(chosen, tree / f"{assignment}.ipynb", follow_symlinks=False)
        out = Path(tmp) / "out"
        code = grade_batch(
            Path(tmp) / "submitted",
            out,
            jobs=1,
            limits=_limits(args),
            plugins=args.plugin,
            sandbox_level=args.sandbox,
            progress=False,
            stream=sys.stderr,
            insecure=args.insecure,
            hidden_visibility=args.hidden_visibility,
        )
        produced = out / "submission" / assignment / "results.json"
        if produced.is_file():
            shutil.copyfile(produced, results_dir / "results.json")
        else:
            failure = {
                "score": 0,
                "output": "The autograder could not grade this submission; your instructor has been told.",
                "tests": [],
            }
            (results_dir / "results.json").write_text(json.dumps(failure))
    return code


def _classroom(args: argparse.Namespace) -> int:
    """Print OUT's results as GitHub Classroom's runner result (base64 JSON)."""
    all_results = [
        json.loads(p.read_text())
        for p in sorted(Path(args.out).glob("*/*/results.json"))
    ]
    if not all_results:
        print(f"autograde: no results.json under {args.out}", file=sys.stderr)
        return 1
    payload = json.dumps(classroom_result(all_results)).encode()
    print(base64.b64encode(payload).decode() if not args.json else payload.decode())
    return 0


# --------------------------------------------------------------------------- after the deadline


def _find_course(given: Path | None, submitted: Path) -> Any:
    """The course.toml to apply (given, else ``SUBMITTED/course.toml``), None, or an exit
    status (2) when it cannot be read."""
    from autograder.grader.course import CourseError, load_course

    path = given
    if path is None:
        found = [p for p in (submitted / "course.toml",) if p.is_file()]
        path = found[0] if found else None
    if path is None:
        return None
    try:
        return load_course(path)
    except CourseError as error:
        print(f"autograde: {error}", file=sys.stderr)
        return 2


def _apply_course(course: Any, submitted: Path, out: Path, status: int) -> int:
    """Append the late policy's columns to OUT/gradebook.csv and print what it did."""
    gradebook = Path(out) / "gradebook.csv"
    if course is None or not gradebook.is_file():
        return status
    from autograder.grader.course import adjust_gradebook

    _outcomes, lines = adjust_gradebook(gradebook, course, submissions_root(submitted))
    for line in lines:
        print(line)
    return status


def _report(args: argparse.Namespace) -> int:
    from autograder.grader.classreport import write_report

    try:
        page, table, report = write_report(args.out, args.to)
    except FileNotFoundError as error:
        print(f"autograde: {error}", file=sys.stderr)
        return 2
    for headline in report["headlines"][:5]:
        print(headline["text"])
    print(f"class report: {page} (and {table})")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from autograder.grader.classreport import (
        diff_classes,
        format_diff,
        load_class,
        write_diff_csv,
    )

    try:
        old, new = load_class(args.old), load_class(args.new)
    except FileNotFoundError as error:
        print(f"autograde: {error}", file=sys.stderr)
        return 2
    changes = diff_classes(old, new)
    print(format_diff(changes, old, new))
    if args.csv is not None:
        write_diff_csv(args.csv, changes)
        print(f"changelog: {args.csv}")
    return 0


def _similar(args: argparse.Namespace) -> int:
    from autograder.grader.similar import summary, write_similar

    if not args.submitted.is_dir():
        print(f"autograde: {args.submitted} is not a folder", file=sys.stderr)
        return 2
    to = args.to or args.submitted
    if not 0 <= args.threshold <= 1:
        print("autograde: --threshold is a fraction in [0, 1]", file=sys.stderr)
        return 2
    page, pairs, notes = write_similar(
        args.submitted,
        to,
        release_root=args.release or _repo(),
        threshold=args.threshold,
        assignments=getattr(args, "assignment", None),
    )
    for line in summary(pairs, notes):
        print(line)
    print(f"similarity view: {page}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from autograder.grader.course import (
        CourseError,
        canvas_rows,
        generic_rows,
        load_course,
        read_gradebook,
        write_csv,
    )

    gradebook = args.out / "gradebook.csv"
    if not gradebook.is_file():
        print(f"autograde: no gradebook.csv in {args.out}", file=sys.stderr)
        return 2
    try:
        course = load_course(args.course) if args.course else None
    except CourseError as error:
        print(f"autograde: {error}", file=sys.stderr)
        return 2
    _header, rows = read_gradebook(gradebook)
    table = canvas_rows(rows, course) if args.format == "canvas" else generic_rows(rows)
    target = args.to or args.out / f"gradebook_{args.format}.csv"
    write_csv(target, table)
    print(f"{args.format} gradebook: {target}")
    return 0


def _demo_instructor(root: Path, submitted: Path, out: Path, status: int) -> int:
    """make grade's last steps: the demo course's late policy, the LMS export, the
    similarity check and the class report, whose path is printed last."""
    import argparse as _argparse

    course = _find_course(root / "examples" / "course.toml", submitted)
    if not isinstance(course, int):
        _apply_course(course, submitted, out, status)
    if (out / "gradebook.csv").is_file():
        toml = root / "examples" / "course.toml"
        _export(
            _argparse.Namespace(
                out=out,
                course=toml if toml.is_file() else None,
                format="canvas",
                to=None,
            )
        )
    _similar(
        _argparse.Namespace(submitted=submitted, to=out, release=root, threshold=0.5)
    )
    code = _report(_argparse.Namespace(out=out, to=None))
    return status or code


def _add_instructor_commands(commands: Any) -> None:
    """``report``, ``diff``, ``similar`` and ``export``: what an instructor runs after grading."""
    report = commands.add_parser(
        "report",
        help="class report (HTML + CSV): scores, failure rates, known bugs, flags",
    )
    report.add_argument("out", type=Path, help="a graded OUT folder")
    report.add_argument(
        "--to",
        type=Path,
        default=None,
        help="folder for report.html/report.csv (default OUT)",
    )
    report.set_defaults(run=_report)

    diff = commands.add_parser(
        "diff",
        help="who gained or lost points between two gradings of a class, and why",
    )
    diff.add_argument("old", type=Path, help="the earlier OUT folder")
    diff.add_argument("new", type=Path, help="the regraded OUT folder")
    diff.add_argument(
        "--csv", type=Path, default=None, help="also write the changelog as CSV"
    )
    diff.set_defaults(run=_diff)

    similar = commands.add_parser(
        "similar",
        help="rank pairs of submissions by overlapping code (a lead for a human, not a verdict)",
    )
    similar.add_argument(
        "submitted", type=Path, help="SUBMITTED/<student>/<assignment>/..."
    )
    similar.add_argument(
        "--to",
        type=Path,
        default=None,
        help="folder for similar.html/.csv (default SUBMITTED)",
    )
    similar.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="smallest share of a notebook's code found in the other to list (default 0.5)",
    )
    similar.add_argument(
        "--release",
        type=Path,
        default=None,
        help="folder holding assignments/<id>/<id>.ipynb, the boilerplate (default: the repo)",
    )
    similar.add_argument(
        "--assignment",
        action="append",
        help="only this assignment (repeatable): pairs are compared within an assignment, "
        "so a large class can be split into one job per assignment",
    )
    similar.set_defaults(run=_similar)

    export = commands.add_parser(
        "export",
        help="OUT/gradebook.csv for an LMS: Canvas's import layout or a plain table",
    )
    export.add_argument("out", type=Path, help="a graded OUT folder")
    export.add_argument("--format", choices=["canvas", "generic"], default="canvas")
    export.add_argument(
        "--course",
        type=Path,
        default=None,
        help="course.toml: names, Canvas ids, students",
    )
    export.add_argument(
        "--to", type=Path, default=None, help="default OUT/gradebook_FORMAT.csv"
    )
    export.set_defaults(run=_export)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autograde",
        description="Grade notebook submissions in a sandbox (DSC190 lecture 17).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser(
        "grade", help="grade an nbgrader-style tree of submissions"
    )
    grade.add_argument(
        "submitted",
        type=Path,
        help="SUBMITTED/<student>/<assignment>/<assignment>.ipynb, or an nbgrader course folder",
    )
    grade.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (results.json, feedback.html, gradebook.csv)",
    )
    grade.add_argument(
        "--jobs", type=int, default=1, help="submissions graded at once (default 1)"
    )
    grade.add_argument(
        "--assignment", action="append", help="grade only this assignment (repeatable)"
    )
    grade.add_argument(
        "--student", action="append", help="grade only this student (repeatable)"
    )
    grade.add_argument(
        "--force", action="store_true", help="regrade submissions already graded"
    )
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    grade.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="grade on a Dask cluster: tcp://HOST:PORT, or local:N for N local workers",
    )
    grade.add_argument(
        "--shard",
        metavar="I/N",
        help="grade only the I-th of N disjoint, stable parts (then autograde merge)",
    )
    _add_limits(grade)
    grade.add_argument(
        "--course",
        type=Path,
        default=None,
        metavar="COURSE_TOML",
        help="deadlines, extensions and late policy (default: SUBMITTED/course.toml when "
        "present): gradebook.csv gets the adjusted score next to the raw one",
    )
    grade.set_defaults(run=_grade)

    merge = commands.add_parser(
        "merge", help="combine the OUT folders of --shard runs into one gradebook"
    )
    merge.add_argument("parts", type=Path, nargs="+", help="the shards' OUT folders")
    merge.add_argument("--out", type=Path, required=True, help="the combined folder")
    merge.add_argument("--plugin", action="append", default=[], metavar="MODULE")
    merge.set_defaults(run=_merge)

    demo = commands.add_parser(
        "demo", help="release the assignments and grade the demo class (make grade)"
    )
    demo.add_argument("--jobs", type=int, default=2)
    demo.add_argument("--out", type=Path, default=None, help="default: out/demo")
    demo.add_argument("--force", action="store_true")
    demo.add_argument(
        "--no-release", action="store_true", help="skip scripts/release.py"
    )
    demo.add_argument("--no-progress", action="store_true")
    _add_limits(demo)
    demo.set_defaults(run=_demo)

    gradescope = commands.add_parser(
        "gradescope", help="grade one submission inside Gradescope's container"
    )
    gradescope.add_argument("--assignment", required=True)
    gradescope.add_argument("--submission", default="/autograder/submission")
    gradescope.add_argument("--results", default="/autograder/results")
    _add_limits(gradescope)
    gradescope.set_defaults(run=_gradescope)

    classroom = commands.add_parser(
        "classroom", help="OUT's results for GitHub Classroom's grading reporter"
    )
    classroom.add_argument("out", type=Path)
    classroom.add_argument(
        "--json", action="store_true", help="plain JSON instead of base64"
    )
    classroom.set_defaults(run=_classroom)
    _add_instructor_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autograde`` (and ``python -m autograder.grader.cli``)."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
