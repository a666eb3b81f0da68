"""Run All on a blank release reaches every grade cell.

A student who opens the released notebook and runs everything before writing a line must
see each grade cell's feedback (0 points, "not implemented"), not a traceback in the first
demo cell that stops the run: demo cells that call a student's function are wrapped in
``course_lib.notebook.skip_unimplemented``. Executed with nbclient, which stops at the first
error, under the graders' small budgets.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from nbclient import NotebookClient

from tests.test_notebooks import nbtools as nbt

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.mark.parametrize("assignment", nbt.assignment_ids())
def test_blank_release_runs_to_the_last_grade_cell(
    assignment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # small demos
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / f"{assignment}.ipynb"
    shutil.copy2(nbt.release_path(assignment), path)
    nb = nbt.read(path)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError at the first cell that errors
    grade_cells = [cell for cell in nb.cells if nbt.is_grade_code(cell)]
    assert grade_cells and all(cell.get("execution_count") for cell in grade_cells), (
        "a grade cell did not run"
    )
    skipped = [
        out.text
        for cell in nb.cells
        if cell.cell_type == "code" and not nbt.is_grade_code(cell)
        for out in cell.outputs
        if out.output_type == "stream" and "it raises NotImplementedError" in out.text
    ]
    assert skipped, "no demo cell reported a missing implementation"
    stderr = [
        out.text[:200]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stderr"
    ]
    assert not stderr, f"cells wrote to stderr: {stderr}"
