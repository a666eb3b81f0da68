"""Every source notebook follows docs/NOTEBOOKS.md (reads JSON only: fast, no kernel)."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.test_notebooks import nbtools as nbt

IDS = nbt.assignment_ids()
pytestmark = pytest.mark.skipif(not IDS, reason="no solutions/<id>/<id>.ipynb yet")


@pytest.fixture(params=IDS)
def notebook(request: pytest.FixtureRequest) -> tuple[str, nbformat.NotebookNode]:
    return request.param, nbt.read(nbt.source_path(request.param))


def test_registry_knows_every_notebook() -> None:
    from autograder.tasks import ASSIGNMENTS

    assert set(IDS) <= set(ASSIGNMENTS), (
        f"notebooks without registry entry: {set(IDS) - set(ASSIGNMENTS)}"
    )


def test_valid_nbformat_and_kernel(notebook) -> None:
    _, nb = notebook
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_outputs_are_cleared(notebook) -> None:
    _, nb = notebook
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, (
        f"cells {dirty} have outputs: jupyter nbconvert --clear-output --inplace"
    )


def test_nbgrader_metadata_schema(notebook) -> None:
    _, nb = notebook
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        meta = nbt.nbgrader_meta(cell)
        if not meta:
            continue
        assert meta.get("schema_version") == 3, f"cell {i}: schema_version must be 3"
        assert set(meta) <= nbt.NBGRADER_KEYS, (
            f"cell {i}: unknown keys {set(meta) - nbt.NBGRADER_KEYS}"
        )
        for key in ("grade", "solution", "locked"):
            assert isinstance(meta.get(key), bool), f"cell {i}: {key} must be a bool"
        grade_id = meta.get("grade_id", "")
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", grade_id), (
            f"cell {i}: bad grade_id {grade_id!r}"
        )
        assert grade_id not in seen, f"grade_id {grade_id!r} used twice"
        seen.add(grade_id)
        if meta["grade"]:
            assert meta.get("points", 0) > 0, (
                f"cell {i} ({grade_id}): a grade cell needs points"
            )
        assert "checksum" not in meta, (
            f"cell {i}: the source has no checksums (nbgrader adds them)"
        )


def test_title_goals_and_setup_cell(notebook) -> None:
    _, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        "start with a title"
    )
    assert "After this notebook you can" in first.source, "learning goals at the top"
    setups = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert len(setups) == 1, "exactly one cell tagged 'setup'"
    setup = setups[0]
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert setup is code_cells[0], "the setup cell is the first code cell"
    meta = nbt.nbgrader_meta(setup)
    assert meta.get("locked") and not meta.get("grade") and not meta.get("solution")
    assert "from autograder import grade" in setup.source
    assert "NBGRADER_EXECUTION" in setup.source, (
        "the setup cell defines the small-budget switch"
    )


def test_every_task_has_solution_and_grade_cell(notebook) -> None:
    assignment, nb = notebook
    points = nbt.task_points(assignment)
    solutions = {
        nbt.nbgrader_meta(c)["grade_id"]: (i, c)
        for i, c in enumerate(nb.cells)
        if nbt.is_solution_code(c)
    }
    grades = {
        nbt.nbgrader_meta(c)["grade_id"]: (i, c)
        for i, c in enumerate(nb.cells)
        if nbt.is_grade_code(c)
    }
    assert set(solutions) == set(points), (
        f"solution cells {sorted(solutions)} vs tasks {sorted(points)}"
    )
    assert set(grades) == {f"{t}_check" for t in points}, (
        f"grade cells {sorted(grades)}"
    )
    order = [solutions[t][0] for t in points]
    assert order == sorted(order), "exercises follow the registry's order (tasks_of)"
    for task, max_points in points.items():
        index, cell = grades[f"{task}_check"]
        assert index > solutions[task][0], f"{task}: grade cell before its solution"
        assert cell.source == nbt.grade_cell_source(task), (
            f"{task}: grade cell must be the 5-line form"
        )
        meta = nbt.nbgrader_meta(cell)
        assert meta["locked"] and meta["points"] == max_points, (
            f"{task}: points {meta['points']} != registry {max_points}"
        )


def test_signature_and_docstring_stay_outside_the_markers(notebook) -> None:
    _, nb = notebook
    for cell in filter(nbt.is_solution_code, nb.cells):
        task = nbt.nbgrader_meta(cell)["grade_id"]
        src = cell.source
        assert src.count(nbt.BEGIN_SOLUTION) >= 1 and src.count(
            nbt.BEGIN_SOLUTION
        ) == src.count(nbt.END_SOLUTION)
        head = src.split(nbt.BEGIN_SOLUTION)[0]
        assert re.search(rf"^(def|class) {re.escape(task)}\b", head, re.M), (
            f"{task}: def/class line inside the markers"
        )
        assert '"""' in head, f"{task}: the docstring must stay outside the markers"


def test_at_least_one_written_answer(notebook) -> None:
    _, nb = notebook
    answers = [c for c in nb.cells if nbt.is_manual_answer(c)]
    assert answers, "each notebook has a manually graded written answer"
    assert all(c.cell_type == "markdown" for c in answers)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (
            r"course_lib\.reference|from course_lib import reference",
            "solutions never use the reference",
        ),
        (r"autograder\.hidden", "hidden checks are for the grader only"),
        (r"\btqdm\b", "use course_lib.progress: tqdm writes to stderr"),
        (r"sys\.stderr|warnings\.warn\(", "nothing may write to stderr"),
        (
            r"^\s*[%!]",
            "no magics or shell escapes (the CI grader may run cells outside IPython)",
        ),
    ],
)
def test_forbidden_patterns(notebook, pattern: str, why: str) -> None:
    _, nb = notebook
    hits = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and re.search(pattern, c.source, re.M)
    ]
    assert not hits, f"cells {hits}: {why}"
