"""The CI grader's outputs: Gradescope ``results.json``, ``gradebook.csv``, HTML feedback.

Per submission, in ``OUT/<student>/<assignment>/``: ``feedback.html``, ``grading.json``
(timings and sandbox details, which vary between runs) and, written last, ``results.json``
(deterministic: the same submission gives the same file on every run and for every
``--jobs``). Every file is written atomically (a temporary file, then ``os.replace``), so an
interrupted run leaves either the old file or the new one, and a ``results.json`` that
exists marks a finished submission.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from tqdm import tqdm

from autograder.core import CheckResult
from autograder.flags import Flag

__all__ = [
    "HIDDEN_VISIBILITY",
    "OUTPUT_NAMES",
    "CellErrorRecord",
    "ExtraData",
    "Outcome",
    "ResultsRecord",
    "TestRecord",
    "VISIBILITIES",
    "check_results_json",
    "classroom_result",
    "feedback_html",
    "load_results",
    "progress_bar",
    "results_json",
    "student_folder",
    "submission_dir",
    "summary_table",
    "write_atomic",
    "write_gradebook",
    "write_submission",
]


#: Gradescope's values of a test's ``visibility`` (its autograder specifications: results.json).
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
#: When students see a hidden-tier check's name, score and feedback on Gradescope: once the
#: instructor publishes the grades (``autograde --hidden-visibility`` changes it). Public
#: checks are always ``visible``: students can run them themselves.
HIDDEN_VISIBILITY = "after_published"


class TestRecord(TypedDict):
    """One check in results.json's ``tests`` (Gradescope's fields; ``tags``: tier, flags)."""

    name: str
    score: float
    max_score: float
    status: Literal["passed", "failed"]
    output: str
    visibility: str
    tags: list[str]


class CellErrorRecord(TypedDict):
    """A notebook cell that did not run cleanly (``extra_data.cell_errors``)."""

    cell: int
    error: str


class ExtraData(TypedDict):
    """results.json's ``extra_data``: who, the resume key, the sandbox, flags and notes."""

    student_id: str
    assignment_id: str
    max_score: float
    notebook_sha256: str
    grader: str
    sandbox: str | None
    flags: list[Flag]
    cell_errors: list[CellErrorRecord]
    notes: list[str]


class ResultsRecord(TypedDict):
    """A results.json as this grader writes it (:func:`results_json`) and its readers read it
    back (:func:`load_results`, :func:`autograder.grader.classreport.load_class`). Readers
    still use ``.get`` with a default where a file from elsewhere may lack a field."""

    score: float
    output: str
    output_format: str
    visibility: str
    stdout_visibility: str
    tests: list[TestRecord]
    extra_data: ExtraData


@dataclass
class Outcome:
    """Everything the grader learnt about one submission."""

    student: str
    assignment: str
    notebook_sha256: str = ""
    grader: str = ""
    tests: list[CheckResult] = field(default_factory=list)
    cell_errors: dict[int, str] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sandbox: str | None = None
    seconds: float = 0.0
    output_bytes: int = 0
    #: The ``visibility`` of the hidden tier's tests in results.json (:data:`VISIBILITIES`).
    hidden_visibility: str = HIDDEN_VISIBILITY
    #: The worker's control group: CPU seconds of all its processes, quota, throttled periods.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Points earned."""
        return float(sum(t.score for t in self.tests))

    @property
    def max_score(self) -> float:
        """Points possible."""
        return float(sum(t.max_score for t in self.tests))


def _points(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def _summary_text(outcome: Outcome) -> str:
    lines = [f"{_points(outcome.score)} / {_points(outcome.max_score)} points."]
    failed = [t for t in outcome.tests if not t.passed]
    if failed:
        lines.append(
            f"{len(failed)} of {len(outcome.tests)} checks failed; each failed check below says what to look at."
        )
    if outcome.cell_errors:
        lines.append("Cells of your notebook that did not run cleanly:")
        lines.extend(
            f"  cell {number}: {error}" for number, error in outcome.cell_errors.items()
        )
    if outcome.notes:
        lines.append("Notes:")
        lines.extend(f"  {note}" for note in outcome.notes)
    return "\n".join(lines)


def results_json(outcome: Outcome) -> ResultsRecord:
    """Gradescope's results.json for one submission (deterministic: no timings)."""
    tests: list[TestRecord] = []
    for test in outcome.tests:
        tests.append(
            {
                "name": test.test_name,
                "score": _points(test.score),
                "max_score": _points(test.max_score),
                "status": "passed" if test.passed else "failed",
                "output": test.feedback if not test.passed else "passed",
                "visibility": outcome.hidden_visibility
                if test.tier == "hidden"
                else "visible",
                "tags": [test.tier, *test.flags],
            }
        )
    return {
        "score": _points(outcome.score),
        "output": _summary_text(outcome),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {
            "student_id": outcome.student,
            "assignment_id": outcome.assignment,
            "max_score": _points(outcome.max_score),
            "notebook_sha256": outcome.notebook_sha256,
            "grader": outcome.grader,
            "sandbox": outcome.sandbox,
            "flags": list(outcome.flags),
            "cell_errors": [
                {"cell": n, "error": e} for n, e in outcome.cell_errors.items()
            ],
            "notes": list(outcome.notes),
        },
    }


def check_results_json(data: Any) -> list[str]:
    """Problems with ``data`` as a Gradescope results.json of this grader ([] when valid)."""
    problems = []
    if not isinstance(data, dict):
        return ["results.json is not an object"]
    tests = data.get("tests")
    if not isinstance(tests, list):
        return ["tests is not a list"]
    for index, test in enumerate(tests):
        if not isinstance(test, dict):
            problems.append(f"tests[{index}] is not an object")
            continue
        for key, kind in (
            ("name", str),
            ("score", (int, float)),
            ("max_score", (int, float)),
            ("status", str),
            ("output", str),
        ):
            if not isinstance(test.get(key), kind) or isinstance(test.get(key), bool):
                problems.append(
                    f"tests[{index}].{key} is missing or not a {getattr(kind, '__name__', 'number')}"
                )
        name = test.get("name", "")
        if isinstance(name, str) and (
            ": " not in name or not name.split(": ", 1)[0].isidentifier()
        ):
            problems.append(
                f"tests[{index}].name {name!r} does not start with '<task>: '"
            )
        if test.get("status") not in ("passed", "failed"):
            problems.append(f"tests[{index}].status is {test.get('status')!r}")
        score, max_score = test.get("score"), test.get("max_score")
        if (
            isinstance(score, (int, float))
            and isinstance(max_score, (int, float))
            and not 0 <= score <= max_score
        ):
            problems.append(f"tests[{index}].score {score} is outside [0, {max_score}]")
        if test.get("status") == "failed" and not str(test.get("output", "")).strip():
            problems.append(f"tests[{index}] failed without feedback")
    total = sum(
        t.get("score", 0)
        for t in tests
        if isinstance(t, dict) and isinstance(t.get("score"), (int, float))
    )
    if (
        not isinstance(data.get("score"), (int, float))
        or abs(data["score"] - total) > 1e-9
    ):
        problems.append(
            f"score {data.get('score')!r} is not the sum of the test scores ({total})"
        )
    return problems


# --------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .5rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
.pass { color: #1a7f37; } .fail { color: #b3261e; font-weight: 600; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: .5rem; margin: .3rem 0; }
.flag { display: inline-block; background: #fde7e9; color: #b3261e; border-radius: .3rem; padding: 0 .4rem; margin-right: .3rem; font-size: .85rem; }
"""


def feedback_html(results: ResultsRecord) -> str:
    """A student's feedback page from their results.json: what failed and why, never check code."""
    e = html.escape
    extra = results.get("extra_data", {})
    student, assignment = (
        str(extra.get("student_id", "")),
        str(extra.get("assignment_id", "")),
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(assignment)}: feedback for {e(student)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(assignment)}: feedback for {e(student)}</h1>",
        f"<p><strong>{e(str(results.get('score')))} / {e(str(extra.get('max_score')))}</strong> points.</p>",
    ]
    flags = extra.get("flags") or []
    if flags:
        parts.append(
            "<p>"
            + "".join(f'<span class="flag">{e(str(f))}</span>' for f in flags)
            + "</p>"
        )
    by_task: dict[str, list[TestRecord]] = {}
    for test in results.get("tests", []):
        task = str(test.get("name", "")).split(": ", 1)[0]
        by_task.setdefault(task, []).append(test)
    parts.append(
        "<h2>Checks</h2><table><tr><th>task</th><th>check</th><th>points</th><th>result</th></tr>"
    )
    for task, tests in by_task.items():
        for test in tests:
            name = str(test.get("name", "")).split(": ", 1)[-1]
            ok = test.get("status") == "passed"
            parts.append(
                f"<tr><td><code>{e(task)}</code></td><td>{e(name)}"
                + ("" if ok else f"<pre>{e(str(test.get('output', '')))}</pre>")
                + f"</td><td>{e(str(test.get('score')))} / {e(str(test.get('max_score')))}</td>"
                + f'<td class="{"pass" if ok else "fail"}">{"passed" if ok else "failed"}</td></tr>'
            )
    parts.append("</table>")
    cells = extra.get("cell_errors") or []
    if cells:
        parts.append("<h2>Cells that did not run cleanly</h2><table>")
        parts.extend(
            f"<tr><td>cell {e(str(c.get('cell')))}</td><td><pre>{e(str(c.get('error')))}</pre></td></tr>"
            for c in cells
        )
        parts.append("</table>")
    notes = extra.get("notes") or []
    if notes:
        parts.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li>{e(str(n))}</li>" for n in notes)
            + "</ul>"
        )
    parts.append(
        f"<p><small>Graded in a sandbox ({e(str(extra.get('sandbox')))}); grader {e(str(extra.get('grader')))}.</small></p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- files


def log_graded(
    out: Path,
    key: str,
    results: ResultsRecord,
    seconds: float,
    sandbox: str | None,
    **where: Any,
) -> None:
    """Append one JSON line to ``OUT/grading.log``: what was graded, its score and where.

    ``where`` names the process that graded it (``judge=PID`` locally, ``dask_worker=ADDRESS``
    on a cluster). One ``O_APPEND`` write per line, so concurrent judges never interleave.
    """
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "graded": key,
        "score": results["score"],
        "max_score": results["extra_data"]["max_score"],
        "seconds": round(seconds, 2),
        "sandbox": sandbox,
        **where,
    }
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    fd = os.open(out / "grading.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


#: Every name the grader writes at OUT's top level, besides the students' folders (and
#: whatever starts with a dot: ``.running``, temporary files). A new output file must be
#: listed here, so that no student's folder can take its place (:func:`student_folder`).
OUTPUT_NAMES = frozenset(
    {
        "gradebook.csv",
        "grading.log",
        "shard.json",
        # what the instructor's commands write next to them (autograde report, similar, export)
        "report.html",
        "report.csv",
        "similar.html",
        "similar.csv",
        "gradebook_canvas.csv",
        "gradebook_generic.csv",
    }
)
_RESERVED = frozenset(name.casefold() for name in OUTPUT_NAMES)


def student_folder(student: str) -> str:
    """The folder of OUT that holds ``student``'s results: the id itself, except an id that
    is one of :data:`OUTPUT_NAMES` (in any case: some file systems ignore it) or starts with
    a dot, whose first character is written ``\\xNN``. A student id is already
    :func:`autograder.grader.submissions.printable` (a literal backslash doubled), so the escaped
    folder is never another student's."""
    if student and (student.startswith(".") or student.casefold() in _RESERVED):
        return f"\\x{ord(student[0]):02x}" + student[1:]
    return student


def submission_dir(out: Path, student: str, assignment: str) -> Path:
    """``OUT/<student>/<assignment>`` (the student's folder as :func:`student_folder` names it)."""
    return out / student_folder(student) / assignment


def write_submission(out: Path, outcome: Outcome) -> ResultsRecord:
    """Write feedback.html, grading.json and (last) results.json; return the results."""
    folder = submission_dir(out, outcome.student, outcome.assignment)
    results = results_json(outcome)
    problems = check_results_json(results)
    if problems:  # a bug of the grader's, never the student's
        raise ValueError("invalid results.json: " + "; ".join(problems))
    write_atomic(folder / "feedback.html", feedback_html(results))
    timing: dict[str, Any] = {
        "seconds": round(outcome.seconds, 3),
        "sandbox": outcome.sandbox,
        "output_bytes": outcome.output_bytes,
        "cpu": outcome.cpu,
    }
    timing["tests"] = {t.test_name: round(t.seconds, 4) for t in outcome.tests}
    write_atomic(folder / "grading.json", json.dumps(timing, indent=1) + "\n")
    write_atomic(
        folder / "results.json",
        json.dumps(results, indent=1, ensure_ascii=False) + "\n",
    )
    return results


def load_results(out: Path, student: str, assignment: str) -> ResultsRecord | None:
    """The results.json of a finished submission (checked by :func:`check_results_json`),
    or None."""
    path = submission_dir(out, student, assignment) / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and not check_results_json(data):
        return cast(ResultsRecord, data)
    return None


def _task_scores(results: ResultsRecord) -> dict[str, float]:
    scores: dict[str, float] = {}
    for test in results.get("tests", []):
        task = str(test.get("name", "")).split(": ", 1)[0]
        scores[task] = scores.get(task, 0.0) + float(test.get("score", 0))
    return scores


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: text that would start a formula gets a leading ``'``.

    A student id like ``=HYPERLINK(...)`` or ``@SUM(A1)`` otherwise runs as a formula when the
    gradebook is opened in Excel, LibreOffice or Google Sheets; the quote makes it text.
    Numbers are left alone (a negative score stays a number).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_gradebook(
    path: Path, all_results: Sequence[ResultsRecord], task_order: Iterable[str]
) -> None:
    """gradebook.csv: one row per (student, assignment), the total and per-task scores."""
    tasks = list(task_order)
    seen = {t for r in all_results for t in _task_scores(r)}
    tasks = [t for t in tasks if t in seen] + sorted(seen - set(tasks))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["student_id", "assignment_id", "score", "max_score", "flags"]
        + [csv_cell(t) for t in tasks]
    )
    rows = sorted(
        all_results,
        key=lambda r: (r["extra_data"]["student_id"], r["extra_data"]["assignment_id"]),
    )
    for results in rows:
        extra = results["extra_data"]
        scores = _task_scores(results)
        writer.writerow(
            [
                csv_cell(extra["student_id"]),
                csv_cell(extra["assignment_id"]),
                _points(results["score"]),
                _points(extra.get("max_score", 0)),
                csv_cell(" ".join(extra.get("flags") or [])),
                *[_points(scores[t]) if t in scores else "" for t in tasks],
            ]
        )
    write_atomic(path, buffer.getvalue())


def classroom_result(all_results: Sequence[ResultsRecord]) -> dict[str, Any]:
    """GitHub Classroom's runner result (``classroom-resources/autograding-grading-reporter``):
    one test per check, partial credit kept as points."""
    tests = []
    for results in all_results:
        for test in results.get("tests", []):
            passed = test.get("status") == "passed"
            tests.append(
                {
                    "name": test["name"],
                    "status": "pass" if passed else "fail",
                    "score": test["score"],
                    "max_score": test["max_score"],
                    "message": "" if passed else test.get("output", ""),
                }
            )
    max_score = sum(
        float(r.get("extra_data", {}).get("max_score", 0)) for r in all_results
    )
    status = "pass" if tests and all(t["status"] == "pass" for t in tests) else "fail"
    return {
        "version": 1,
        "status": status,
        "max_score": _points(max_score),
        "tests": tests,
    }


def summary_table(all_results: Sequence[ResultsRecord]) -> str:
    """The class at a glance: one line per submission, then the mean per assignment."""
    rows = [("student", "assignment", "score", "flags")]
    means: dict[str, list[float]] = {}
    ordered = sorted(
        all_results,
        key=lambda r: (r["extra_data"]["student_id"], r["extra_data"]["assignment_id"]),
    )
    for results in ordered:
        extra = results["extra_data"]
        rows.append(
            (
                str(extra["student_id"]),
                str(extra["assignment_id"]),
                f"{_points(results['score'])} / {_points(extra.get('max_score', 0))}",
                ", ".join(extra.get("flags") or []) or "-",
            )
        )
        fraction = float(results["score"]) / float(extra.get("max_score") or 1)
        means.setdefault(str(extra["assignment_id"]), []).append(fraction)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for assignment, fractions in sorted(means.items()):
        lines.append(
            f"{assignment}: {len(fractions)} submissions, mean {100 * sum(fractions) / len(fractions):.0f}%"
        )
    return "\n".join(lines)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """The batch's progress bar on stderr (off with ``--no-progress``), for local judges and
    the Dask client alike."""
    return tqdm(
        total=total,
        desc=desc,
        unit="nb",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
