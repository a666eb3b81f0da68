"""nbgrader's ``OverwriteCells`` without its false alarm on grade cells with hidden tests.

``nbgrader generate_assignment`` stores each locked cell's checksum in the gradebook *before*
``ClearHiddenTests`` removes the hidden region, and the release carries the checksum computed
*after*. ``nbgrader autograde`` then compares an untouched released grade cell with the
gradebook's checksum and logs ``Attribute 'checksum' for cell <id> has changed!`` for every
grade cell with hidden tests, on every submission (jupyter/nbgrader#1961, open), before putting
the source back. A warning that fires on honest notebooks hides the ones that matter.

:class:`OverwriteCellsQuietOnHiddenTests` restores such a cell silently when its source is
exactly the released form of the gradebook's source (the source with the hidden region
removed, as ``ClearHiddenTests`` removes it); any other difference is reported and overwritten
as nbgrader does. ``nbgrader_config.py`` puts it in ``Autograde.sanitize_preprocessors`` in
place of ``OverwriteCells``.
"""

from __future__ import annotations

import copy
from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells

__all__ = ["OverwriteCellsQuietOnHiddenTests", "released_source"]


def released_source(source: str) -> str | None:
    """``source`` with its hidden-test region removed as the release has it; None without one."""
    cell = NotebookNode({"cell_type": "code", "source": source, "metadata": {}})
    return cell.source if ClearHiddenTests()._remove_hidden_test_region(cell) else None


class OverwriteCellsQuietOnHiddenTests(OverwriteCells):
    """``OverwriteCells`` that does not report an untouched released grade cell as changed."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: Any, cell_index: int
    ) -> tuple[NotebookNode, Any]:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and cell.cell_type == "code":
            try:
                source_cell = self.gradebook.find_source_cell(
                    grade_id, self.notebook_id, self.assignment_id
                )
            except MissingEntry:
                source_cell = None  # nbgrader's own handling warns and drops the id
            if (
                source_cell is not None
                and source_cell.locked
                and released_source(source_cell.source) == cell.source
            ):
                cell = copy.deepcopy(cell)
                cell.source = source_cell.source  # what nbgrader would restore anyway
        return super().preprocess_cell(cell, resources, cell_index)
