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

This module is the command line only: it turns arguments into calls. Grading a batch is
:mod:`autograder.grader.batch` (on :mod:`autograder.grader.pool` or
:mod:`autograder.grader.cluster`); the instructor's commands call
:mod:`~autograder.grader.classreport`, :mod:`~autograder.grader.course` and
:mod:`~autograder.grader.similar`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autograder.grader import cluster
from autograder.grader.batch import (
    BatchPlan,
    BatchRun,
    UsageError,
    grade_batch,
    plan_batch,
    run_batch,
    summarise_batch,
)
from autograder.grader.report import (
    HIDDEN_VISIBILITY,
    VISIBILITIES,
    classroom_result,
)
from autograder.grader.sandbox import LEVELS, Limits, repo_root
from autograder.grader.submissions import submissions_root

__all__ = [
    # the batch's names, re-exported from autograder.grader.batch for existing callers
    "BatchPlan",
    "BatchRun",
    "UsageError",
    "grade_batch",
    "main",
    "plan_batch",
    "run_batch",
    "summarise_batch",
]


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
