"""The real nbgrader pipeline on every assignment: generate, autograde three students, feedback.

The suite's one run of each solution notebook (alice) and of each blank release (bob).

Scores are read from nbgrader's gradebook (``nbgrader.api.Gradebook``), the way an instructor
would export them.
"""

from __future__ import annotations

import html
import re

import nbformat
import pytest
from nbgrader.api import Gradebook

from tests.test_notebooks import nbtools as nbt
from tests.test_notebooks.conftest import Graded

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def auto_scores(graded: Graded, student: str) -> dict[str, float]:
    """task -> the autograded score of its grade cell, for one student."""
    assignment = graded.assignment
    with Gradebook(graded.course.gradebook_url()) as gb:
        return {
            task: gb.find_grade(
                f"{task}_check", assignment, assignment, student
            ).auto_score
            for task in nbt.task_points(assignment)
        }


def manual_grades(graded: Graded, student: str) -> list[tuple[float | None, bool]]:
    """(auto_score, needs_manual_grade) of every written-answer cell of one student."""
    assignment = graded.assignment
    source = nbt.read(nbt.source_path(assignment))
    ids = [
        nbt.nbgrader_meta(c)["grade_id"]
        for c in source.cells
        if nbt.is_manual_answer(c)
    ]
    with Gradebook(graded.course.gradebook_url()) as gb:
        grades = [gb.find_grade(i, assignment, assignment, student) for i in ids]
        return [(g.auto_score, g.needs_manual_grade) for g in grades]


def test_autograde_never_crashes(graded: Graded) -> None:
    assert graded.returncode == 0, graded.log[-3000:]
    for student in ("alice", "bob", "carol"):
        assert (
            graded.course.root / "autograded" / student / graded.assignment
        ).is_dir(), student


def test_alice_solution_gets_full_marks(graded: Graded) -> None:
    points = nbt.task_points(graded.assignment)
    scores = auto_scores(graded, "alice")
    short = {
        t: (scores[t], p) for t, p in points.items() if scores[t] != pytest.approx(p)
    }
    assert not short, f"solution notebook lost points (score, max): {short}"
    assert all(needs for _, needs in manual_grades(graded, "alice")), (
        "written answers await a human"
    )


def _problems(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell index, what) for every code cell that did not run, raised or wrote to stderr."""
    bad = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.source.strip() and not cell.get("execution_count"):
            bad.append((i, "did not run"))
        for out in cell.outputs:
            if out.output_type == "error":
                bad.append((i, f"raised {out.get('ename')}"))
            elif out.output_type == "stream" and out.name == "stderr":
                bad.append((i, f"stderr: {out.text[:200]}"))
    return bad


def test_alice_autograded_notebook_is_clean(graded: Graded) -> None:
    """Every solution notebook runs top to bottom under the graders' budgets: every code
    cell ran, none raised, none wrote to stderr (nbgrader scores such a grade cell 0).

    alice's autograded notebook *is* that run (nbgrader executes every cell of her
    submission, the solution, with ``NBGRADER_EXECUTION=autograde`` and the hidden tests
    restored), so the suite executes each solution notebook once, here, instead of again
    with nbclient."""
    bad = _problems(graded.course.autograded("alice", graded.assignment))
    assert not bad, f"alice's autograded solution notebook: {bad}"


def test_blank_release_runs_to_the_last_grade_cell(graded: Graded) -> None:
    """Run All on a blank release reaches every grade cell.

    A student who opens the released notebook and runs everything before writing a line must
    see each grade cell's feedback (0 points, "not implemented"), not a traceback in the
    first demo cell that stops the run: demo cells that call a student's function are
    wrapped in ``course_lib.notebook.skip_unimplemented``. bob hands in the untouched
    release and nbgrader runs every cell of it (past errors, which would show here as error
    outputs), under the graders' small budgets."""
    nb = graded.course.autograded("bob", graded.assignment)
    bad = _problems(nb)
    assert not bad, f"the blank release does not run clean: {bad}"
    assert any(nbt.is_grade_code(cell) for cell in nb.cells), "no grade cell"
    skipped = [
        out.text
        for cell in nb.cells
        if cell.cell_type == "code" and not nbt.is_grade_code(cell)
        for out in cell.outputs
        if out.output_type == "stream" and "it raises NotImplementedError" in out.text
    ]
    assert skipped, "no demo cell reported a missing implementation"


def test_bob_blank_release_gets_zero(graded: Graded) -> None:
    scores = auto_scores(graded, "bob")
    assert all(s == 0 for s in scores.values()), f"blank stubs earned points: {scores}"
    assert all(
        score == 0 and not needs for score, needs in manual_grades(graded, "bob")
    )


def test_carol_partly_wrong_gets_partial_credit(graded: Graded) -> None:
    points = nbt.task_points(graded.assignment)
    scores = auto_scores(graded, "carol")
    broken = graded.broken_task
    assert graded.carol_expected < points[broken], (
        f"{broken}: the wrong-on-purpose body lost no points"
    )
    assert scores[broken] == pytest.approx(graded.carol_expected), (
        "nbgrader and in-process grading disagree"
    )
    others = {
        t: (scores[t], p)
        for t, p in points.items()
        if t != broken and scores[t] != pytest.approx(p)
    }
    assert not others, f"carol lost points on tasks she did right: {others}"
    total = sum(scores.values())
    assert 0 < total < sum(points.values())


def test_feedback_shows_checks_but_not_hidden_tests(graded: Graded) -> None:
    source = nbt.read(nbt.source_path(graded.assignment))
    hidden = nbt.hidden_lines(source)
    assert hidden, "the source notebook has hidden tests"
    for student in ("alice", "bob", "carol"):
        page = graded.course.feedback_html(student, graded.assignment)
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert 'score = grade("' in text, (
            "the visible grade line is in the feedback (the search works)"
        )
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{student}'s feedback shows hidden-test code: {leaked[:3]}"


def test_untouched_grade_cells_raise_no_checksum_warning(graded: Graded) -> None:
    """nbgrader 0.9 logs "checksum has changed" for every released grade cell with hidden
    tests (jupyter/nbgrader#1961); bob hands in the untouched release, so any such line here
    is that false alarm (nbgrader_config.py replaces OverwriteCells)."""
    changed = [line for line in graded.log.splitlines() if "has changed" in line]
    assert changed == [], changed[:3]
