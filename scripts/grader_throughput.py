"""Throughput and parity of the CI grader against ``nbgrader autograde``.

Grades the honest students of the demo class (``examples/submitted``: correct and partly
wrong) three ways: ``autograde grade --jobs 1``, ``autograde grade --jobs 2`` and
``nbgrader autograde`` (serial, one assignment at a time, in a scratch course built from
``solutions/`` with the repository's ``nbgrader_config.py``), beside the floor under any grader
of these checks (the cells and every property in one plain process, :func:`floor_submissions`).
Prints submissions per minute, the ratios, and every (student, task) whose points differ
between the graders.

Usage: ``python scripts/grader_throughput.py [--students ...] [--assignments ...] [--jobs 1 2]``
``--profile`` instead times each part of each submission (worker start, cells, properties).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HONEST = ("ada_correct", "ben_partly_wrong")


def _env() -> dict[str, str]:
    # nbgrader runs `alembic` from PATH: this interpreter's bin first, so that running the
    # script with .venv/bin/python works without activating the environment.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", PATH=path)


def copy_class(
    students: list[str], assignments: list[str], target: Path
) -> list[tuple[str, str]]:
    """Copy ``examples/submitted/<student>/<assignment>`` for the given ids; return the pairs."""
    pairs = []
    for student in students:
        for assignment in assignments:
            source = ROOT / "examples" / "submitted" / student / assignment
            if (source / f"{assignment}.ipynb").is_file():
                shutil.copytree(source, target / student / assignment)
                pairs.append((student, assignment))
    return pairs


class CpuMeter:
    """CPU seconds used by every process a run starts, however deep, through a cgroup.

    ``getrusage(RUSAGE_CHILDREN)`` misses processes that are never waited for by their parent
    (the sandbox's namespace helpers), so the meter puts each run's first process in a fresh
    cgroup-v1 ``cpuacct`` group, which its descendants inherit, and reads the group's counter
    (nanoseconds). Where no such group can be made (not root, no cgroup-v1 ``cpuacct``) it
    reports None.
    """

    ROOT = Path("/sys/fs/cgroup/cpuacct")
    #: Meters made by this process so far: each gets a group of its own (a group whose last
    #: process is still exiting cannot be removed, and must not count into the next run).
    made = 0

    def __init__(self) -> None:
        self.group: Path | None = None
        CpuMeter.made += 1
        group = self.ROOT / f"grader-throughput-{os.getpid()}-{CpuMeter.made}"
        try:
            group.mkdir(exist_ok=True)
            (group / "cpuacct.usage").read_text()
        except OSError:
            return
        self.group = group

    def join(self) -> None:
        """``preexec_fn`` of a measured subprocess: move it into the group."""
        if self.group is not None:
            (self.group / "tasks").write_text(str(os.getpid()))

    def seconds(self) -> float | None:
        """CPU seconds so far, once every process of the run has exited (at most 10 s)."""
        if self.group is None:
            return None
        deadline = time.monotonic() + 10
        while (
            self.group / "tasks"
        ).read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        return int((self.group / "cpuacct.usage").read_text()) * 1e-9

    def close(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):
                self.group.rmdir()


#: Set by main(): the meter every measured subprocess joins.
METER: CpuMeter | None = None


def _join_meter() -> None:
    if METER is not None:
        METER.join()


def run_autograde(submitted: Path, out: Path, *options: str) -> float:
    """Seconds for ``autograde grade SUBMITTED --out OUT OPTIONS`` (raises unless it exits 0)."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder.grader.cli",
            "grade",
            str(submitted),
            "--out",
            str(out),
            "--no-progress",
            *options,
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_join_meter,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"autograde failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def autograde_scores(
    out: Path, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str, str], float]:
    """(student, assignment, task) -> points, from results.json."""
    scores: dict[tuple[str, str, str], float] = {}
    for student, assignment in pairs:
        data = json.loads((out / student / assignment / "results.json").read_text())
        for test in data["tests"]:
            key = (student, assignment, test["name"].split(": ", 1)[0])
            scores[key] = scores.get(key, 0.0) + float(test["score"])
    return scores


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"],
        cwd=course,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_join_meter,
    )


def make_course(course: Path, assignments: list[str], submitted: Path) -> None:
    """A scratch nbgrader course: config, sources, generated assignments, the submissions."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import release  # the course layout and its gradebook, as the release and tests make them
    finally:
        sys.path.pop(0)
    course.mkdir(parents=True)
    release.make_course(course, assignments, ROOT)
    release.new_gradebook(course)
    for assignment in assignments:
        done = _nbgrader(
            course, "generate_assignment", assignment, "--force", "--log-level=WARN"
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"generate_assignment {assignment} failed:\n{done.stdout}{done.stderr}"
            )
    shutil.copytree(submitted, course / "submitted")


FLOOR = "in process, no sandbox (floor)"


def run_floor(submitted: Path, scores: Path) -> float:
    """Seconds for :func:`floor_submissions` in a fresh interpreter (its CPU is metered with
    the rest); it writes the points it gave to ``scores``."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--floor-worker", str(submitted), str(scores)],
        env=dict(_env(), NBGRADER_EXECUTION="autograde", MPLBACKEND="Agg"),
        capture_output=True,
        text=True,
        preexec_fn=_join_meter,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the in-process floor failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def floor_submissions(submitted: Path, scores: Path) -> None:
    """The floor under any grader of these checks on this machine: one process imports what
    a batch imports once, then for each submission runs its code cells (grade cells removed,
    as the CI grader reads them) and every property of its assignment against that namespace
    in process: no sandbox, no worker, no wire, no tamper check, no time limits. What the CI
    grader spends above this is its isolation; nbgrader's CPU divided by this bounds the ratio
    any grader of the same checks can reach on one core."""
    import importlib
    import types

    import matplotlib.pyplot as plt
    import torch

    from autograder.core import run_property
    from autograder.grader import judge
    from autograder.grader.outcome import all_properties
    from autograder.grader.submissions import read_code_cells
    from autograder.randomness import seed_globals
    from autograder.subject import LocalSubject

    torch.set_num_threads(1)
    for module in judge.worker_preload(()):
        importlib.import_module(module)
    points: dict[str, float] = {}
    for notebook in sorted(submitted.glob("*/*/*.ipynb")):
        student, assignment = notebook.parts[-3], notebook.parts[-2]
        cells, _ = read_code_cells(str(notebook), assignment)
        main = types.ModuleType("__main__")
        seed_globals()  # as the worker starts a notebook (worker._warm_up)
        for number, source in cells:
            with contextlib.suppress(Exception):
                exec(compile(source, f"<cell {number}>", "exec"), main.__dict__)
        subject = LocalSubject(main.__dict__)
        for prop in all_properties(assignment):
            key = f"{student}/{assignment}/{prop.task}"
            points[key] = points.get(key, 0.0) + run_property(prop, subject).score
        plt.close("all")
    scores.write_text(json.dumps(points))


def run_nbgrader(course: Path, assignments: list[str]) -> float:
    """Seconds for ``nbgrader autograde`` of every assignment (nbgrader grades serially)."""
    start = time.perf_counter()
    for assignment in assignments:
        done = _nbgrader(course, "autograde", assignment, "--force", "--log-level=WARN")
        if done.returncode != 0:
            print(
                f"nbgrader autograde {assignment} exited {done.returncode}:\n{done.stderr[-2000:]}",
                file=sys.stderr,
            )
    return time.perf_counter() - start


def nbgrader_scores(
    course: Path, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str, str], float]:
    """(student, assignment, task) -> points, from nbgrader's gradebook (grade_id = <task>_check)."""
    from nbgrader.api import Gradebook, MissingEntry

    scores: dict[tuple[str, str, str], float] = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student, assignment in pairs:
            try:
                notebook = gradebook.find_submission_notebook(
                    assignment, assignment, student
                )
            except MissingEntry:
                continue
            for grade in notebook.grades:
                if grade.name.endswith("_check"):
                    scores[(student, assignment, grade.name[: -len("_check")])] = float(
                        grade.score
                    )
    return scores


def _first_difference(first: Path, second: Path) -> str:
    """The first test (or top-level field) whose entry differs between two results.json."""
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    for x, y in zip(a.get("tests", []), b.get("tests", [])):
        if x != y:
            keys = [k for k in x if x.get(k) != y.get(k)]
            return f"{x.get('name')!r}: {', '.join(f'{k} {x.get(k)!r:.120} vs {y.get(k)!r:.120}' for k in keys)}"
    keys = [k for k in a if a.get(k) != b.get(k)]
    return f"fields {keys}"


def compare(
    ours: dict[tuple[str, str, str], float],
    theirs: dict[tuple[str, str, str], float],
    other: str = "nbgrader",
) -> list[str]:
    """Every (student, assignment, task) whose points differ."""
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or abs(a - b) > 1e-9:
            differences.append(f"{'/'.join(key)}: autograde {a}, {other} {b}")
    return differences


class _Timers:
    """Wall-clock spans recorded by wrappers around the judge's own functions."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float]] = []
        self.cell_started: dict[int, float] = {}
        self.calls = 0

    def wrap(self, owner: Any, name: str, label: Callable[..., str]) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.spans.append((label(*args), time.perf_counter() - start))

        setattr(owner, name, timed)


def profile_submissions(students: list[str], assignments: list[str]) -> None:
    """Where the time of one submission goes, measured inside one judge process.

    Wraps (in this process only) the zygote start, the worker start, every notebook cell
    (from the worker's ``cell``/``cell_done`` messages) and every property, then grades each
    submission exactly as ``autograde grade --jobs 1`` does.
    """
    from autograder import core
    from autograder.grader import judge, remote
    from autograder.grader.sandbox import Limits

    # As under ``python -m autograder.grader.cli``: the worker must not see scripts/ on its path
    # (its sandbox refuses to list folders it was not given).
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [
        entry for entry in sys.path if Path(entry or ".").resolve() != Path(here)
    ]
    timers = _Timers()
    start = time.perf_counter()
    preload = judge._preload(judge._public(()))
    remote.prestart_zygote(preload)
    zygote = remote._zygote(preload, remote._worker_env())
    print(
        f"zygote ready (imports {len(preload)} modules once per judge process): {time.perf_counter() - start:.2f} s"
    )
    import torch

    torch.set_num_threads(1)
    timers.wrap(
        remote.Session, "_start", lambda *a: "worker start (fork, sandbox, hello)"
    )
    timers.wrap(judge, "run_property", lambda prop, *a: f"property {prop.name}")
    timers.wrap(remote.Session, "call", lambda *a: "call")
    original_receive = remote._Channel.receive

    def receive(channel: Any, deadline: float) -> Any:
        header, payload = original_receive(channel, deadline)
        now = time.perf_counter()
        if header.get("op") == "cell":
            timers.cell_started[int(header.get("cell", -1))] = now
        elif header.get("op") == "cell_done":
            cell = int(header.get("cell", -1))
            began = timers.cell_started.pop(cell, now)
            timers.spans.append((f"notebook cell {cell}", now - began))
        elif header.get("op") not in ("hello", "ready"):
            timers.calls += 1
        return header, payload

    remote._Channel.receive = receive  # type: ignore[method-assign,assignment]
    assert core  # the wrappers above replace judge's names; core stays intact
    submitted = ROOT / "examples" / "submitted"
    config = judge.JudgeConfig(
        limits=Limits(),
        secret_paths=(str(submitted.resolve()),),
    )
    for student in students:
        for assignment in assignments:
            notebook = submitted / student / assignment / f"{assignment}.ipynb"
            if not notebook.is_file():
                continue
            timers.spans, timers.calls = [], 0
            began = time.perf_counter()
            outcome = judge.grade_submission(
                judge.Submission(student, assignment, str(notebook)), config
            )
            total = time.perf_counter() - began
            score = sum(t.score for t in outcome.tests)
            print(
                f"\n{student}/{assignment}: {total:.2f} s end to end, score {score:g}, {timers.calls} probe replies"
            )
            if outcome.flags or outcome.notes:
                print(f"  flags {outcome.flags}, notes {outcome.notes[:3]}")
            cells = sum(t for name, t in timers.spans if name.startswith("notebook"))
            props = sum(t for name, t in timers.spans if name.startswith("property"))
            worker = sum(t for name, t in timers.spans if name.startswith("worker"))
            print(f"  worker start        {worker:6.2f} s")
            print(f"  notebook cells      {cells:6.2f} s")
            calls = [t for name, t in timers.spans if name == "call"]
            print(f"  properties          {props:6.2f} s")
            if calls:
                print(
                    f"    of which {len(calls)} probe calls: {sum(calls):.2f} s, {1000 * sum(calls) / len(calls):.1f} ms each on average"
                )
            print(f"  rest (judge, I/O)   {total - cells - props - worker:6.2f} s")
            spans = [(n, t) for n, t in timers.spans if n != "call"]
            for name, seconds in sorted(spans, key=lambda x: -x[1])[:6]:
                print(f"    {seconds:6.2f} s  {name}")
    if zygote is not None:
        zygote.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", nargs="+", default=list(HONEST))
    parser.add_argument(
        "--assignments",
        nargs="+",
        default=["01_em", "02_score", "03_reparam", "04_elbo", "05_vae"],
    )
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-nbgrader", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the interleaved runs; best time of each grader (order reversed each round)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: where the time of each submission goes (worker, cells, properties)",
    )
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--floor-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_worker:
        floor_submissions(Path(args.floor_worker[0]), Path(args.floor_worker[1]))
        return 0
    if args.profile:
        profile_submissions(args.students, args.assignments)
        return 0
    global METER
    METER = CpuMeter()
    atexit.register(METER.close)
    with tempfile.TemporaryDirectory(prefix="grader-throughput-") as tmp:
        base = Path(tmp)
        pairs = copy_class(args.students, args.assignments, base / "submitted")
        if not pairs:
            print("no submissions: run python scripts/make_demo_class.py first")
            return 2
        assignments = sorted({a for _, a in pairs})
        if not args.no_nbgrader:
            make_course(base / "course", assignments, base / "submitted")
        modes = [f"autograde grade --jobs {jobs}" for jobs in args.jobs]
        if not args.no_floor:
            modes.append(FLOOR)
        if not args.no_nbgrader:
            modes.append("nbgrader autograde")
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        outputs: list[Path] = []
        differences: list[str] = []
        for round_ in range(args.rounds):
            # Interleaved, the order reversed every other round: load on a shared machine
            # then falls on every grader alike.
            for mode in modes if round_ % 2 == 0 else modes[::-1]:
                used = METER.seconds()  # type: ignore[union-attr]
                if mode == "nbgrader autograde":
                    times[mode].append(run_nbgrader(base / "course", assignments))
                elif mode == FLOOR:
                    floor_points = base / f"floor-{round_}.json"
                    times[mode].append(run_floor(base / "submitted", floor_points))
                else:
                    jobs = int(mode.rsplit(" ", 1)[1])
                    out = base / f"out-jobs{jobs}-round{round_}"
                    times[mode].append(
                        run_autograde(base / "submitted", out, "--jobs", str(jobs))
                    )
                    outputs.append(out)
                after = METER.seconds()  # type: ignore[union-attr]
                if used is not None and after is not None:
                    cpu[mode].append(after - used)
        if not args.no_nbgrader:
            differences = compare(
                autograde_scores(outputs[0], pairs),
                nbgrader_scores(base / "course", pairs),
            )
        if not args.no_floor:
            floor = json.loads((base / "floor-0.json").read_text())
            differences += compare(
                autograde_scores(outputs[0], pairs),
                {tuple(k.split("/")): v for k, v in floor.items()},  # type: ignore[misc]
                "in process",
            )
        unequal = [
            f"{s}/{a}: {_first_difference(outputs[0] / s / a / 'results.json', other / s / a / 'results.json')}"
            for s, a in pairs
            for other in outputs[1:]
            if (outputs[0] / s / a / "results.json").read_bytes()
            != (other / s / a / "results.json").read_bytes()
        ]
        rows = [(mode, min(values)) for mode, values in times.items()]
    print(
        f"{len(pairs)} submissions ({', '.join(args.students)} x {', '.join(args.assignments)}), {os.cpu_count()} CPUs"
    )
    reference = dict(rows).get("nbgrader autograde")
    reference_cpu = min(cpu.get("nbgrader autograde") or [0.0]) or None
    for name, seconds in rows:
        rate = 60 * len(pairs) / seconds
        ratio = f"  {reference / seconds:.2f}x nbgrader" if reference else ""
        each = ", ".join(f"{t:.1f}" for t in times[name])
        used = min(cpu[name]) if cpu[name] else None
        cpu_ratio = f" ({reference_cpu / used:.2f}x)" if reference_cpu and used else ""
        cpu_text = f"CPU {used:6.1f} s{cpu_ratio}  " if used else ""
        print(
            f"  {name:<31} {seconds:7.1f} s  {rate:6.2f} submissions/minute{ratio}  "
            f"{cpu_text}(runs: {each} s)"
        )
    floor_cpu = min(cpu.get(FLOOR) or [0.0]) or None
    if reference and floor_cpu:
        print(
            f"  floor: no grader of these checks needs less than {floor_cpu:.1f} CPU s here, so"
            f" with --jobs N on N idle cores none beats {reference / floor_cpu:.2f} x N"
            f" nbgrader's time ({2 * reference / floor_cpu:.2f}x at --jobs 2)"
        )
    if reference_cpu:
        print(
            "  (CPU: seconds of every process the run started, counted by a cgroup, least over"
            " the rounds; it depends far less than wall time on what else the machine does)"
        )
    if len(outputs) > 1:
        print(
            "identical results.json for every run"
            if not unequal
            else "results.json differ between runs:\n  " + "\n  ".join(unequal)
        )
    if not args.no_nbgrader or not args.no_floor:
        print(
            "same points from every grader for every (student, task)"
            if not differences
            else "differences:\n  " + "\n  ".join(differences)
        )
    return 1 if differences or unequal else 0


if __name__ == "__main__":
    raise SystemExit(main())
