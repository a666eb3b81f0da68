"""A class graded in CI: killed mid-batch and resumed, the same for --jobs 1 and 2, and
outputs that follow the contract (results.json, gradebook.csv, feedback.html, exit status)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_grader import builders as b

pytestmark = pytest.mark.slow

HTML_NAME = "o'neil <b>&amp"
CLASS: dict[str, Any] = {
    "alice": b.honest_cells(),
    "bob": b.honest_cells(add_one="def add_one(x):\n    return x + 2"),
    "carol": [
        b.IMPORTS,
        b.solution_cell(b.ADD_ONE, "add_one"),
        b.grade_cell("add_one"),
    ],
    "dave": b.honest_cells(double="def double(t):\n    raise ValueError('not today')"),
    "erin": b.honest_cells(
        add_one="def add_one(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    ),
    HTML_NAME: b.honest_cells(),
}
EXPECTED = {"alice": 4, "bob": 2, "carol": 2, "dave": 2, "erin": 2, HTML_NAME: 4}


def _session_members(sid: int) -> list[int]:
    return [pid for pid in b.processes(3, sid) if pid != sid]


def _uids_alive(uids: set[int]) -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in uids:
                    alive.append(int(entry))
            except OSError:
                pass
    return alive


def _snapshot(out: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in out.glob("*/*/results.json")
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("batch")
    submitted = base / "submitted"
    for student, cells in CLASS.items():
        b.write_submission(submitted, student, b.notebook(cells))
    out, out2 = base / "out", base / "out2"
    limits = ("--timeout", "60", "--cell-timeout", "10")

    # Run 1: --jobs 1, killed (SIGKILL, like a cancelled CI job) once two submissions are done.
    process = subprocess.Popen(
        b.autograde_command(submitted, out, "--jobs", "1", *limits),
        cwd=b.ROOT,
        env=b.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    judges: set[int] = set()
    deadline = time.monotonic() + 300
    while len(list(out.glob("*/*/results.json"))) < 2:
        assert process.poll() is None, "the grader finished before it could be killed"
        assert time.monotonic() < deadline, "no results after 300 s"
        judges |= set(_session_members(process.pid))
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(3)
    before = _snapshot(out)

    # Run 2: the same command resumes; run 3: a fresh --jobs 2 run elsewhere.
    resumed = b.run_autograde(submitted, out, "--jobs", "1", *limits)
    fresh = b.run_autograde(submitted, out2, "--jobs", "2", *limits)
    return {
        "submitted": submitted,
        "out": out,
        "out2": out2,
        "limits": limits,
        "before": before,
        "judges": judges,
        "resumed": resumed,
        "fresh": fresh,
    }


def test_killing_the_grader_leaves_no_process_behind(batch: dict[str, Any]) -> None:
    judges = batch["judges"]
    assert judges, "no judge process was seen"
    assert not [pid for pid in judges if Path(f"/proc/{pid}").exists()], (
        "judges outlived the grader"
    )
    sandbox_uids = {100_000 + pid for pid in judges}
    assert not _uids_alive(sandbox_uids), "sandboxed workers outlived their judge"


def test_resume_regrades_nothing_and_loses_nothing(batch: dict[str, Any]) -> None:
    out, before, resumed = batch["out"], batch["before"], batch["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(before) >= 2
    after = _snapshot(out)
    for path, (inode, mtime, content) in before.items():
        assert after[path] == (inode, mtime, content), f"{path} was regraded"
    assert len(after) == len(CLASS)
    log = (out / "grading.log").read_text().splitlines()
    graded = [json.loads(line)["graded"] for line in log]
    assert sorted(graded) == sorted(f"{s}/{b.ASSIGNMENT}" for s in CLASS), log
    assert f"{len(before)} already graded" in resumed.stderr


def test_results_are_the_same_for_jobs_1_and_2_and_after_a_resume(
    batch: dict[str, Any],
) -> None:
    out, out2, fresh = batch["out"], batch["out2"], batch["fresh"]
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    for student in CLASS:
        first = (out / student / b.ASSIGNMENT / "results.json").read_bytes()
        second = (out2 / student / b.ASSIGNMENT / "results.json").read_bytes()
        assert first == second, student
    assert (out / "gradebook.csv").read_bytes() == (out2 / "gradebook.csv").read_bytes()


def test_scores(batch: dict[str, Any]) -> None:
    for student, score in EXPECTED.items():
        assert b.results(batch["out"], student)["score"] == score, student


@pytest.mark.parametrize("student", list(CLASS))
def test_results_json_follows_the_gradescope_schema(
    batch: dict[str, Any], student: str
) -> None:
    data = b.results(batch["out"], student)
    assert isinstance(data["tests"], list) and data["tests"]
    for test in data["tests"]:
        assert {"name", "score", "max_score", "status", "output"} <= set(test)
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(
            test["max_score"], (int, float)
        )
        task, _, words = test["name"].partition(": ")
        assert task in ("add_one", "double") and words, test["name"]
        assert test["status"] in ("passed", "failed")
        assert 0 <= test["score"] <= test["max_score"]
        if test["status"] == "failed":
            assert test["score"] < test["max_score"] and len(test["output"]) > 10
    assert data["score"] == sum(t["score"] for t in data["tests"])
    assert data["extra_data"]["student_id"] == student
    json.dumps(data, allow_nan=False)


def test_feedback_tells_the_student_what_to_do(batch: dict[str, Any]) -> None:
    out = batch["out"]
    carol = {t["name"]: t["output"] for t in b.results(out, "carol")["tests"]}
    assert "`double` is not defined" in carol["double: doubles every entry"]
    dave = b.results(out, "dave")["tests"][2]["output"]
    assert "ValueError: not today" in dave and "line 2" in dave
    erin = b.results(out, "erin")["tests"][0]["output"]
    assert "NotImplementedError" in erin


def test_gradebook_has_one_row_per_submission_with_task_columns(
    batch: dict[str, Any],
) -> None:
    with open(batch["out"] / "gradebook.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["student_id"] for r in rows} == set(CLASS)
    assert len(rows) == len(CLASS)
    for row in rows:
        assert row["assignment_id"] == b.ASSIGNMENT
        data = b.results(batch["out"], row["student_id"])
        assert float(row["score"]) == data["score"]
        assert float(row["max_score"]) == 4
        scores = b.task_scores(data)
        assert (
            float(row["add_one"]) == scores["add_one"]
            and float(row["double"]) == scores["double"]
        )


def test_feedback_html_escapes_everything_and_hides_the_checks(
    batch: dict[str, Any],
) -> None:
    page = (batch["out"] / HTML_NAME / b.ASSIGNMENT / "feedback.html").read_text()
    assert "o&#x27;neil &lt;b&gt;&amp;amp" in page
    assert "<b>" not in page
    bob = (batch["out"] / "bob" / b.ASSIGNMENT / "feedback.html").read_text()
    assert "did you add the right constant?" in bob
    hidden_source = b.HIDDEN_FAKE.read_text()
    assert (
        "_reference_add_one" not in bob
        and b.SECRET not in bob
        and "LocalSubject" not in bob
    )
    assert hidden_source not in bob


def test_a_rerun_with_nothing_new_grades_nothing(batch: dict[str, Any]) -> None:
    out = batch["out"]
    before = _snapshot(out)
    again = b.run_autograde(batch["submitted"], out, "--jobs", "2", *batch["limits"])
    assert again.returncode == 0
    assert "0 to grade" in again.stderr
    assert _snapshot(out) == before


def test_a_resubmission_is_regraded_alone(
    batch: dict[str, Any], tmp_path: Path
) -> None:
    submitted, out = batch["submitted"], batch["out2"]
    b.write_submission(submitted, "bob", b.notebook(b.honest_cells()))
    try:
        again = b.run_autograde(submitted, out, "--jobs", "2", *batch["limits"])
        assert again.returncode == 0, again.stderr[-2000:]
        assert "5 already graded, 1 to grade" in again.stderr
        assert b.results(out, "bob")["score"] == 4
    finally:
        b.write_submission(submitted, "bob", b.notebook(CLASS["bob"]))
