"""Throughput and parity of the CI grader against ``nbgrader autograde``.

Grades the honest students of the demo class (``examples/submitted``: correct and partly
wrong) three ways: ``autograde grade --jobs 1``, ``autograde grade --jobs 2`` and
``nbgrader autograde`` (serial, one assignment at a time, in a scratch course built from
``solutions/`` with the repository's ``nbgrader_config.py``). Prints submissions per minute,
the ratios, and every (student, task) whose points differ between the two graders.

Usage: ``python scripts/grader_throughput.py [--students ...] [--assignments ...] [--jobs 1 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HONEST = ("ada_correct", "ben_partly_wrong")


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


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


def run_autograde(submitted: Path, out: Path, jobs: int) -> float:
    """Seconds for ``autograde grade`` (a fresh output folder, so nothing is resumed)."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder.cli",
            "grade",
            str(submitted),
            "--out",
            str(out),
            "--jobs",
            str(jobs),
            "--no-progress",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
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
    )


def make_course(course: Path, assignments: list[str], submitted: Path) -> None:
    """A scratch nbgrader course: config, sources, generated assignments, the submissions."""
    course.mkdir(parents=True)
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    for assignment in assignments:
        shutil.copytree(
            ROOT / "solutions" / assignment, course / "solutions" / assignment
        )
        done = _nbgrader(
            course, "generate_assignment", assignment, "--force", "--log-level=WARN"
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"generate_assignment {assignment} failed:\n{done.stdout}{done.stderr}"
            )
    shutil.copytree(submitted, course / "submitted")


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


def compare(
    ours: dict[tuple[str, str, str], float], theirs: dict[tuple[str, str, str], float]
) -> list[str]:
    """Every (student, assignment, task) whose points differ."""
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or abs(a - b) > 1e-9:
            differences.append(f"{'/'.join(key)}: autograde {a}, nbgrader {b}")
    return differences


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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grader-throughput-") as tmp:
        base = Path(tmp)
        pairs = copy_class(args.students, args.assignments, base / "submitted")
        if not pairs:
            print("no submissions: run python scripts/make_demo_class.py first")
            return 2
        rows, ours, outputs = [], {}, []
        for jobs in args.jobs:
            out = base / f"out-jobs{jobs}"
            seconds = run_autograde(base / "submitted", out, jobs)
            rows.append((f"autograde grade --jobs {jobs}", seconds))
            ours = autograde_scores(out, pairs)
            outputs.append(out)
        unequal = [
            f"{s}/{a}"
            for s, a in pairs
            for other in outputs[1:]
            if (outputs[0] / s / a / "results.json").read_bytes()
            != (other / s / a / "results.json").read_bytes()
        ]
        differences: list[str] = []
        if not args.no_nbgrader:
            course = base / "course"
            make_course(course, sorted({a for _, a in pairs}), base / "submitted")
            seconds = run_nbgrader(course, sorted({a for _, a in pairs}))
            rows.append(("nbgrader autograde", seconds))
            differences = compare(ours, nbgrader_scores(course, pairs))
    print(
        f"{len(pairs)} submissions ({', '.join(args.students)} x {', '.join(args.assignments)}), {os.cpu_count()} CPUs"
    )
    reference = dict(rows).get("nbgrader autograde")
    for name, seconds in rows:
        rate = 60 * len(pairs) / seconds
        ratio = f"  {reference / seconds:.2f}x nbgrader" if reference else ""
        print(f"  {name:<28} {seconds:7.1f} s  {rate:6.2f} submissions/minute{ratio}")
    if len(outputs) > 1:
        print(
            "identical results.json for every --jobs"
            if not unequal
            else f"results.json differ between --jobs: {unequal}"
        )
    if not args.no_nbgrader:
        print(
            "same points as nbgrader for every (student, task)"
            if not differences
            else "differences:\n  " + "\n  ".join(differences)
        )
    return 1 if differences or unequal else 0


if __name__ == "__main__":
    raise SystemExit(main())
