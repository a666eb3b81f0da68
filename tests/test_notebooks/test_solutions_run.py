"""Every solution notebook runs top to bottom with nbclient: no error, nothing on stderr.

Run with ``NBGRADER_EXECUTION=autograde`` (the graders' small budgets) in a scratch folder,
so caches a notebook writes do not land in ``solutions/``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from nbclient import NotebookClient

from tests.test_notebooks import nbtools as nbt
from tests.test_notebooks.conftest import TIMES

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.mark.parametrize("assignment", nbt.assignment_ids())
def test_solution_runs_clean(
    assignment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # inherited by the kernel
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / f"{assignment}.ipynb"
    shutil.copy2(nbt.source_path(assignment), path)
    nb = nbt.read(path)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first error, with its traceback
    TIMES.setdefault(assignment, {})["nbclient run"] = time.perf_counter() - start
    stderr = [
        (i, out.text[:300])
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stderr"
    ]
    assert not stderr, (
        f"cells wrote to stderr (nbgrader would score such a grade cell 0): {stderr}"
    )
