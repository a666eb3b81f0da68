"""Deadlines, extensions and a late policy (``course.toml``), and gradebook exports for an LMS.

``course.toml`` (read with :mod:`tomllib`; every date a TOML date-time with its UTC offset)::

    [late]
    policy = "per_day"        # "per_day", "late_days" or "none"
    penalty_per_day = 0.10    # fraction of the earned score lost per started day late
    max_days = 5              # later than this many days: zero (per_day)
    grace_minutes = 15        # a submission this close after its deadline is on time
    budget = 3                # late_days: free late days per student over the term; days
                              # beyond the budget cost penalty_per_day each (1.0: zero)

    [assignments.01_em]
    deadline = 2025-05-20T23:59:00-07:00
    name = "EM for Gaussian mixtures"   # for the LMS export (default: the id)
    canvas_id = 101                     # the Canvas assignment id (optional)

    [extensions.some_student]
    01_em = 2                           # days, or a date-time: a new deadline

    [students.some_student]             # optional, for the Canvas export
    name = "Some Student"
    id = 12345
    sis_user_id = "A123"
    sis_login_id = "sstudent"
    section = "A01"

A submission's time is nbgrader's ``timestamp.txt`` in its folder
(``SUBMITTED/<student>/<assignment>/timestamp.txt``), else the notebook file's modification
time; which one was used is written next to it in ``gradebook.csv``
(``timestamp_source``: ``timestamp.txt`` or ``file mtime``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ADJUSTED_COLUMNS",
    "Course",
    "CourseError",
    "LateOutcome",
    "adjust_gradebook",
    "apply_late_policy",
    "canvas_rows",
    "generic_rows",
    "load_course",
    "read_gradebook",
    "submission_time",
    "write_csv",
]

#: Columns appended to gradebook.csv when a course.toml applies (the raw ``score`` stays).
ADJUSTED_COLUMNS = [
    "submitted_at",
    "timestamp_source",
    "deadline",
    "days_late",
    "late_days_used",
    "penalty",
    "adjusted_score",
]

POLICIES = ("per_day", "late_days", "none")


class CourseError(ValueError):
    """course.toml is missing something or holds a wrong value; the message names it."""


@dataclass
class Course:
    """What course.toml says."""

    deadlines: dict[str, dt.datetime]
    names: dict[str, str] = field(default_factory=dict)
    canvas_ids: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, dict[str, dt.datetime]] = field(default_factory=dict)
    policy: str = "none"
    penalty_per_day: float = 0.0
    max_days: float | None = None
    grace: dt.timedelta = dt.timedelta(0)
    budget: int = 0
    students: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None

    def deadline(self, student: str, assignment: str) -> dt.datetime | None:
        """The student's deadline for the assignment (an extension, else the course's)."""
        return self.extensions.get(student, {}).get(
            assignment, self.deadlines.get(assignment)
        )


def _aware(value: Any, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise CourseError(
                f"{where} = {value} has no UTC offset: write it like 2025-05-20T23:59:00-07:00"
            )
        return value
    raise CourseError(f"{where} must be a TOML date-time with an offset, not {value!r}")


def _number(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CourseError(f"{where}.{key} must be a number >= 0, not {value!r}")
    return float(value)


def load_course(path: Path) -> Course:
    """Read and check ``course.toml``.

    Raises:
        CourseError: The file cannot be read, or a value is missing or wrong (the message
            names the key).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as error:
            raise CourseError(
                "reading course.toml needs Python >= 3.11 (tomllib) or `pip install tomli`"
            ) from error
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CourseError(f"cannot read {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise CourseError(f"{path} is not valid TOML: {error}") from error
    assignments = data.get("assignments", {})
    if not isinstance(assignments, dict) or not assignments:
        raise CourseError(f"{path}: no [assignments.<id>] table with a deadline")
    deadlines, names, canvas_ids = {}, {}, {}
    for assignment, table in assignments.items():
        if not isinstance(table, dict) or "deadline" not in table:
            raise CourseError(f"{path}: [assignments.{assignment}] needs a deadline")
        deadlines[assignment] = _aware(
            table["deadline"], f"assignments.{assignment}.deadline"
        )
        names[assignment] = str(table.get("name", assignment))
        if "canvas_id" in table:
            canvas_ids[assignment] = str(table["canvas_id"])
    late = data.get("late", {})
    if not isinstance(late, dict):
        raise CourseError(f"{path}: [late] must be a table")
    policy = str(late.get("policy", "none"))
    if policy not in POLICIES:
        raise CourseError(
            f"{path}: late.policy is {policy!r}; use one of {', '.join(POLICIES)}"
        )
    penalty = _number(late, "penalty_per_day", 0.0, "late")
    if penalty > 1:
        raise CourseError(
            f"late.penalty_per_day is a fraction of the score (0..1), not {penalty}"
        )
    max_days = late.get("max_days")
    if max_days is not None:
        max_days = _number(late, "max_days", 0, "late")
    budget = late.get("budget", 0)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise CourseError(
            f"late.budget must be a whole number of days >= 0, not {budget!r}"
        )
    extensions: dict[str, dict[str, dt.datetime]] = {}
    for student, table in (data.get("extensions") or {}).items():
        if not isinstance(table, dict):
            raise CourseError(
                f"extensions.{student} must be a table of assignment = days"
            )
        for assignment, value in table.items():
            where = f"extensions.{student}.{assignment}"
            if assignment not in deadlines:
                raise CourseError(f"{where}: no deadline for assignment {assignment!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if value < 0:
                    raise CourseError(f"{where} must be >= 0 days, not {value}")
                new = deadlines[assignment] + dt.timedelta(days=float(value))
            else:
                new = _aware(value, where)
            extensions.setdefault(str(student), {})[assignment] = new
    students = {
        str(s): {k: str(v) for k, v in table.items()}
        for s, table in (data.get("students") or {}).items()
        if isinstance(table, dict)
    }
    return Course(
        deadlines=deadlines,
        names=names,
        canvas_ids=canvas_ids,
        extensions=extensions,
        policy=policy,
        penalty_per_day=penalty,
        max_days=max_days,
        grace=dt.timedelta(minutes=_number(late, "grace_minutes", 0.0, "late")),
        budget=budget,
        students=students,
        path=Path(path),
    )


# --------------------------------------------------------------------------- timestamps


def _parse_timestamp(text: str) -> dt.datetime:
    """nbgrader's timestamp.txt (``2025-05-20 17:00:00.000000 UTC``) or an ISO 8601 time;
    a time without a zone is UTC (nbgrader writes UTC)."""
    text = text.strip()
    zone = dt.UTC
    for suffix in (" UTC", " GMT", "Z"):
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
            break
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def submission_time(
    folder: Path, notebook: Path | None
) -> tuple[dt.datetime | None, str]:
    """When a submission was handed in, and where that came from.

    nbgrader's ``timestamp.txt`` in the submission folder; else the notebook's modification
    time (``file mtime``: a copy or an unzip can change it, so the output says which was used);
    ``(None, "none")`` when neither exists.
    """
    stamp = folder / "timestamp.txt"
    if stamp.is_file() and not stamp.is_symlink():
        try:
            return _parse_timestamp(
                stamp.read_text(encoding="utf-8")[:200]
            ), "timestamp.txt"
        except (OSError, ValueError):
            pass  # unreadable: fall back to the file time, and say so
    target = notebook if notebook is not None else folder
    try:
        mtime = target.lstat().st_mtime
    except OSError:
        return None, "none"
    return dt.datetime.fromtimestamp(mtime, dt.UTC), "file mtime"


# --------------------------------------------------------------------------- late policy


@dataclass
class LateOutcome:
    """The late policy applied to one submission."""

    submitted_at: dt.datetime | None
    source: str
    deadline: dt.datetime | None
    days_late: int
    late_days_used: int
    penalty: float  # fraction of the earned score taken off
    adjusted: float


def _days_late(
    submitted: dt.datetime | None, deadline: dt.datetime | None, grace: dt.timedelta
) -> int:
    """Started days past the deadline (after the grace period); 0 when on time or unknown."""
    if submitted is None or deadline is None:
        return 0
    over = submitted - deadline
    if over <= grace:
        return 0
    return math.ceil(over / dt.timedelta(days=1))


def apply_late_policy(
    course: Course,
    rows: Sequence[dict[str, Any]],
    times: dict[tuple[str, str], tuple[dt.datetime | None, str]],
) -> dict[tuple[str, str], LateOutcome]:
    """The late policy for every ``(student, assignment)`` of ``rows``
    (``{"student_id", "assignment_id", "score"}``).

    ``per_day``: the earned score times ``1 - min(1, days_late * penalty_per_day)``, zero past
    ``max_days``. ``late_days``: each student's ``budget`` days are spent in deadline order;
    days beyond what is left cost ``penalty_per_day`` each (a penalty of 1.0 makes them zero).
    An assignment with no deadline in course.toml is never late.
    """
    by_student: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_student[str(row["student_id"])].append(row)
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    outcomes = {}
    for student, mine in by_student.items():
        left = course.budget
        mine = sorted(
            mine,
            key=lambda r: (
                course.deadlines.get(str(r["assignment_id"]), far),
                str(r["assignment_id"]),
            ),
        )
        for row in mine:
            assignment = str(row["assignment_id"])
            submitted, source = times.get((student, assignment), (None, "none"))
            deadline = course.deadline(student, assignment)
            days = _days_late(submitted, deadline, course.grace)
            used, charged = 0, days
            if course.policy == "late_days":
                used = min(days, left)
                left -= used
                charged = days - used
            if course.policy == "none" or charged == 0:
                penalty = 0.0
            elif (
                course.policy == "per_day"
                and course.max_days is not None
                and days > course.max_days
            ):
                penalty = 1.0
            else:
                penalty = min(1.0, charged * course.penalty_per_day)
            score = float(row["score"])
            outcomes[(student, assignment)] = LateOutcome(
                submitted,
                source,
                deadline,
                days,
                used,
                penalty,
                score * (1.0 - penalty),
            )
    return outcomes


def _iso(value: dt.datetime | None) -> str:
    return (
        "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def _points(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def read_gradebook(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """gradebook.csv's header and rows (as written by :func:`~report.write_gradebook`)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _plain(cell: str) -> str:
    """A gradebook cell without the quote :func:`~report.csv_cell` put before a formula."""
    from autograder.grader.report import _FORMULA_START

    return (
        cell[1:]
        if cell.startswith("'") and cell[1:].startswith(_FORMULA_START)
        else cell
    )


def adjust_gradebook(
    gradebook: Path, course: Course, submitted_root: Path
) -> tuple[dict[tuple[str, str], LateOutcome], list[str]]:
    """Append :data:`ADJUSTED_COLUMNS` to gradebook.csv (every existing column kept as it
    is: ``score`` stays the raw score) and return the outcomes and a summary to print.

    Timestamps come from ``submitted_root/<student>/<assignment>/`` (:func:`submission_time`).
    """
    from autograder.grader.report import write_atomic

    header, rows = read_gradebook(gradebook)
    header = [h for h in header if h not in ADJUSTED_COLUMNS]
    times = {}
    for row in rows:
        student, assignment = _plain(row["student_id"]), _plain(row["assignment_id"])
        folder = submitted_root / student / assignment
        notebook = folder / f"{assignment}.ipynb"
        times[(student, assignment)] = submission_time(
            folder, notebook if notebook.exists() or notebook.is_symlink() else None
        )
    plain_rows: list[dict[str, Any]] = [
        {
            "student_id": _plain(r["student_id"]),
            "assignment_id": _plain(r["assignment_id"]),
            "score": r["score"] or 0,
        }
        for r in rows
    ]
    outcomes = apply_late_policy(course, plain_rows, times)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + ADJUSTED_COLUMNS)
    for row, plain in zip(rows, plain_rows):
        late = outcomes[(str(plain["student_id"]), str(plain["assignment_id"]))]
        writer.writerow(
            [row.get(h, "") for h in header]
            + [
                _iso(late.submitted_at),
                late.source,
                _iso(late.deadline),
                late.days_late,
                late.late_days_used,
                round(late.penalty, 6),
                _points(late.adjusted),
            ]
        )
    write_atomic(gradebook, buffer.getvalue())
    sources: dict[str, int] = defaultdict(int)
    for late in outcomes.values():
        sources[late.source] += 1
    late_ones = [k for k, v in outcomes.items() if v.days_late > 0]
    penalised = [k for k, v in outcomes.items() if v.penalty > 0]
    summary = [
        f"late policy ({course.policy}) from {course.path}: {len(late_ones)} late submission(s), "
        f"{len(penalised)} penalised; times from "
        + ", ".join(f"{source} ({count})" for source, count in sorted(sources.items()))
    ]
    if sources.get("file mtime"):
        summary.append(
            "  no timestamp.txt for some submissions: their notebook's file time was used "
            "(a copy or unzip can change it; check those by hand)"
        )
    for student, assignment in sorted(penalised):
        late = outcomes[(student, assignment)]
        summary.append(
            f"  {student}/{assignment}: {late.days_late} day(s) late, "
            f"{late.late_days_used} late day(s) used, -{100 * late.penalty:.0f}%"
        )
    return outcomes, summary


# --------------------------------------------------------------------------- LMS exports


def _scores(
    rows: Sequence[dict[str, str]],
) -> tuple[list[str], list[str], dict[tuple[str, str], str], dict[str, float]]:
    """Students, assignments, the score to report (adjusted when there is one) and the
    points possible of each assignment, from gradebook.csv's rows."""
    students = sorted({_plain(r["student_id"]) for r in rows})
    assignments = sorted({_plain(r["assignment_id"]) for r in rows})
    scores: dict[tuple[str, str], str] = {}
    possible: dict[str, float] = {}
    for r in rows:
        key = (_plain(r["student_id"]), _plain(r["assignment_id"]))
        scores[key] = r.get("adjusted_score") or r["score"]
        possible[key[1]] = max(
            possible.get(key[1], 0.0), float(r.get("max_score") or 0)
        )
    return students, assignments, scores, possible


def canvas_rows(
    rows: Sequence[dict[str, str]], course: Course | None
) -> list[list[Any]]:
    """The gradebook in Canvas's grade-import CSV layout.

    Canvas imports the layout of its own gradebook export: the columns ``Student``, ``ID``,
    ``SIS User ID``, ``SIS Login ID``, ``Section``, then one column per assignment headed
    ``Assignment Name (assignment id)``; the second row is ``Points Possible`` under the
    assignments (Instructure, "How do I import grades in the Gradebook?", Canvas Instructor
    Guide; the same five columns are listed by Ohio State's CarmenCanvas guide
    https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades ).
    A student is matched by ID, SIS User ID or SIS Login ID; course.toml's ``[students.<id>]``
    supplies them (default: the grader's student id as the SIS Login ID and name). A new
    column without a Canvas id creates an assignment on import.
    """
    students, assignments, scores, possible = _scores(rows)
    course_names = course.names if course else {}
    canvas_ids = course.canvas_ids if course else {}
    info = course.students if course else {}

    def heading(assignment: str) -> str:
        name = course_names.get(assignment, assignment)
        return (
            f"{name} ({canvas_ids[assignment]})" if assignment in canvas_ids else name
        )

    out: list[list[Any]] = [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
        + [heading(a) for a in assignments],
        ["Points Possible", "", "", "", ""]
        + [_points(possible[a]) for a in assignments],
    ]
    for student in students:
        me = info.get(student, {})
        out.append(
            [
                me.get("name", student),
                me.get("id", ""),
                me.get("sis_user_id", ""),
                me.get("sis_login_id", student),
                me.get("section", ""),
            ]
            + [scores.get((student, a), "") for a in assignments]
        )
    return out


def generic_rows(rows: Sequence[dict[str, str]]) -> list[list[Any]]:
    """A plain wide gradebook: ``student_id``, one column per assignment, ``total``, ``possible``
    (adjusted scores where a late policy applied)."""
    students, assignments, scores, possible = _scores(rows)
    out: list[list[Any]] = [["student_id", *assignments, "total", "possible"]]
    for student in students:
        values = [scores.get((student, a), "") for a in assignments]
        total = sum(float(v) for v in values if v != "")
        out.append([student, *values, _points(total), _points(sum(possible.values()))])
    return out


def write_csv(path: Path, table: Sequence[Sequence[Any]]) -> None:
    """Write ``table`` as CSV atomically, every text cell safe for a spreadsheet."""
    from autograder.grader.report import csv_cell, write_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in table:
        writer.writerow([csv_cell(cell) for cell in row])
    write_atomic(path, buffer.getvalue())
