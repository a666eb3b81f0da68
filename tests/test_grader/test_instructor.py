"""After the deadline: the class report, the regrade changelog, the similarity check, the late
policy and the LMS exports, on a small real class of ``01_em`` graded once for the module.

The class (built from the course's own notebooks, as ``scripts/make_demo_class.py`` does):
``alice`` and ``erin`` hand in the solution; ``bob`` and ``carol`` normalise the
responsibilities over the data axis (known bug ``e_step/e_step_normalises_over_data``);
``dave`` forgets the entropy in the free energy (``free_energy/free_energy_missing_entropy``);
``frank`` writes all three functions his own way (correct). Timestamps: :data:`STAMPS`; ``carol``
has no timestamp.txt (her file time is used).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autograder.grader import classreport, course
from tests.test_grader import builders as b

ROOT = b.ROOT
ASSIGNMENT = "01_em"

E_STEP_OVER_DATA = '''def e_step(X, weights, means, covs):
    """Responsibilities normalised over the data axis (a bug on purpose)."""
    table = log_joint(X, weights, means, covs)
    resp = np.exp(table - logsumexp(table, axis=0, keepdims=True))
    return resp, float(logsumexp(table, axis=1).sum())
'''
FREE_ENERGY_NO_ENTROPY = '''def free_energy(X, resp, weights, means, covs):
    """Free energy without the entropy of q (a bug on purpose)."""
    return float(-np.sum(resp * log_joint(X, weights, means, covs)))
'''
#: frank's own, correct, code: loops and scipy's densities instead of the solution's algebra.
FRANK = {
    "log_joint": """def log_joint(X, weights, means, covs):
    from scipy.stats import multivariate_normal
    columns = []
    for k in range(len(weights)):
        density = multivariate_normal(mean=means[k], cov=covs[k])
        columns.append(np.log(weights[k]) + density.logpdf(np.atleast_2d(X)).reshape(-1))
    return np.stack(columns, axis=1)
""",
    "e_step": """def e_step(X, weights, means, covs):
    logp = log_joint(X, weights, means, covs)
    top = logp.max(axis=1, keepdims=True)
    norm = top + np.log(np.exp(logp - top).sum(axis=1, keepdims=True))
    return np.exp(logp - norm), float(norm.sum())
""",
    "free_energy": """def free_energy(X, resp, weights, means, covs):
    logp = log_joint(X, weights, means, covs)
    q = np.asarray(resp, dtype=float)
    safe = np.where(q > 0, q, 1.0)
    return float(-(q * logp).sum() + (q * np.log(safe)).sum())
""",
}
#: nbgrader's timestamp.txt per student (deadline 2025-05-20 12:00 UTC, 10 minutes' grace):
#: dave 25 hours late (2 started days); frank 5 minutes past his 2-day extension (grace).
STAMPS = {
    "alice": "2025-05-20 11:00:00.000000 UTC",
    "bob": "2025-05-20 11:30:00.000000 UTC",
    "dave": "2025-05-21 13:00:00.000000 UTC",
    "erin": "2025-05-20 11:59:00.000000 UTC",
    "frank": "2025-05-22 12:05:00.000000 UTC",
}
COURSE_TOML = """
[late]
policy = "per_day"
penalty_per_day = 0.25
max_days = 4
grace_minutes = 10

[assignments.01_em]
deadline = 2025-05-20T12:00:00+00:00
name = "EM for Gaussian mixtures"
canvas_id = 4242

[extensions.frank]
01_em = 2

[students.alice]
name = "Alice Liddell"
id = 1001
sis_user_id = "A1001"
sis_login_id = "aliddell"
section = "A01"
"""


def _demo_class() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_demo_class", ROOT / "scripts" / "make_demo_class.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _class_notebooks() -> dict[str, dict[str, Any]]:
    demo = _demo_class()
    right = demo.correct(ASSIGNMENT)
    frank = right
    for task, source in FRANK.items():
        frank = demo.replace_function(frank, task, source)
    return {
        "alice": right,
        "bob": demo.replace_function(right, "e_step", E_STEP_OVER_DATA),
        "carol": demo.replace_function(right, "e_step", E_STEP_OVER_DATA),
        "dave": demo.replace_function(right, "free_energy", FREE_ENERGY_NO_ENTROPY),
        "erin": right,
        "frank": frank,
    }


def _write(submitted: Path, student: str, notebook: dict[str, Any]) -> Path:
    return b.write_submission(submitted, student, notebook, ASSIGNMENT)


def _grade(submitted: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "autograder.grader.cli",
        "grade",
        str(submitted),
        "--out",
        str(out),
        "--no-progress",
        "--jobs",
        "2",
        *extra,
    ]
    return subprocess.run(
        command, cwd=ROOT, env=b.env(), capture_output=True, text=True, timeout=900
    )


def _cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autograder.grader.cli", *args],
        cwd=ROOT,
        env={**b.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The class graded once (with course.toml in SUBMITTED), shared by every test here."""
    base = tmp_path_factory.mktemp("instructor")
    submitted, out = base / "submitted", base / "out"
    for student, notebook in _class_notebooks().items():
        path = _write(submitted, student, notebook)
        stamp = STAMPS.get(student)
        if stamp is not None:
            (path.parent / "timestamp.txt").write_text(stamp + "\n")
        else:  # no timestamp.txt: the notebook's file time (set on time) is used
            on_time = 1747731600  # 2025-05-20T09:00:00Z
            os.utime(path, (on_time, on_time))
    (submitted / "course.toml").write_text(COURSE_TOML)
    done = _grade(submitted, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"base": base, "submitted": submitted, "out": out, "stdout": done.stdout}  # type: ignore[dict-item]


pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- report


def test_report_names_the_known_bugs_with_their_share(graded: dict[str, Path]) -> None:
    done = _cli("report", str(graded["out"]))
    assert done.returncode == 0, done.stderr
    page = (graded["out"] / "report.html").read_text()
    data = classreport.load_class(graded["out"])
    report = classreport.build_report(data)
    (em,) = report["assignments"]
    bugs = {bug["bug"]: bug for bug in em["bugs"]}
    # 2 of 6 normalise over the data axis, 1 of 6 forgets the entropy; nobody else has a bug.
    assert bugs["e_step/e_step_normalises_over_data"]["students"] == 2
    assert bugs["free_energy/free_energy_missing_entropy"]["students"] == 1
    assert set(bugs) == {
        "e_step/e_step_normalises_over_data",
        "free_energy/free_energy_missing_entropy",
    }
    assert "33% of 01_em (2/6)" in page and "normalised over the data axis" in page
    # Anonymised: the example feedback never names a student.
    for student in ("bob", "carol", "dave"):
        assert student not in bugs["e_step/e_step_normalises_over_data"]["example"]
    # Per property failure rates: e_step's reference property fails for exactly bob and carol.
    e_step_failures = {
        p["name"]: p["failed"] for p in em["properties"] if p["task"] == "e_step"
    }
    assert max(e_step_failures.values()) == 2
    # Every failure here comes from a recognised bug of its task: none is left unexplained.
    assert all(p["unexplained"] == 0 for p in em["properties"])
    free_energy_failures = [p for p in em["properties"] if p["task"] == "free_energy"]
    assert max(p["failed"] for p in free_energy_failures) == 1
    # Scores per task: full marks for 4 of 6 on e_step, one plot per task and the total.
    tasks = {t["task"]: t for t in em["tasks"]}
    assert tasks["e_step"]["full"] == 4 and tasks["log_joint"]["full"] == 6
    assert page.count("data:image/png;base64,") == len(tasks) + 1
    rows = list(csv.reader((graded["out"] / "report.csv").open()))
    assert [
        "known_bug",
        ASSIGNMENT,
        "e_step",
        "e_step/e_step_normalises_over_data",
        "2",
        "6",
    ] == rows[[r[3] for r in rows].index("e_step/e_step_normalises_over_data")][:6]
    assert "class report:" in done.stdout


def test_report_lists_flagged_submissions_and_time(
    tmp_path: Path, graded: dict[str, Path]
) -> None:
    """A flagged submission (here a timeout written into a copy) is listed with its flag."""
    out = tmp_path / "out"
    shutil.copytree(graded["out"], out)
    results_path = out / "erin" / ASSIGNMENT / "results.json"
    data = json.loads(results_path.read_text())
    data["extra_data"]["flags"] = ["timeout"]
    results_path.write_text(json.dumps(data))
    report = classreport.build_report(classreport.load_class(out))
    assert [(f["student"], f["flags"]) for f in report["flagged"]] == [
        ("erin", ["timeout"])
    ]
    (em,) = report["assignments"]
    assert em["seconds_total"] > 0 and em["slow_tests"]
    assert report["slowest"][0]["seconds"] >= report["slowest"][-1]["seconds"]


def test_report_refuses_a_folder_without_results(tmp_path: Path) -> None:
    done = _cli("report", str(tmp_path))
    assert done.returncode == 2 and "no results.json" in done.stderr


# --------------------------------------------------------------------------- diff


def test_regrade_changelog_is_exact(tmp_path: Path) -> None:
    """On the fake course (seconds per submission): bob fixes his add_one and the class is
    regraded into a copy: only bob changes, on add_one's properties, because his notebook
    changed; then a changed grader (a new time limit) regrades carol with the same points,
    which the diff says too, and the same feedback: her double draws from torch's global
    random state, which each grading run starts from the same seed."""
    submitted, old = tmp_path / "submitted", tmp_path / "old"
    wrong = b.honest_cells(add_one="def add_one(x):\n    return x + 2")
    noisy = b.honest_cells(
        double="def double(x):\n    import torch\n    raise ValueError(f'drew {float(torch.rand(())):.9f}')"
    )
    for student, cells in {
        "alice": b.honest_cells(),
        "bob": wrong,
        "carol": noisy,
    }.items():
        b.write_submission(submitted, student, b.notebook(cells))
    limits = ("--timeout", "60", "--cell-timeout", "10", "--jobs", "2")
    done = b.run_autograde(submitted, old, *limits)
    assert done.returncode == 0, done.stderr[-2000:]
    new = tmp_path / "new"
    shutil.copytree(old, new)
    b.write_submission(submitted, "bob", b.notebook(b.honest_cells()))
    done = b.run_autograde(submitted, new, *limits)
    assert done.returncode == 0, done.stderr[-2000:]
    changes = classreport.diff_classes(
        classreport.load_class(old), classreport.load_class(new)
    )
    assert [c["key"] for c in changes] == [f"bob/{b.ASSIGNMENT}"]
    (bob,) = changes
    assert bob["delta"] == 2 and bob["why"] == ["notebook changed"]
    assert {t["name"].split(": ")[0] for t in bob["tests"]} == {"add_one"}
    assert all(t["new"] > t["old"] for t in bob["tests"])
    shown = _cli("diff", str(old), str(new), "--csv", str(tmp_path / "changes.csv"))
    assert shown.returncode == 0
    assert f"bob/{b.ASSIGNMENT}: 2 -> 4 (+2); why: notebook changed" in shown.stdout
    assert "1 gained points, 0 lost points" in shown.stdout
    rows = list(csv.DictReader((tmp_path / "changes.csv").open()))
    assert {r["student_id"] for r in rows} == {"bob"} and all(
        float(r["delta"]) > 0 for r in rows
    )

    regraded = tmp_path / "regraded"
    shutil.copytree(new, regraded)
    done = b.run_autograde(
        submitted, regraded, "--student", "carol", "--force", "--timeout", "61"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = _cli("diff", str(new), str(regraded))
    feedback = [
        [t["output"] for t in b.results(out, "carol")["tests"]]
        for out in (new, regraded)
    ]
    assert feedback[0] == feedback[1], "unseeded randomness graded differently"
    assert any("drew 0." in f for f in feedback[0])  # the draw is in her feedback
    assert "1 submission(s) regraded by a changed grader" in shown.stdout
    assert "No submission's points changed." in shown.stdout
    # From the first grading to the last: bob's gain only (carol's regrade changed nothing).
    changes = classreport.diff_classes(
        classreport.load_class(old), classreport.load_class(regraded)
    )
    assert [c["key"] for c in changes] == [f"bob/{b.ASSIGNMENT}"]


# --------------------------------------------------------------------------- similar


def test_similar_ranks_identical_pairs_first_and_says_it_is_a_lead(
    tmp_path: Path, graded: dict[str, Path]
) -> None:
    done = _cli(
        "similar", str(graded["submitted"]), "--to", str(tmp_path), "--threshold", "0"
    )
    assert done.returncode == 0, done.stderr
    assert "a lead for a human, not a verdict" in done.stdout.splitlines()[0]
    rows = list(csv.DictReader((tmp_path / "similar.csv").open()))
    ranked = [frozenset((r["first"], r["second"])) for r in rows]
    # Identical notebooks first (alice, erin; bob, carol), each sharing all of its own code.
    assert set(ranked[:2]) == {
        frozenset(("alice", "erin")),
        frozenset(("bob", "carol")),
    }
    assert all(float(r["first_share"]) > 0.99 for r in rows[:2])
    # frank wrote his own code: every pair with him shares less than any pair without him.
    with_frank = [
        float(r["first_share"]) for r in rows if "frank" in (r["first"], r["second"])
    ]
    without = [
        float(r["first_share"])
        for r in rows
        if "frank" not in (r["first"], r["second"])
    ]
    assert with_frank and max(with_frank) < min(without)
    page = (tmp_path / "similar.html").read_text()
    assert "not a verdict" in page and "highlight-red" in page


def test_similar_is_the_same_in_every_process(
    tmp_path: Path, graded: dict[str, Path]
) -> None:
    """Two runs on the same class give the same overlaps (copydetect hashes k-grams with
    Python's per-process salted ``hash``: without a stable hash the shares moved)."""
    outputs = []
    for seed in ("1", "2"):
        to = tmp_path / seed
        done = _cli(
            "similar",
            str(graded["submitted"]),
            "--to",
            str(to),
            "--threshold",
            "0",
            env={"PYTHONHASHSEED": seed},
        )
        assert done.returncode == 0, done.stderr
        outputs.append((to / "similar.csv").read_text())
    assert outputs[0].splitlines() == outputs[1].splitlines()


# --------------------------------------------------------------------------- late policy


def test_gradebook_keeps_raw_and_adjusted_scores(graded: dict[str, Path]) -> None:
    rows = {
        r["student_id"]: r
        for r in csv.DictReader((graded["out"] / "gradebook.csv").open())
    }
    header = next(csv.reader((graded["out"] / "gradebook.csv").open()))
    assert header[:5] == ["student_id", "assignment_id", "score", "max_score", "flags"]
    assert header[-len(course.ADJUSTED_COLUMNS) :] == course.ADJUSTED_COLUMNS
    # dave: 25 h late -> 2 started days -> -50% of what he earned.
    assert rows["dave"]["days_late"] == "2" and float(rows["dave"]["penalty"]) == 0.5
    assert float(rows["dave"]["adjusted_score"]) == pytest.approx(
        0.5 * float(rows["dave"]["score"])
    )
    # frank: 2 days and 5 minutes late with a 2-day extension and 10 minutes' grace: on time.
    assert (
        rows["frank"]["days_late"] == "0"
        and rows["frank"]["deadline"] == "2025-05-22T12:00:00Z"
    )
    assert rows["alice"]["adjusted_score"] == rows["alice"]["score"]
    assert rows["carol"]["timestamp_source"] == "file mtime"
    assert rows["alice"]["timestamp_source"] == "timestamp.txt"
    assert "file time was used" in graded["stdout"]  # type: ignore[operator]
    assert "dave/01_em: 2 day(s) late" in graded["stdout"]  # type: ignore[operator]


def test_late_days_budget_is_spent_in_deadline_order(tmp_path: Path) -> None:
    toml = tmp_path / "course.toml"
    toml.write_text(
        """
[late]
policy = "late_days"
budget = 3
penalty_per_day = 1.0
[assignments.a1]
deadline = 2025-01-10T00:00:00Z
[assignments.a2]
deadline = 2025-01-20T00:00:00Z
"""
    )
    spec = course.load_course(toml)
    utc = course.dt.timezone.utc
    times = {
        ("s", "a1"): (course.dt.datetime(2025, 1, 12, tzinfo=utc), "timestamp.txt"),
        ("s", "a2"): (course.dt.datetime(2025, 1, 21, 1, tzinfo=utc), "timestamp.txt"),
    }
    rows = [{"student_id": "s", "assignment_id": a, "score": 10} for a in ("a2", "a1")]
    outcome = course.apply_late_policy(spec, rows, times)
    assert (outcome[("s", "a1")].late_days_used, outcome[("s", "a1")].adjusted) == (
        2,
        10,
    )
    # a2 is 2 started days late with 1 late day left: the other day costs 100%.
    assert (
        outcome[("s", "a2")].late_days_used == 1 and outcome[("s", "a2")].adjusted == 0
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[assignments.a]\n", "needs a deadline"),
        ("[assignments.a]\ndeadline = 2025-01-01T00:00:00\n", "has no UTC offset"),
        (
            "[late]\npolicy='lenient'\n[assignments.a]\ndeadline=2025-01-01T00:00:00Z\n",
            "late.policy",
        ),
        (
            "[assignments.a]\ndeadline=2025-01-01T00:00:00Z\n[extensions.s]\nb = 1\n",
            "no deadline for assignment 'b'",
        ),
        ("[late\n", "not valid TOML"),
    ],
)
def test_bad_course_toml_is_named(tmp_path: Path, text: str, words: str) -> None:
    toml = tmp_path / "course.toml"
    toml.write_text(text)
    with pytest.raises(course.CourseError, match=words):
        course.load_course(toml)


# --------------------------------------------------------------------------- LMS export


def test_canvas_export_follows_the_documented_columns(
    tmp_path: Path, graded: dict[str, Path]
) -> None:
    target = tmp_path / "canvas.csv"
    toml = graded["submitted"] / "course.toml"
    done = _cli(
        "export", str(graded["out"]), "--course", str(toml), "--to", str(target)
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(target.open()))
    # Canvas's import layout: five identity columns, then "Assignment Name (id)".
    assert rows[0] == [
        "Student",
        "ID",
        "SIS User ID",
        "SIS Login ID",
        "Section",
        "EM for Gaussian mixtures (4242)",
    ]
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) > 0
    by_login = {r[3]: r for r in rows[2:]}
    assert by_login["aliddell"][:5] == [
        "Alice Liddell",
        "1001",
        "A1001",
        "aliddell",
        "A01",
    ]
    gradebook = {
        r["student_id"]: r
        for r in csv.DictReader((graded["out"] / "gradebook.csv").open())
    }
    # The adjusted score goes to the LMS (dave's late penalty included).
    assert by_login["dave"][5] == gradebook["dave"]["adjusted_score"]
    assert len(rows) == 2 + 6

    generic = tmp_path / "generic.csv"
    done = _cli(
        "export", str(graded["out"]), "--format", "generic", "--to", str(generic)
    )
    table = list(csv.reader(generic.open()))
    assert table[0] == ["student_id", ASSIGNMENT, "total", "possible"]
    assert {r[0] for r in table[1:]} == {
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
    }


# --------------------------------------------------------------------------- in a browser


@pytest.mark.browser
def test_report_in_a_real_browser(tmp_path: Path, graded: dict[str, Path]) -> None:
    """The report and the similarity view open in Debian's chromium from file:// with their
    plots drawn, the known bugs and the caveat shown; screenshots are saved and printed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_notebooks.test_browser import chromium

    executable = chromium()
    out = tmp_path / "out"
    shutil.copytree(graded["out"], out)
    assert _cli("report", str(out)).returncode == 0
    assert _cli("similar", str(graded["submitted"]), "--to", str(out)).returncode == 0
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto((out / "report.html").as_uri())
        headline = page.locator("li.headline").first
        assert "33% of 01_em (2/6)" in headline.inner_text()
        images = page.locator("div.plots img")
        assert images.count() == 4  # the total and three tasks
        for index in range(images.count()):  # decoded and drawn, not a broken image
            width = images.nth(index).evaluate("img => img.naturalWidth")
            assert width > 100
        bugs = page.locator("table.bugs").inner_text()
        assert "e_step/e_step_normalises_over_data" in bugs and "2 (33%)" in bugs
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        page.goto((out / "similar.html").as_uri())
        assert "not a verdict" in page.locator("#caveat").inner_text()
        assert page.locator("table.pairs tr").count() >= 3
        assert page.locator("span.highlight-red").count() > 0
        page.screenshot(path=str(shots / "similar.png"), full_page=False)
        browser.close()
    print(f"screenshots in {shots}")


# --------------------------------------------------------------------------- units (no grading)


def _results(
    student: str, tests: list[tuple[str, float, float, str]]
) -> dict[str, Any]:
    return {
        "score": sum(t[1] for t in tests),
        "tests": [
            {
                "name": name,
                "score": score,
                "max_score": top,
                "status": "passed" if score == top else "failed",
                "output": output,
            }
            for name, score, top, output in tests
        ],
        "extra_data": {"student_id": student, "assignment_id": "a", "max_score": 2},
    }


def test_a_hint_counts_only_for_its_own_task_and_failed_checks() -> None:
    bug = classreport.bug_catalogue()
    (normalised,) = [k for k in bug if k.mutant == "e_step/e_step_normalises_over_data"]
    hint = normalised.hint
    passed_with_hint = _results("x", [("e_step: rows", 1, 1, hint)])
    other_task = _results("y", [("free_energy: value", 0, 1, "wrong: " + hint)])
    own_task = _results("z", [("e_step: rows", 0, 1, "resp is wrong. " + hint)])
    assert classreport.known_bugs_in(passed_with_hint, bug) == []
    assert classreport.known_bugs_in(other_task, bug) == []
    (hit,) = classreport.known_bugs_in(own_task, bug)
    assert hit.bug_id == "e_step/e_step_normalises_over_data"


def test_diff_names_added_and_removed_checks(tmp_path: Path) -> None:
    for name, tests in {
        "old": [("t: kept", 1, 1, "passed"), ("t: dropped", 1, 1, "passed")],
        "new": [("t: kept", 1, 1, "passed"), ("t: added", 0, 1, "t is wrong")],
    }.items():
        folder = tmp_path / name / "s" / "a"
        folder.mkdir(parents=True)
        data = _results("s", tests)
        data["extra_data"]["grader"] = name
        (folder / "results.json").write_text(json.dumps(data))
    (change,) = classreport.diff_classes(
        classreport.load_class(tmp_path / "old"),
        classreport.load_class(tmp_path / "new"),
    )
    assert change["delta"] == -1
    assert {t["name"]: t["change"] for t in change["tests"]} == {
        "t: dropped": "check removed",
        "t: added": "check added",
    }
    assert "grader changed (old -> new)" in change["why"]
    assert "set of checks changed" in change["why"]
