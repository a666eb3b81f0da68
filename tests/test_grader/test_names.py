"""Any folder name is graded, stored where no output can collide with it, and shown escaped;
a result the judge cannot read is the student's zero, never a grader error (issue 19, items
4 and 5).

One ``autograde grade --jobs 2`` run (then a rerun) over a class of the fake assignment whose
student folders are named like the grader's own outputs, are not UTF-8, or carry terminal
escape sequences, next to a submission whose worker sends results of the wrong shape.
Before the fix, the folder ``gradebook.csv`` stopped the gradebook (IsADirectoryError), the
non-UTF-8 name was NOT GRADED, the escape sequences reached the terminal and the gradebook raw,
and the forged result was a ``grader_error``: exit 1 every time.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_grader import builders as b

pytestmark = pytest.mark.slow

ESC = "\x1b"
#: Folder name (as bytes) -> the student id the grader records and shows.
NAMES: dict[bytes, str] = {
    b"honest": "honest",
    b"gradebook.csv": "gradebook.csv",
    b"grading.log": "grading.log",
    b"caf\xe9": "caf\\xe9",  # Latin-1, not UTF-8
    b"\x1b[2J\x1b[31mred\x1b]0;pwned\x07": "\\x1b[2J\\x1b[31mred\\x1b]0;pwned\\x07",
}

#: The worker's encoder rewritten by the notebook: every probe's result dict (``{"value":
#: ..., "mutated": ...}``) arrives as a list of its values.
FORGED_SKELETON = """from autograder import transport as _t
_skeleton = _t._Encoder.skeleton
def _forged(self, value, path):
    if path == "the result" and isinstance(value, dict):
        return ["L", *(_skeleton(self, v, path) for v in value.values())]
    return _skeleton(self, value, path)
_t._Encoder.skeleton = _forged"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    base = tmp_path_factory.mktemp("names")
    submitted, out = base / "submitted", base / "out"
    honest = b.notebook(b.honest_cells())
    for raw in NAMES:
        b.write_submission(submitted, os.fsdecode(raw), honest)
    b.write_submission(
        submitted, "forged_skeleton", b.notebook([*b.honest_cells(), FORGED_SKELETON])
    )
    args = ("--jobs", "2", "--timeout", "90", "--cell-timeout", "10")
    first = b.run_autograde(submitted, out, *args)
    again = b.run_autograde(submitted, out, *args)
    return out, first, again


def _results_of(out: Path, student: str) -> dict[str, Any]:
    from autograder.grader.report import submission_dir

    path = submission_dir(out, student, b.ASSIGNMENT) / "results.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_name_is_graded_and_the_batch_exits_zero(
    graded: tuple[Path, Any, Any],
) -> None:
    out, first, again = graded
    for done in (first, again):  # a rerun too: the outputs are where they were
        assert done.returncode == 0, done.stderr[-3000:]
        assert "NOT GRADED" not in done.stderr
    assert "0 to grade" in again.stderr
    assert (out / "gradebook.csv").is_file()
    assert (out / "grading.log").is_file()
    for student in NAMES.values():
        data = _results_of(out, student)
        assert data["extra_data"]["student_id"] == student
        b.assert_contained(data, student, {"add_one": 2, "double": 2}, None, "")


def test_outputs_and_student_folders_never_collide(
    graded: tuple[Path, Any, Any],
) -> None:
    from autograder.grader.report import OUTPUT_NAMES, student_folder

    out, _, _ = graded
    folders = {student_folder(s) for s in [*NAMES.values(), "forged_skeleton"]}
    assert len(folders) == len(NAMES) + 1
    assert not folders & OUTPUT_NAMES
    # Everything at OUT's top level is a student's folder, a listed output or hidden.
    for entry in os.listdir(out):
        assert entry in folders | OUTPUT_NAMES or entry.startswith("."), entry
    assert student_folder("honest") == "honest"  # SPEC's OUT/<student>/<assignment>


def test_names_are_shown_escaped_everywhere(graded: tuple[Path, Any, Any]) -> None:
    out, first, _ = graded
    assert ESC not in first.stdout + first.stderr
    assert "\\x1b[31mred" in first.stdout
    gradebook = (out / "gradebook.csv").read_text(encoding="utf-8")
    assert ESC not in gradebook and "\x07" not in gradebook
    ids = [row[0] for row in csv.reader(io.StringIO(gradebook))][1:]
    assert sorted(ids) == sorted([*NAMES.values(), "forged_skeleton"])
    escaped = NAMES[b"\x1b[2J\x1b[31mred\x1b]0;pwned\x07"]
    page = (
        out
        / __import__("autograder.grader.report").grader.report.student_folder(escaped)
        / b.ASSIGNMENT
        / "feedback.html"
    ).read_text(encoding="utf-8")
    assert ESC not in page and "\\x1b[31mred" in page
    log = (out / "grading.log").read_text(encoding="utf-8")
    assert ESC not in log


def test_a_result_the_judge_cannot_read_is_the_students_zero(
    graded: tuple[Path, Any, Any],
) -> None:
    """The worker sent lists where the probes return dicts: zero on both tasks with a
    student flag, never ``grader_error`` (which asks the student to tell the instructor)."""
    out, _, _ = graded
    data = _results_of(out, "forged_skeleton")
    flags = set(data["extra_data"]["flags"])
    assert "grader_error" not in flags, data
    assert b.task_scores(data) == {"add_one": 0, "double": 0}, data
    # malformed_result today; a tamper check that sees the rewrite first is as good.
    assert flags & {"malformed_result", "forbidden", "tampered"}, flags
    text = json.dumps(data)
    assert "tell your instructor" not in text


def test_results_follow_gradescope_and_hide_the_hidden_tier(
    graded: tuple[Path, Any, Any],
) -> None:
    from tests.test_grader.test_gradescope_environment import gradescope_problems

    out, _, _ = graded
    for student in NAMES.values():
        data = _results_of(out, student)
        assert gradescope_problems(data) == []
        shown = {(t["tags"][0], t["visibility"]) for t in data["tests"]}
        assert shown == {("public", "visible"), ("hidden", "after_published")}
