"""``autograde``: grade a class of notebook submissions in CI, sandboxed, parallel and resumable.

Commands::

    autograde grade SUBMITTED --out OUT [--jobs N] [--timeout S] [--memory MB]
    autograde demo                      # make grade: release, then grade examples/submitted
    autograde gradescope --assignment ID  # inside Gradescope's container (run_autograder)
    autograde classroom OUT             # results for GitHub Classroom's grading reporter
    autograde grade SUBMITTED --out OUT --scheduler tcp://HOST:PORT|local:N [--shard I/N]
    autograde merge OUT1 OUT2 ... --out OUT  # the shards' outputs, one gradebook

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
import contextlib
import ctypes
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

__all__ = ["grade_batch", "main"]

_PLUGINS_ENV = "AUTOGRADER_PLUGINS"


# --------------------------------------------------------------------------- judge processes


def _judge_init(plugins: Sequence[str]) -> None:
    """Runs once in each judge process: die with the parent, start the zygote, load the checks."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    from autograder.grader.judge import _preload, _public
    from autograder.grader.remote import prestart_zygote

    prestart_zygote(_preload(_public(plugins)))
    import torch

    torch.set_num_threads(1)
    for plugin in plugins:
        importlib.import_module(plugin)


#: Folder of OUT where each judge says what it is grading (read by the parent's watchdog).
_RUNNING = ".running"


def _running_file(out: str | Path, pid: int) -> Path:
    return Path(out) / _RUNNING / f"{pid}.json"


def _judge_one(submission: Any, config: Any, out: str) -> dict[str, Any]:
    from autograder.grader.judge import grade_submission
    from autograder.grader.report import log_graded, write_atomic, write_submission

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


def _clean_stale_workdirs() -> None:
    """Remove worker directories left by judges that were killed."""
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


# --------------------------------------------------------------------------- grading a batch


def _plugins(names: Sequence[str] | None) -> list[str]:
    listed = list(names or [])
    listed += [p for p in os.environ.get(_PLUGINS_ENV, "").split(",") if p]
    unique = list(dict.fromkeys(listed))
    for plugin in unique:
        importlib.import_module(plugin)
    return unique


def grade_batch(
    submitted: Path,
    out: Path,
    *,
    jobs: int = 1,
    limits: Any = None,
    plugins: Sequence[str] = (),
    force: bool = False,
    sandbox_level: str = "auto",
    progress: bool = True,
    assignments: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    stream: Any = None,
    insecure: bool = False,
    scheduler: str | None = None,
    shard: tuple[int, int] | None = None,
) -> int:
    """Grade every submission under ``submitted`` into ``out``; return the exit status.

    Without ``insecure``, grading needs an isolating sandbox level
    (:data:`autograder.grader.sandbox.ISOLATING`): the status is 2 where none can work.
    ``scheduler`` (``tcp://HOST:PORT`` or ``local:N``) grades on a Dask cluster and ``shard``
    ``(I, N)`` keeps the I-th of N disjoint parts (:mod:`autograder.grader.cluster`).
    """
    from autograder.grader.judge import (
        JudgeConfig,
        find_submissions,
        grader_fingerprint,
        notebook_digest,
        submissions_root,
    )
    from autograder.grader.report import load_results, summary_table, write_gradebook
    from autograder.grader.sandbox import (
        ISOLATING,
        Limits,
        isolation_available,
        levels_to_try,
    )
    from autograder.tasks import TASKS

    stream = stream or sys.stdout
    limits = limits or Limits()
    if not insecure and (
        sandbox_level == "rlimits"
        or (sandbox_level == "auto" and not isolation_available())
    ):
        print(
            "autograde: no isolating sandbox here (run as root, or where unprivileged user "
            "namespaces are allowed: sysctl kernel.unprivileged_userns_clone=1 / "
            "user.max_user_namespaces > 0). The rlimits level only has an audit hook, which a "
            "submission can switch off to read the hidden checks or other students' work; "
            "pass --insecure to grade anyway (never for real submissions).",
            file=sys.stderr,
        )
        return 2
    plugins = _plugins(plugins)
    if not submitted.is_dir():
        print(f"autograde: {submitted} is not a folder", file=sys.stderr)
        return 2
    submissions, problems = find_submissions(
        submitted, assignments=assignments, students=students
    )
    if shard is not None:
        from autograder.grader.cluster import select_shard

        submissions, problems = select_shard(submissions, problems, shard)
    if not submissions and not problems and shard is None:
        print(
            f"autograde: no submissions under {submitted} (expected <student>/<assignment>/<assignment>.ipynb)",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_workdirs()
    for partial in out.glob(
        "*/*/.*.tmp"
    ):  # a write cut short by a kill: never a result
        if not _alive(
            partial.suffixes[-2].lstrip(".") if len(partial.suffixes) > 1 else ""
        ):
            partial.unlink(missing_ok=True)
    fingerprints = {
        a: grader_fingerprint(limits, a, plugins)
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
    print(
        f"autograde: {len(submissions)} submissions in {submitted}: {len(finished)} already graded, "
        f"{len(pending)} to grade "
        + (f"on {scheduler}" if scheduler else f"with {jobs} job(s)"),
        file=sys.stderr,
    )
    if sandbox_level != "auto":
        levels: tuple[str, ...] | None = (sandbox_level,)
    elif insecure:
        levels = None
    else:  # never fall back to a level that does not isolate
        levels = tuple(level for level in levels_to_try() if level in ISOLATING)
    config = JudgeConfig(
        limits=limits,
        secret_paths=(str(out.resolve()), str(submissions_root(submitted).resolve())),
        plugins=tuple(plugins),
        fingerprints=fingerprints,
        levels=levels,
    )
    failures = list(problems)
    started = time.monotonic()
    if pending and scheduler:
        from autograder.grader.cluster import run_on_dask

        failures += run_on_dask(scheduler, pending, config, out, progress, finished)
    elif pending:
        failures += _run_pool(pending, config, out, jobs, progress, finished)
    elapsed = time.monotonic() - started
    all_results = [finished[s.key] for s in submissions if s.key in finished]
    write_gradebook(out / "gradebook.csv", all_results, TASKS)
    if shard is not None:
        from autograder.grader.cluster import write_shard_manifest

        write_shard_manifest(out, shard, submissions)
    print(summary_table(all_results), file=stream)
    levels_used = sorted(
        {
            str(r["extra_data"]["sandbox"])
            for r in all_results
            if r["extra_data"].get("sandbox")
        }
    )
    graded_now = sum(1 for s in pending if s.key in finished)
    rate = (
        f", {60 * graded_now / elapsed:.1f} submissions/minute"
        if graded_now and elapsed > 0
        else ""
    )
    print(
        f"\nGraded {len(all_results)} of {len(submissions)} submissions ({graded_now} "
        f"this run in {elapsed:.1f} s{rate}); sandbox: {', '.join(levels_used) or '-'}; "
        f"results in {out}/, gradebook {out / 'gradebook.csv'}",
        file=stream,
    )
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
    submission: Any, config: Any, out: Path, deaths: int
) -> dict[str, Any]:
    from autograder.grader.judge import zero_outcome
    from autograder.grader.report import write_submission

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
    pending: list[Any],
    config: Any,
    out: Path,
    jobs: int,
    progress: bool,
    finished: dict[str, Any],
) -> list[str]:
    """Grade ``pending`` with ``jobs`` judge processes; survive judges that die or hang.

    A judge that dies (a submission killed it) breaks the pool: a new pool is started, the
    submissions that were in flight become suspects and the rest are queued again. Suspects
    are then graded one at a time, so a suspect whose judge dies again was alone: it alone
    gets zeros with the ``crashed`` flag, and every honest suspect is graded normally. The
    watchdog (in this process, which no submission reaches) kills a judge that stays stopped
    or runs past its submission's budget, which breaks the pool the same way.
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    failures: list[str] = []
    queue: list[Any] = list(pending)
    suspects: list[Any] = []
    unexplained = (
        0  # pool breaks with no submission in flight: grading itself is broken
    )
    budget = config.limits.timeout_s + 2 * 120.0 + WATCHDOG_MARGIN_S
    (out / _RUNNING).mkdir(exist_ok=True)
    for stale in (out / _RUNNING).glob("*.json"):
        stale.unlink(missing_ok=True)
    bar = tqdm(
        total=len(pending),
        desc="grading",
        unit="nb",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        while queue or suspects:
            alone = not queue  # suspects: one judge, one submission at a time
            batch = suspects if alone else queue
            pool = ProcessPoolExecutor(
                max_workers=1 if alone else max(1, min(jobs, len(batch))),
                mp_context=get_context("spawn"),
                initializer=_judge_init,
                initargs=(config.plugins,),
            )
            futures = {pool.submit(_judge_one, s, config, str(out)): s for s in batch}
            left: list[Any] = []
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


def _limits(args: argparse.Namespace) -> Any:
    from autograder.grader.sandbox import Limits

    return Limits(
        memory_mb=args.memory,
        timeout_s=args.timeout,
        cell_timeout_s=min(args.cell_timeout, args.timeout),
    )


def _add_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="wall clock per submission: notebook and checks (default 600)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wall clock per notebook cell (default 120)",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=2048,
        metavar="MB",
        help="memory per submission on top of the libraries (default 2048)",
    )
    parser.add_argument(
        "--sandbox",
        choices=["auto", "namespace", "userns", "privdrop", "rlimits"],
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


def _grade(args: argparse.Namespace) -> int:
    shard = None
    if args.shard is not None:
        from autograder.grader.cluster import parse_shard

        try:
            shard = parse_shard(args.shard)
        except ValueError as error:
            print(f"autograde: {error}", file=sys.stderr)
            return 2
    return grade_batch(
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
    )


def _merge(args: argparse.Namespace) -> int:
    from autograder.grader.cluster import merge_outputs

    return merge_outputs(args.parts, args.out, plugins=args.plugin)


def _repo() -> Path:
    from autograder.grader.sandbox import repo_root

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
    return grade_batch(
        submitted,
        args.out or root / "out" / "demo",
        jobs=args.jobs,
        limits=_limits(args),
        plugins=args.plugin,
        force=args.force,
        sandbox_level=args.sandbox,
        progress=not args.no_progress,
        insecure=args.insecure,
    )


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
    import base64

    from autograder.grader.report import classroom_result

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autograde`` (and ``python -m autograder.grader.cli``)."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
