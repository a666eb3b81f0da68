"""What an instructor reads after the deadline: the class report and the regrade changelog.

:func:`load_class` reads a graded ``OUT`` folder (each ``<student>/<assignment>/results.json``,
with ``grading.json``'s timings where present); :func:`build_report` turns it into numbers;
:func:`write_report` writes ``report.html`` (one page, a jinja2 template, plots as inline
base64 PNGs drawn with matplotlib) and ``report.csv``; :func:`diff_classes` compares two graded
folders of the same class (``autograde diff OLD NEW``).

Which known bug a student made is recovered from the feedback: every
:class:`~autograder.compare.KnownBug`'s hint is the text a failed check shows when the
student's result equals the bug's wrong formula (``tests/test_autograder/test_known_bugs.py``
checks that each hint appears in its mutant's feedback), so a failed test of task ``T`` whose
output matches the hint of a bug of ``T`` (:meth:`KnownBug.pattern`) is a student who made it.
results.json itself is unchanged (it stays byte-identical across ``--jobs`` and Dask).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from autograder.grader.report import ResultsRecord, TestRecord

__all__ = [
    "BugHit",
    "ClassData",
    "Graded",
    "bug_catalogue",
    "build_report",
    "diff_classes",
    "format_diff",
    "known_bugs_in",
    "load_class",
    "render_report",
    "write_diff_csv",
    "write_report",
]


@dataclass
class Graded:
    """One graded submission: its results.json and, when present, its grading.json."""

    student: str
    assignment: str
    results: ResultsRecord
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.student}/{self.assignment}"

    @property
    def score(self) -> float:
        return float(self.results.get("score", 0))

    @property
    def max_score(self) -> float:
        return float(self.results.get("extra_data", {}).get("max_score", 0) or 0)

    @property
    def flags(self) -> list[str]:
        return [str(f) for f in self.results.get("extra_data", {}).get("flags") or []]

    def tests(self) -> list[TestRecord]:
        return [t for t in self.results.get("tests", []) if isinstance(t, dict)]


@dataclass
class ClassData:
    """Every graded submission of an ``OUT`` folder, and what could not be read."""

    out: Path
    graded: list[Graded]
    unreadable: list[str] = field(default_factory=list)

    def assignments(self) -> list[str]:
        return sorted({g.assignment for g in self.graded})

    def by_key(self) -> dict[str, Graded]:
        return {g.key: g for g in self.graded}


def load_class(out: Path) -> ClassData:
    """Read ``out/<student>/<assignment>/results.json`` (and grading.json) of every submission.

    Raises:
        FileNotFoundError: ``out`` is not a folder or holds no results.json at all.
    """
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} is not a folder")
    graded, unreadable = [], []
    for path in sorted(out.glob("*/*/results.json")):
        key = f"{path.parent.parent.name}/{path.parent.name}"
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(results, dict) or not isinstance(
                results.get("tests"), list
            ):
                raise ValueError("not a results.json object with a tests list")
        except (OSError, ValueError) as error:
            unreadable.append(f"{key}: {error}")
            continue
        results = cast(ResultsRecord, results)
        extra = results.get("extra_data") or {}
        timing: dict[str, Any] = {}
        timing_path = path.with_name("grading.json")
        if timing_path.is_file():
            try:
                loaded = json.loads(timing_path.read_text(encoding="utf-8"))
                timing = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                timing = {}
        graded.append(
            Graded(
                str(extra.get("student_id", path.parent.parent.name)),
                str(extra.get("assignment_id", path.parent.name)),
                results,
                timing,
            )
        )
    if not graded and not unreadable:
        raise FileNotFoundError(
            f"no results.json under {out} (expected {out}/<student>/<assignment>/results.json: "
            "run autograde grade first)"
        )
    return ClassData(out, graded, unreadable)


# --------------------------------------------------------------------------- known bugs


def bug_catalogue() -> list[Any]:
    """Every :class:`~autograder.compare.KnownBug` of the course's checks (public and
    hidden modules imported, so each catalogue has registered its bugs)."""
    import importlib

    from autograder.compare import KNOWN_BUGS
    from autograder.tasks import ASSIGNMENTS, check_modules

    for assignment in ASSIGNMENTS.values():
        for module in check_modules(assignment):
            if module is not None:
                importlib.import_module(module)
    unique: dict[tuple[str, str], Any] = {}
    for bug in KNOWN_BUGS:
        unique.setdefault((bug.mutant, bug.hint), bug)
    return list(unique.values())


@dataclass(frozen=True)
class BugHit:
    """A known bug seen in one failed test of one submission."""

    bug_id: str  # the corpus mutant, "<task>/<name>"
    hint: str
    test: str
    output: str


def known_bugs_in(results: ResultsRecord, catalogue: Sequence[Any]) -> list[BugHit]:
    """The known bugs whose hint appears in the output of a failed test of their own task."""
    by_task: dict[str, list[tuple[Any, re.Pattern[str]]]] = defaultdict(list)
    for bug in catalogue:
        by_task[bug.mutant.split("/", 1)[0]].append((bug, bug.pattern()))
    hits, seen = [], set()
    for test in results.get("tests", []):
        if not isinstance(test, dict) or test.get("status") == "passed":
            continue
        name = str(test.get("name", ""))
        task = name.split(": ", 1)[0]
        output = str(test.get("output", ""))
        for bug, pattern in by_task.get(task, []):
            if bug.mutant not in seen and pattern.search(output):
                seen.add(bug.mutant)
                hits.append(BugHit(bug.mutant, bug.hint, name, output))
    return hits


def _anonymise(text: str, student: str) -> str:
    """Feedback without the student's id (checks never print it, but a notebook's own
    output quoted in feedback might)."""
    return text.replace(student, "<student>") if student else text


# --------------------------------------------------------------------------- the report


def _task_of(test_name: str) -> str:
    return test_name.split(": ", 1)[0]


def _pct(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def _histogram_png(values: Sequence[float], maximum: float, title: str) -> str:
    """A score histogram as a base64 PNG (``data:`` URL), drawn with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2, 2.0), dpi=90)
    axes = figure.subplots()
    top = maximum if maximum > 0 else max(values or [1.0])
    bins = 10 if top > 10 else max(1, math.ceil(top))
    axes.hist(values, bins=bins, range=(0, top), color="#4c72b0", edgecolor="white")
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("points", fontsize=8)
    axes.set_ylabel("submissions", fontsize=8)
    axes.tick_params(labelsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_report(
    data: ClassData, catalogue: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The class report's numbers (what :func:`render_report` shows and ``report.csv`` lists)."""
    catalogue = bug_catalogue() if catalogue is None else catalogue
    assignments = []
    for assignment in data.assignments():
        subs = [g for g in data.graded if g.assignment == assignment]
        n = len(subs)
        totals = [g.score for g in subs]
        max_total = max((g.max_score for g in subs), default=0.0)
        task_scores: dict[str, list[float]] = defaultdict(list)
        task_max: dict[str, float] = defaultdict(float)
        prop_fail: Counter[str] = Counter()
        prop_seen: Counter[str] = Counter()
        prop_unexplained: Counter[str] = Counter()
        bug_hits: dict[str, list[tuple[Graded, BugHit]]] = defaultdict(list)
        test_seconds: dict[str, list[float]] = defaultdict(list)
        for g in subs:
            per_task: dict[str, float] = defaultdict(float)
            hits = known_bugs_in(g.results, catalogue)
            # A failure is explained when the student made a known bug of that task (the
            # hint shows in one check; the bug fails the task's other checks too).
            explained_tasks = {h.bug_id.split("/", 1)[0] for h in hits}
            for hit in hits:
                bug_hits[hit.bug_id].append((g, hit))
            for test in g.tests():
                name = str(test.get("name", ""))
                task = _task_of(name)
                per_task[task] += float(test.get("score", 0))
                task_max[task] = max(
                    task_max[task],
                    sum(
                        float(t.get("max_score", 0))
                        for t in g.tests()
                        if _task_of(str(t.get("name", ""))) == task
                    ),
                )
                prop_seen[name] += 1
                if test.get("status") != "passed":
                    prop_fail[name] += 1
                    if task not in explained_tasks:
                        prop_unexplained[name] += 1
            for task, score in per_task.items():
                task_scores[task].append(score)
            for name, seconds in (g.timing.get("tests") or {}).items():
                if isinstance(seconds, (int, float)):
                    test_seconds[name].append(float(seconds))
        tasks = []
        for task in sorted(task_scores, key=lambda t: list(task_scores).index(t)):
            values = task_scores[task]
            top = task_max[task]
            tasks.append(
                {
                    "task": task,
                    "n": len(values),
                    "max": top,
                    "mean": statistics.fmean(values) if values else 0.0,
                    "median": statistics.median(values) if values else 0.0,
                    "full": sum(1 for v in values if top and v >= top - 1e-9),
                    "zero": sum(1 for v in values if v <= 1e-9),
                    "plot": _histogram_png(values, top, f"{assignment}: {task}"),
                }
            )
        properties: list[dict[str, Any]] = sorted(
            (
                {
                    "name": name,
                    "task": _task_of(name),
                    "failed": prop_fail[name],
                    "n": prop_seen[name],
                    "rate": _pct(prop_fail[name], prop_seen[name]),
                    "unexplained": prop_unexplained[name],
                }
                for name in prop_seen
            ),
            key=lambda p: (-float(p["rate"]), str(p["name"])),
        )
        bugs: list[dict[str, Any]] = []
        for bug_id, seen in bug_hits.items():
            students = sorted({g.student for g, _ in seen})
            example_g, example = min(seen, key=lambda pair: pair[0].student)
            bugs.append(
                {
                    "bug": bug_id,
                    "task": bug_id.split("/", 1)[0],
                    "hint": example.hint,
                    "students": len(students),
                    "rate": _pct(len(students), n),
                    "example_test": example.test,
                    "example": _anonymise(example.output, example_g.student),
                }
            )
        bugs.sort(key=lambda b: (-int(b["students"]), str(b["bug"])))
        seconds = [float(g.timing.get("seconds", 0) or 0) for g in subs]
        slow_tests = sorted(
            (
                {"name": name, "total": sum(v), "mean": statistics.fmean(v)}
                for name, v in test_seconds.items()
            ),
            key=lambda t: -float(t["total"]),
        )[:10]
        assignments.append(
            {
                "id": assignment,
                "n": n,
                "max": max_total,
                "mean": statistics.fmean(totals) if totals else 0.0,
                "median": statistics.median(totals) if totals else 0.0,
                "plot": _histogram_png(totals, max_total, f"{assignment}: total"),
                "tasks": tasks,
                "properties": properties,
                "bugs": bugs,
                "seconds_total": sum(seconds),
                "seconds_median": statistics.median(seconds) if seconds else 0.0,
                "seconds_max": max(seconds, default=0.0),
                "seconds_checks": sum(sum(v) for v in test_seconds.values()),
                "slow_tests": slow_tests,
            }
        )
    flagged = []
    for g in data.graded:
        flags = g.flags  # every flag the grader sets is something a human should see
        if flags:
            flagged.append(
                {
                    "student": g.student,
                    "assignment": g.assignment,
                    "flags": flags,
                    "score": g.score,
                    "max": g.max_score,
                    "notes": list(g.results.get("extra_data", {}).get("notes") or [])[
                        :3
                    ],
                }
            )
    slowest = sorted(
        (
            {
                "student": g.student,
                "assignment": g.assignment,
                "seconds": float(g.timing.get("seconds", 0) or 0),
                "sandbox": g.timing.get("sandbox"),
            }
            for g in data.graded
        ),
        key=lambda s: -float(s["seconds"] or 0),
    )[:10]
    headlines = [
        {
            "assignment": a["id"],
            "text": f"{b['rate']:.0f}% of {a['id']} ({b['students']}/{a['n']}) {b['hint']} ({b['task']})",
            "rate": b["rate"],
        }
        for a in assignments
        for b in a["bugs"]
    ]
    headlines.sort(key=lambda h: -h["rate"])
    return {
        "out": str(data.out),
        "submissions": len(data.graded),
        "students": len({g.student for g in data.graded}),
        "assignments": assignments,
        "flagged": flagged,
        "slowest": slowest,
        "headlines": headlines[:10],
        "unreadable": data.unreadable,
        "seconds_total": sum(a["seconds_total"] for a in assignments),
    }


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Class report: {{ r.out }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 2px solid #4c72b0; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; } td, th { padding: .25rem .5rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: .4rem; margin: .2rem 0; font-size: .85rem; }
.plots img { margin: .2rem; border: 1px solid #eee; }
.bar { background: #b3261e; height: .7rem; display: inline-block; vertical-align: middle; }
.flag { display: inline-block; background: #fde7e9; color: #b3261e; border-radius: .3rem; padding: 0 .4rem; margin-right: .3rem; font-size: .85rem; }
.headline { font-size: 1.05rem; }
</style></head><body>
<h1>Class report</h1>
<p>{{ r.submissions }} submissions from {{ r.students }} students in <code>{{ r.out }}</code>;
{{ r.assignments|length }} assignment(s); grading took {{ "%.0f"|format(r.seconds_total) }} s of judge time.</p>
{% if r.unreadable %}<p class="flag">Unreadable results: {{ r.unreadable|join("; ") }}</p>{% endif %}

<h2 id="misconceptions">What the class got wrong (known bugs)</h2>
{% if r.headlines %}<ul>{% for h in r.headlines %}<li class="headline">{{ h.text }}</li>{% endfor %}</ul>
{% else %}<p>No submission matched a catalogued bug.</p>{% endif %}

{% for a in r.assignments %}
<h2 id="a-{{ a.id }}">{{ a.id }}: {{ a.n }} submissions, mean {{ "%.1f"|format(a.mean) }} / {{ "%g"|format(a.max) }}, median {{ "%g"|format(a.median) }}</h2>
<div class="plots"><img alt="{{ a.id }} total score distribution" src="{{ a.plot }}">
{% for t in a.tasks %}<img alt="{{ a.id }} {{ t.task }} score distribution" src="{{ t.plot }}">{% endfor %}</div>
<h3>Tasks</h3>
<table class="tasks"><tr><th>task</th><th class="num">mean</th><th class="num">max</th><th class="num">full marks</th><th class="num">zero</th></tr>
{% for t in a.tasks %}<tr><td><code>{{ t.task }}</code></td><td class="num">{{ "%.2f"|format(t.mean) }}</td><td class="num">{{ "%g"|format(t.max) }}</td>
<td class="num">{{ t.full }} / {{ t.n }}</td><td class="num">{{ t.zero }}</td></tr>{% endfor %}</table>
<h3>Known bugs</h3>
{% if a.bugs %}<table class="bugs"><tr><th>bug (corpus mutant)</th><th class="num">students</th><th>example feedback (anonymised)</th></tr>
{% for b in a.bugs %}<tr><td><code>{{ b.bug }}</code><br>{{ b.hint }}</td><td class="num">{{ b.students }} ({{ "%.0f"|format(b.rate) }}%)</td>
<td><small>{{ b.example_test }}</small><pre>{{ b.example }}</pre></td></tr>{% endfor %}</table>
{% else %}<p>None matched.</p>{% endif %}
<h3>Properties by failure rate</h3>
<table class="properties"><tr><th>property</th><th class="num">failed</th><th class="num">rate</th><th></th><th class="num">failed, no known bug of the task</th></tr>
{% for p in a.properties %}<tr><td>{{ p.name }}</td><td class="num">{{ p.failed }} / {{ p.n }}</td><td class="num">{{ "%.0f"|format(p.rate) }}%</td>
<td style="width:8rem"><span class="bar" style="width: {{ "%.1f"|format(p.rate * 0.08) }}rem"></span></td><td class="num">{{ p.unexplained }}</td></tr>{% endfor %}</table>
<h3>Grading time</h3>
<p>{{ "%.1f"|format(a.seconds_total) }} s in all; per submission median {{ "%.1f"|format(a.seconds_median) }} s, max {{ "%.1f"|format(a.seconds_max) }} s.
Of that, {{ "%.1f"|format(a.seconds_checks) }} s ran the checks; the rest started sandboxed workers and ran the notebooks' cells.</p>
{% if a.slow_tests %}<table class="time"><tr><th>property</th><th class="num">total s</th><th class="num">mean s</th></tr>
{% for t in a.slow_tests %}<tr><td>{{ t.name }}</td><td class="num">{{ "%.2f"|format(t.total) }}</td><td class="num">{{ "%.3f"|format(t.mean) }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}

<h2 id="flagged">Flagged submissions ({{ r.flagged|length }})</h2>
{% if r.flagged %}<table class="flagged"><tr><th>student</th><th>assignment</th><th>flags</th><th class="num">score</th><th>notes</th></tr>
{% for f in r.flagged %}<tr><td>{{ f.student }}</td><td>{{ f.assignment }}</td><td>{% for x in f.flags %}<span class="flag">{{ x }}</span>{% endfor %}</td>
<td class="num">{{ "%g"|format(f.score) }} / {{ "%g"|format(f.max) }}</td><td>{% for n in f.notes %}<small>{{ n }}</small><br>{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p>None.</p>{% endif %}

<h2 id="slowest">Slowest submissions</h2>
<table class="slowest"><tr><th>student</th><th>assignment</th><th class="num">seconds</th><th>sandbox</th></tr>
{% for s in r.slowest %}<tr><td>{{ s.student }}</td><td>{{ s.assignment }}</td><td class="num">{{ "%.1f"|format(s.seconds) }}</td><td>{{ s.sandbox or "-" }}</td></tr>{% endfor %}</table>
<p><small>Known bugs are recognised from the feedback each failed check gave (the hint of the catalogued
wrong formula the result equalled); a failed check of a student who made no known bug of its task is counted under "no known bug of the task":
those are the failures nobody has explained yet.</small></p>
</body></html>
"""


def render_report(report: dict[str, Any]) -> str:
    """The report as one HTML page (jinja2, autoescaped: ids and feedback are text)."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_TEMPLATE).render(r=report)


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    """report.csv's rows: ``section, assignment, task, item, count, total, rate_pct, mean``."""
    rows: list[list[Any]] = [
        ["section", "assignment", "task", "item", "count", "total", "rate_pct", "mean"]
    ]
    for a in report["assignments"]:
        rows.append(
            [
                "assignment",
                a["id"],
                "",
                "total",
                a["n"],
                a["max"],
                "",
                round(a["mean"], 4),
            ]
        )
        for t in a["tasks"]:
            rows.append(
                [
                    "task",
                    a["id"],
                    t["task"],
                    "full_marks",
                    t["full"],
                    t["n"],
                    round(_pct(t["full"], t["n"]), 2),
                    round(t["mean"], 4),
                ]
            )
        for p in a["properties"]:
            rows.append(
                [
                    "property",
                    a["id"],
                    p["task"],
                    p["name"],
                    p["failed"],
                    p["n"],
                    round(p["rate"], 2),
                    "",
                ]
            )
        for b in a["bugs"]:
            rows.append(
                [
                    "known_bug",
                    a["id"],
                    b["task"],
                    b["bug"],
                    b["students"],
                    a["n"],
                    round(b["rate"], 2),
                    "",
                ]
            )
    for f in report["flagged"]:
        rows.append(
            [
                "flagged",
                f["assignment"],
                "",
                f"{f['student']}: {' '.join(f['flags'])}",
                "",
                "",
                "",
                "",
            ]
        )
    return rows


def write_report(
    out: Path, to: Path | None = None
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``report.html`` and ``report.csv`` (into ``to``, default ``out``); return their
    paths and the report's numbers."""
    from autograder.grader.report import csv_cell, write_atomic

    data = load_class(out)
    report = build_report(data)
    folder = Path(to) if to is not None else Path(out)
    page = folder / "report.html"
    table = folder / "report.csv"
    write_atomic(page, render_report(report))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in report_rows(report):
        writer.writerow([csv_cell(cell) for cell in row])
    write_atomic(table, buffer.getvalue())
    return page, table, report


# --------------------------------------------------------------------------- regrade diff


def diff_classes(old: ClassData, new: ClassData) -> list[dict[str, Any]]:
    """Every submission whose points changed between two graded folders of one class.

    Each change says who, how many points, on which property (``"test": (old, new)``) and
    why: the notebook changed (its digest), the grader changed (its fingerprint: checks,
    limits, environment), or neither (which deterministic grading never gives).
    Submissions present on one side only are listed as ``added``/``removed``.
    """
    before, after = old.by_key(), new.by_key()
    changes: list[dict[str, Any]] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            g = b or a
            assert g is not None
            changes.append(
                {
                    "key": key,
                    "student": g.student,
                    "assignment": g.assignment,
                    "old": None if a is None else a.score,
                    "new": None if b is None else b.score,
                    "delta": (b.score if b else 0.0) - (a.score if a else 0.0),
                    "why": ["only in the new results"]
                    if a is None
                    else ["only in the old results"],
                    "tests": [],
                }
            )
            continue
        old_tests = {str(t.get("name")): t for t in a.tests()}
        new_tests = {str(t.get("name")): t for t in b.tests()}
        tests = []
        for name in list(old_tests) + [n for n in new_tests if n not in old_tests]:
            t0, t1 = old_tests.get(name), new_tests.get(name)
            s0 = None if t0 is None else float(t0.get("score", 0))
            s1 = None if t1 is None else float(t1.get("score", 0))
            if s0 != s1:
                tests.append(
                    {
                        "name": name,
                        "old": s0,
                        "new": s1,
                        "output": "" if t1 is None else str(t1.get("output", "")),
                        "change": "check added"
                        if t0 is None
                        else "check removed"
                        if t1 is None
                        else ("gained" if (s1 or 0) > (s0 or 0) else "lost"),
                    }
                )
        if not tests and a.score == b.score:
            continue
        ea, eb = a.results.get("extra_data", {}), b.results.get("extra_data", {})
        why = []
        if ea.get("notebook_sha256") != eb.get("notebook_sha256"):
            why.append("notebook changed")
        if ea.get("grader") != eb.get("grader"):
            why.append(f"grader changed ({ea.get('grader')} -> {eb.get('grader')})")
        if sorted(old_tests) != sorted(new_tests):
            why.append("set of checks changed")
        if ea.get("flags") != eb.get("flags"):
            why.append(f"flags {ea.get('flags')} -> {eb.get('flags')}")
        if not why:
            why.append("same notebook and grader: not reproducible (report this)")
        changes.append(
            {
                "key": key,
                "student": a.student,
                "assignment": a.assignment,
                "old": a.score,
                "new": b.score,
                "delta": b.score - a.score,
                "why": why,
                "tests": tests,
            }
        )
    return changes


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_diff(
    changes: Sequence[dict[str, Any]], old: ClassData, new: ClassData
) -> str:
    """The changelog as text: one block per submission whose points changed."""
    lines = [
        f"autograde diff: {len(old.graded)} graded in {old.out}, {len(new.graded)} in {new.out}"
    ]
    regraded = sum(
        1
        for key, g in new.by_key().items()
        if key in old.by_key()
        and g.results.get("extra_data", {}).get("grader")
        != old.by_key()[key].results.get("extra_data", {}).get("grader")
    )
    if regraded:
        lines.append(f"{regraded} submission(s) regraded by a changed grader")
    gained = [c for c in changes if c["delta"] > 0]
    lost = [c for c in changes if c["delta"] < 0]
    lines.append(
        f"{len(gained)} gained points, {len(lost)} lost points, "
        f"{len(changes) - len(gained) - len(lost)} changed without a net change"
    )
    for c in changes:
        sign = "+" if c["delta"] > 0 else ""
        lines.append(
            f"\n{c['key']}: {_num(c['old'])} -> {_num(c['new'])} ({sign}{c['delta']:g}); why: "
            + "; ".join(c["why"])
        )
        for t in c["tests"]:
            lines.append(f"  {t['name']}: {_num(t['old'])} -> {_num(t['new'])}")
            if t["output"] and t["output"] != "passed":
                first = (
                    t["output"].strip().splitlines()[0] if t["output"].strip() else ""
                )
                lines.append(f"    now: {first[:200]}")
    if not changes:
        lines.append("No submission's points changed.")
    return "\n".join(lines)


def write_diff_csv(path: Path, changes: Iterable[dict[str, Any]]) -> None:
    """One row per changed test: student, assignment, test, old, new, delta, why."""
    from autograder.grader.report import csv_cell, write_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["student_id", "assignment_id", "test", "old", "new", "delta", "why"]
    )
    for c in changes:
        for t in c["tests"] or [{"name": "", "old": c["old"], "new": c["new"]}]:
            delta = (t["new"] or 0.0) - (t["old"] or 0.0)
            writer.writerow(
                [
                    csv_cell(c["student"]),
                    csv_cell(c["assignment"]),
                    csv_cell(t["name"]),
                    _num(t["old"]),
                    _num(t["new"]),
                    f"{delta:g}",
                    csv_cell("; ".join(c["why"])),
                ]
            )
    write_atomic(path, buffer.getvalue())
