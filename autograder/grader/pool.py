"""The local executor: judge processes forked from a preloaded server, watched from here.

:class:`LocalPool` grades a batch's pending submissions with ``jobs`` judge processes (a
:class:`~concurrent.futures.ProcessPoolExecutor` on a ``forkserver`` context whose server
imported torch and the batch's checks once). A judge that dies breaks the pool: it is
rebuilt, the submissions that were in flight are regraded one at a time, and one that kills
its judge again alone gets zeros (``crashed``, :func:`autograder.grader.outcome.zero_outcome`).
The watchdog, in this process, which no submission reaches, kills a judge that stays stopped
or runs past its submission's budget.

Each judge says who it is and what it grades in files under ``OUT/.running/``:
``<pid>.judge`` from its initializer (every judge of the pool, idle or not) and
``<pid>.json`` (the submission and its start) while it grades one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path

from autograder.grader.judge import (
    JudgeConfig,
    grade_submission,
    judge_init,
    worker_preload,
)
from autograder.grader.outcome import zero_outcome
from autograder.grader.remote import STARTUP_S, Mother
from autograder.grader.report import (
    ResultsRecord,
    log_graded,
    progress_bar,
    write_atomic,
    write_submission,
)
from autograder.grader.sandbox import Limits
from autograder.grader.submissions import Submission
from autograder.tasks import ASSIGNMENTS, check_modules

__all__ = ["LocalPool", "MAX_JUDGE_DEATHS", "STOPPED_S", "WATCHDOG_MARGIN_S"]

#: A results.json's contents (:data:`autograder.grader.batch.Results`).
Results = ResultsRecord


class LocalPool:
    """The :class:`autograder.grader.batch.Executor` of this machine: ``jobs`` judges."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs

    def run(
        self,
        pending: list[Submission],
        config: JudgeConfig,
        out: Path,
        progress: bool,
        finished: dict[str, Results],
    ) -> list[str]:
        """Grade ``pending`` (:func:`_run_pool`); the failures, as messages."""
        return _run_pool(pending, config, out, self.jobs, progress, finished)


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
        "autograder.grader.pool",  # holds _judge_one
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


#: What each judge's initializer leaves in ``OUT/.running/``: its pid, so the pool can end
#: every judge it started, idle or stopped, without reading the executor's internals.
_JUDGE_SUFFIX = ".judge"


def _judge_start(
    running: str,
    plugins: Sequence[str],
    limits: Limits,
    mother: socket.socket | None = None,
) -> None:
    """A judge's initializer: say who it is (``OUT/.running/<pid>.judge``), then
    :func:`autograder.grader.judge.judge_init` (its zygote a fork of the batch's ``mother``)."""
    Path(running, f"{os.getpid()}{_JUDGE_SUFFIX}").touch()
    judge_init(plugins, limits, mother)


def _judges(out: Path) -> set[int]:
    """The pids of the judges the current pool started (:func:`_judge_start`)."""
    return {
        int(path.stem)
        for path in (out / _RUNNING).glob(f"*{_JUDGE_SUFFIX}")
        if path.stem.isdigit()
    }


def _forget_judges(out: Path) -> None:
    for path in (out / _RUNNING).glob(f"*{_JUDGE_SUFFIX}"):
        path.unlink(missing_ok=True)


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


def _stopped_too_long(
    pid: int, state: str | None, stopped_since: dict[int, float], now: float
) -> bool:
    """Whether ``pid`` (in ``state``, from /proc) has stayed stopped (SIGSTOP) for more than
    :data:`STOPPED_S`; records when it was first seen stopped in ``stopped_since``."""
    if state in ("T", "t"):
        stopped_since.setdefault(pid, now)
    else:
        stopped_since.pop(pid, None)
    return now - stopped_since.get(pid, now) > STOPPED_S


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
        stuck = _stopped_too_long(pid, state, stopped_since, now)
        if stuck or now - started > budget:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.append(key)
    return killed


def _mother_stopped(mother: Mother, stopped_since: dict[int, float]) -> bool:
    """Whether the batch's mother has stayed stopped too long: a judge waiting for a zygote
    from it would wait its whole start-up time."""
    pid = mother.process.pid
    return _stopped_too_long(pid, _process_state(pid), stopped_since, time.time())


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
    # Pool breaks with no submission in flight: grading itself is broken.
    unexplained = 0
    # The submission's budget, two worker starts (the first and one restart), then a margin.
    budget = config.limits.timeout_s + 2 * STARTUP_S + WATCHDOG_MARGIN_S
    (out / _RUNNING).mkdir(exist_ok=True)
    for stale in (out / _RUNNING).glob("*.json"):
        stale.unlink(missing_ok=True)
    _forget_judges(out)
    bar = progress_bar(len(pending), "grading", progress)
    # One clean interpreter imports the workers' modules for the whole batch; every judge
    # (of every pool below) forks its zygote from it instead of importing them again.
    mother: Mother | None = None
    with contextlib.suppress(OSError, ValueError):
        mother = Mother(worker_preload(config.plugins))
    try:
        while queue or suspects:
            alone = not queue  # suspects: one judge, one submission at a time
            batch = suspects if alone else queue
            pool = ProcessPoolExecutor(
                max_workers=1 if alone else max(1, min(jobs, len(batch))),
                mp_context=_judge_context(s.assignment for s in pending),
                initializer=functools.partial(_judge_start, str(out / _RUNNING)),
                initargs=(
                    config.plugins,
                    config.limits,
                    None if mother is None else mother.socket,
                ),
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
                    except Exception as error:
                        # Grading itself failed: report, keep going.
                        failures.append(
                            f"{submission.key}: {type(error).__name__}: {error}"
                        )
                    bar.set_postfix_str(submission.key, refresh=False)
                    bar.update(1)
                _watchdog(out, budget, stopped_since)
                if mother is not None and _mother_stopped(mother, stopped_since):
                    mother.close()  # judges start their own zygotes from now on
                    mother = None
            if broken:
                # The executor ends the other judges with SIGTERM and waits for them: a stopped
                # judge never acts on it, so every judge left gets SIGKILL first.
                pids = _judges(out) | set(_running(out))
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            pool.shutdown(wait=True, cancel_futures=True)
            _forget_judges(out)  # every judge of this pool has exited
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
                            submission, config, out, MAX_JUDGE_DEATHS
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
    finally:
        if mother is not None:
            mother.close()
    bar.close()
    with contextlib.suppress(OSError):  # empty once every judge has exited: not output
        (out / _RUNNING).rmdir()
    return failures
