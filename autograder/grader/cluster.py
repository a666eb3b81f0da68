"""Grading a class on a Dask cluster, in disjoint shards, and merging the shards' outputs.

``autograde grade SUBMITTED --out OUT --scheduler tcp://HOST:PORT`` sends each submission to a
Dask worker (``--scheduler local:N`` starts a ``LocalCluster`` of N one-thread worker processes
on 127.0.0.1). A Dask worker grades exactly as a local run does: it hands the submission to a
judge process started like the local path's judges (:func:`autograder.grader.judge.judge_init`, then
:func:`autograder.grader.judge.grade_submission`: a sandboxed worker per submission, the same limits,
the same sandbox level recorded). The client alone writes under ``OUT``, with the local path's
atomic writer (:func:`autograder.grader.report.write_submission`), so the files are byte-identical to
a local run's and a rerun skips what is done.

Faults. A Dask worker that dies mid-submission (killed, machine lost) is replaced by the
scheduler, which runs that submission again elsewhere: it costs a retry, nothing else. The
scheduler bounds the retries (``distributed.scheduler.allowed-failures``); a submission whose
grading killed its Dask worker every time it was tried is graded zero with the flag
``killed_worker`` and the batch finishes. The client interrupted and rerun loses nothing:
results are written as they arrive, and the rerun grades only what has no results.json.

Sharding. ``--shard I/N`` keeps the submissions whose key ``student/assignment`` hashes
(SHA-256) to part I of N: the parts are disjoint and cover the class, and a submission's part
depends only on its own key, so it is stable across runs and across classes that grow.
``autograde merge OUT1 OUT2 ... --out OUT`` copies the shards' files into ``OUT`` and writes the
combined ``gradebook.csv``, the same bytes as one unsharded run's; it refuses when a shard is
missing or incomplete, or when two shards disagree on a submission.

Security: a Dask worker runs the grader's hidden checks and the students' code (in its
sandbox), so every Dask worker must be a trusted machine that runs the same grader: each task
checks the worker's grader fingerprint against the client's and refuses to grade otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from autograder.flags import Flag
from autograder.grader.fingerprint import grader_fingerprint
from autograder.grader.judge import (
    JudgeConfig,
    clean_stale_workdirs,
    grade_submission,
    judge_init,
)
from autograder.grader.outcome import zero_outcome
from autograder.grader.report import (
    Outcome,
    ResultsRecord,
    load_results,
    log_graded,
    progress_bar,
    submission_dir,
    summary_table,
    write_atomic,
    write_gradebook,
    write_submission,
)
from autograder.grader.submissions import MAX_NOTEBOOK_BYTES, Submission
from autograder.tasks import TASKS, load_plugins

__all__ = [
    "DaskCluster",
    "GraderMismatch",
    "MAX_TRIES_LOCAL",
    "in_shard",
    "killed_outcome",
    "merge_outputs",
    "parse_shard",
    "run_on_dask",
    "select_shard",
    "shard_of",
    "write_shard_manifest",
]

#: Tries of a submission on a ``local:N`` cluster before it is graded zero: its grading killed
#: the Dask worker every time (the scheduler's ``allowed-failures`` is ``MAX_TRIES_LOCAL - 1``).
MAX_TRIES_LOCAL = 3
SHARD_FILE = "shard.json"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_KILLED_FLAG: Flag = "killed_worker"


class GraderMismatch(RuntimeError):
    """A Dask worker runs a different grader (code, checks, limits, Python or grading
    packages) than the client."""


# --------------------------------------------------------------------------- shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)`` with ``1 <= I <= N``.

    Raises:
        ValueError: with a message naming the expected form.
    """
    match = _SHARD.match(text)
    if not match:
        raise ValueError(
            f"--shard {text!r}: expected I/N, e.g. 1/4 (the first of four)"
        )
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(
            f"--shard {text!r}: I must be between 1 and N (N >= 1), e.g. 1/4 ... 4/4"
        )
    return index, count


def shard_of(key: str, count: int) -> int:
    """The part (1..count) of the submission ``key`` (``student/assignment``).

    The first 64 bits of SHA-256(key), modulo ``count``, plus one: a function of the key alone,
    so the parts are disjoint, cover every key, and never move when other submissions come or go.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``key`` belongs to ``shard`` (every key does when ``shard`` is None)."""
    return shard is None or shard_of(key, shard[1]) == shard[0]


def select_shard(
    submissions: Sequence[Submission],
    problems: Sequence[str],
    shard: tuple[int, int] | None,
) -> tuple[list[Submission], list[str]]:
    """The submissions and the discovery problems (``"student/assignment: ..."``) of ``shard``."""
    kept = [s for s in submissions if in_shard(s.key, shard)]
    kept_problems = [p for p in problems if in_shard(p.split(": ", 1)[0], shard)]
    return kept, kept_problems


def write_shard_manifest(
    out: Path, shard: tuple[int, int], submissions: Sequence[Submission]
) -> None:
    """``OUT/shard.json``: which part this is and which submissions it holds (for the merge)."""
    manifest = {
        "shard": list(shard),
        "submissions": sorted(s.key for s in submissions),
    }
    write_atomic(out / SHARD_FILE, json.dumps(manifest, indent=1) + "\n")


def merge_outputs(
    parts: Sequence[Path],
    out: Path,
    *,
    plugins: Sequence[str] = (),
    stream: TextIO | None = None,
) -> int:
    """Copy the shards' per-submission files into ``out`` and write the combined gradebook.

    Every part must be a ``--shard`` output (it has a ``shard.json``), all of one ``N``, with
    each of the N parts present once and each listed submission's results.json there. A
    submission found in two parts must have byte-identical files in both.

    Returns:
        0 when merged; 1 when a part is missing, incomplete or conflicting (nothing is merged);
        2 for a usage error.
    """
    stream = stream or sys.stdout
    plugins = load_plugins(plugins)
    problems: list[str] = []
    seen_parts: dict[int, Path] = {}
    counts: set[int] = set()
    sources: dict[str, Path] = {}
    for part in parts:
        try:
            manifest = json.loads((part / SHARD_FILE).read_text(encoding="utf-8"))
            index, count = (int(v) for v in manifest["shard"])
            keys = [str(k) for k in manifest["submissions"]]
            bad = [k for k in keys if not _plain_key(k)]
            if bad:
                raise ValueError(f"not student/assignment: {bad[0]!r}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(
                f"autograde merge: {part} is not the output of a --shard run "
                f"({SHARD_FILE}: {error})",
                file=sys.stderr,
            )
            return 2
        counts.add(count)
        if index in seen_parts:
            problems.append(
                f"part {index}/{count} given twice: {seen_parts[index]} and {part}"
            )
        seen_parts[index] = part
        for key in keys:
            student, assignment = key.split("/", 1)
            if load_results(part, student, assignment) is None:
                problems.append(
                    f"{key}: listed by {part} but it has no valid results.json"
                )
                continue
            if key in sources and not _same_files(
                submission_dir(sources[key], student, assignment),
                submission_dir(part, student, assignment),
            ):
                problems.append(
                    f"{key}: {sources[key]} and {part} graded it differently"
                )
            sources.setdefault(key, part)
    if len(counts) > 1:
        problems.append(f"the parts come from different splits: N = {sorted(counts)}")
    elif counts:
        missing = sorted(set(range(1, max(counts) + 1)) - set(seen_parts))
        if missing:
            problems.append(
                "missing parts: " + ", ".join(f"{i}/{max(counts)}" for i in missing)
            )
    for problem in problems:
        print(f"autograde merge: NOT MERGED: {problem}", file=sys.stderr)
    if problems:
        return 1
    all_results = []
    for key, part in sorted(sources.items()):
        student, assignment = key.split("/", 1)
        names = ("feedback.html", "grading.json", "results.json")  # results.json last
        for name in names:
            source = submission_dir(part, student, assignment) / name
            if source.is_file():
                write_atomic(
                    submission_dir(out, student, assignment) / name,
                    source.read_text(encoding="utf-8"),
                )
        merged = load_results(out, student, assignment)
        if merged is None:  # checked above; only a concurrent writer could get here
            print(
                f"autograde merge: NOT MERGED: {key} could not be copied",
                file=sys.stderr,
            )
            return 1
        all_results.append(merged)
    write_gradebook(out / "gradebook.csv", all_results, TASKS)
    print(summary_table(all_results), file=stream)
    print(
        f"\nMerged {len(all_results)} submissions from {len(parts)} parts into {out}/, "
        f"gradebook {out / 'gradebook.csv'}",
        file=stream,
    )
    return 0


def _plain_key(key: str) -> bool:
    """``student/assignment`` with two plain folder names (nothing that climbs out of OUT)."""
    parts = key.split("/")
    return len(parts) == 2 and all(p and p not in (".", "..") for p in parts)


def _same_files(a: Path, b: Path) -> bool:
    names = ("feedback.html", "results.json")
    try:
        return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    except OSError:
        return False


# --------------------------------------------------------------------------- the judge process


class _Judge:
    """A judge process on a Dask worker's machine, started as the local path starts its judges.

    It is a plain subprocess (Dask worker processes are daemonic, so no multiprocessing pool),
    kept between submissions so torch and the zygote are imported once. Requests and replies
    are length-prefixed pickles on its stdin and on a private copy of its stdout.
    """

    def __init__(self, plugins: tuple[str, ...]) -> None:
        self.plugins = plugins
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autograder.grader.cluster",
                "--judge",
                json.dumps(plugins),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # The Dask worker's environment and folder, as a local judge has the CLI's: its
            # module path (which the sandboxed worker inherits) is what ``python -m`` gives
            # there, never the Dask worker's own additions (a script's folder, say).
            env=dict(
                os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")
            ),
        )

    def grade(self, submission: Submission, config: JudgeConfig) -> Outcome:
        assert self.process.stdin is not None and self.process.stdout is not None
        data = pickle.dumps((submission, config))
        try:
            self.process.stdin.write(len(data).to_bytes(8, "big") + data)
            self.process.stdin.flush()
        except BrokenPipeError:
            raise _JudgeGone from None  # it died idle: nothing was graded yet
        header = self.process.stdout.read(8)
        if len(header) < 8:
            code = self.process.wait()
            raise RuntimeError(
                f"the judge process died while grading (exit status {code})"
            )
        reply = self.process.stdout.read(int.from_bytes(header, "big"))
        status, value = pickle.loads(reply)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def alive(self) -> bool:
        return self.process.poll() is None


class _JudgeGone(Exception):
    """The judge had died before it got the request."""


_IDLE: dict[tuple[str, ...], list[_Judge]] = {}
_IDLE_LOCK = threading.Lock()
_FINGERPRINTS: dict[tuple[Any, ...], str] = {}
_CLEANED = False


def _take_judge(plugins: tuple[str, ...]) -> _Judge:
    with _IDLE_LOCK:
        idle = _IDLE.setdefault(plugins, [])
        while idle:
            judge = idle.pop()
            if judge.alive():
                return judge
    return _Judge(plugins)


def _return_judge(judge: _Judge) -> None:
    if judge.alive():
        with _IDLE_LOCK:
            _IDLE.setdefault(judge.plugins, []).append(judge)


def _check_grader(config: JudgeConfig, assignment: str) -> None:
    for plugin in config.plugins:
        importlib.import_module(plugin)
    key = (
        json.dumps(config.limits.__dict__, sort_keys=True),
        assignment,
        config.plugins,
        config.hidden_visibility,
    )
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = grader_fingerprint(
            config.limits, assignment, config.plugins, config.hidden_visibility
        )
    wanted = config.fingerprints.get(assignment)
    if wanted and _FINGERPRINTS[key] != wanted:
        raise GraderMismatch(
            f"the Dask worker on {socket.gethostname()} runs a different grader for "
            f"{assignment} (fingerprint {_FINGERPRINTS[key]}, the client's {wanted}): "
            "install the same version of the course package on every worker, with the same "
            "Python and grading packages (pip install -c constraints/grading.txt)"
        )


def grade_on_worker(
    submission: Submission, notebook: bytes, config: JudgeConfig
) -> Outcome:
    """Runs on a Dask worker: grade ``submission`` (its notebook's bytes sent along).

    The notebook is written to a private temporary folder, which joins the paths the
    sandbox may not read; a judge process grades it with ``grade_submission``.

    Returns:
        The :class:`autograder.grader.report.Outcome`, exactly what a local judge returns.

    Raises:
        GraderMismatch: this worker's grader differs from the client's.
        RuntimeError: the judge process died or could not grade (a grader failure).
    """
    global _CLEANED
    if not _CLEANED:  # what judges of killed Dask workers left on this machine
        clean_stale_workdirs()
        _CLEANED = True
    _check_grader(config, submission.assignment)
    # Named like the judges' folders (autograde-<pid>-...), so it is removed if we are killed.
    prefix = f"autograde-{os.getpid()}-dask-"
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        path = Path(folder) / f"{submission.assignment}.ipynb"
        path.write_bytes(notebook)
        copy = Submission(submission.student, submission.assignment, str(path))
        private = dataclasses.replace(
            config, secret_paths=(*config.secret_paths, folder)
        )
        for attempt in range(2):
            judge = _take_judge(tuple(config.plugins))
            try:
                return judge.grade(copy, private)
            except _JudgeGone:
                if attempt:
                    raise RuntimeError("the judge process dies as it starts") from None
            finally:
                _return_judge(judge)
        raise AssertionError("unreachable")


def _judge_main(plugins: list[str]) -> None:
    """The judge process's loop: one request, one reply, until stdin closes."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    judge_init(plugins)
    requests = sys.stdin.buffer
    while True:
        header = requests.read(8)
        if len(header) < 8:
            return
        submission, config = pickle.loads(requests.read(int.from_bytes(header, "big")))
        try:
            reply: tuple[str, Any] = ("ok", grade_submission(submission, config))
        except Exception as error:  # grading itself failed: the client reports it
            reply = ("error", f"{type(error).__name__}: {error}")
        data = pickle.dumps(reply)
        try:
            replies.write(len(data).to_bytes(8, "big") + data)
            replies.flush()
        except BrokenPipeError:
            return  # the Dask worker is gone; the scheduler retries elsewhere


# --------------------------------------------------------------------------- the client


class DaskCluster:
    """The :class:`autograder.grader.batch.Executor` of a Dask cluster: ``tcp://HOST:PORT``,
    or ``local:N`` (a ``LocalCluster`` of N workers started for the batch)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def run(
        self,
        pending: list[Submission],
        config: JudgeConfig,
        out: Path,
        progress: bool,
        finished: dict[str, ResultsRecord],
    ) -> list[str]:
        """Grade ``pending`` on the cluster (:func:`run_on_dask`); the failures, as messages."""
        return run_on_dask(self.address, pending, config, out, progress, finished)


def killed_outcome(
    submission: Submission, config: JudgeConfig, tries: int | None
) -> Outcome:
    """Zero on every check, flag ``killed_worker``: grading killed the Dask worker each try."""
    times = f"all {tries} times it was tried" if tries else "every time it was tried"
    message = (
        "Not graded: grading this notebook killed the grading machine's worker process "
        f"{times} (for example by exhausting the machine's memory or crashing the "
        "interpreter). Check that it runs to the end in a fresh kernel within the limits."
    )
    return zero_outcome(submission, config, _KILLED_FLAG, message)


def _connect(address: str) -> tuple[Any, Any]:
    """A Dask client for ``address`` (``tcp://...`` or ``local:N``) and the cluster it started."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise RuntimeError(
            "--scheduler needs Dask's distributed: pip install '.[cluster]'"
        ) from error
    match = re.fullmatch(r"local(?::(\d+))?", address)
    if match is None:
        return Client(address, timeout=30), None
    workers = int(match.group(1) or os.cpu_count() or 1)
    if workers < 1:
        raise RuntimeError(f"--scheduler {address}: need at least one worker")
    settings = {
        "distributed.scheduler.allowed-failures": MAX_TRIES_LOCAL - 1,
        # A worker holds only the submission it grades: when one kills the worker, no
        # innocent submission queued behind it counts a failed try.
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    return Client(cluster), cluster


def _notebook_bytes(submission: Submission) -> bytes | None:
    """The notebook to send, or None when it must be graded here (missing, too large,
    unreadable: :func:`grade_submission` then stops before starting a worker)."""
    if submission.notebook is None:
        return None
    try:
        if os.stat(submission.notebook).st_size > MAX_NOTEBOOK_BYTES:
            return None
        return Path(submission.notebook).read_bytes()
    except OSError:
        return None


def run_on_dask(
    address: str,
    pending: list[Submission],
    config: JudgeConfig,
    out: Path,
    progress: bool,
    finished: dict[str, ResultsRecord],
) -> list[str]:
    """Grade ``pending`` on the Dask cluster at ``address``; the sibling of the local
    :class:`autograder.grader.pool.LocalPool`.

    Results are written under ``out`` as they arrive and recorded in ``finished``.

    Returns:
        The submissions that could not be graded (grader failures), as messages.
    """
    try:
        client, cluster = _connect(address)
    except (OSError, RuntimeError, ValueError) as error:
        return [f"cannot reach the Dask scheduler {address}: {error}"]
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    failures: list[str] = []
    bar = progress_bar(len(pending), "grading (dask)", progress)

    def record(submission: Submission, outcome: Outcome, worker: str) -> None:
        results = write_submission(out, outcome)
        finished[submission.key] = results
        log_graded(
            out,
            submission.key,
            results,
            outcome.seconds,
            outcome.sandbox,
            dask_worker=worker,
        )
        bar.set_postfix_str(submission.key, refresh=False)
        bar.update(1)

    run = uuid.uuid4().hex[:8]
    futures: dict[Any, Submission] = {}
    try:
        for submission in pending:
            notebook = _notebook_bytes(submission)
            if notebook is None:
                record(submission, grade_submission(submission, config), "client")
                continue
            future = client.submit(
                grade_on_worker,
                submission,
                notebook,
                config,
                key=f"autograde-{run}-{submission.key}",
                pure=False,
            )
            futures[future] = submission
        for future in as_completed(list(futures)):
            submission = futures[future]
            try:
                outcome = future.result()
                worker = _who(client, future)
            except KilledWorker as error:
                allowed = getattr(error, "allowed_failures", None)
                tries = allowed + 1 if isinstance(allowed, int) else None
                outcome, worker = killed_outcome(submission, config, tries), "-"
            except Exception as error:  # grading itself failed: report, keep going
                failures.append(f"{submission.key}: {type(error).__name__}: {error}")
                bar.update(1)
                continue
            record(submission, outcome, worker)
            future.release()
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\nautograde: interrupted; {len(finished)} graded. Rerun the same command to resume.",
            file=sys.stderr,
        )
        _close(client, cluster)
        raise SystemExit(130) from None
    bar.close()
    _close(client, cluster)
    return failures


def _who(client: Any, future: Any) -> str:
    try:
        return str(client.who_has(future).get(future.key, ("-",))[0])
    except Exception:  # bookkeeping only
        return "-"


def _close(client: Any, cluster: Any) -> None:
    try:
        client.close(timeout=30)
    finally:
        if cluster is not None:
            cluster.close(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--judge":
        _judge_main(json.loads(sys.argv[2]))
    else:
        print(
            "usage: python -m autograder.grader.cluster --judge PLUGINS_JSON",
            file=sys.stderr,
        )
        sys.exit(2)
