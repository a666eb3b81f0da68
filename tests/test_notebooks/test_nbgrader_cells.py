"""``OverwriteCellsQuietOnHiddenTests``: silent on an untouched released grade cell, and
nbgrader's warning and overwrite on any edit (fast: a stand-in gradebook, no nbgrader run)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import nbformat
import pytest
from nbgrader import utils

from autograder.nbgrader_cells import OverwriteCellsQuietOnHiddenTests, released_source

SOURCE = (
    'score = grade("elbo", elbo)\n### BEGIN HIDDEN TESTS\n'
    'score += grade("elbo", elbo, tier="hidden")\n### END HIDDEN TESTS\nscore'
)
RELEASED = 'score = grade("elbo", elbo)\nscore'


def grade_cell(source: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.nbgrader = {
        "schema_version": 3,
        "grade": True,
        "solution": False,
        "locked": True,
        "grade_id": "elbo_check",
        "points": 4,
        "cell_type": "code",
    }
    return cell


class Gradebook:
    """What OverwriteCells asks of the gradebook, for one grade cell stored from SOURCE."""

    def __init__(self, source: str) -> None:
        stored = grade_cell(source)
        self.source_cell = SimpleNamespace(
            source=source,
            cell_type="code",
            locked=True,
            checksum=utils.compute_checksum(stored),
        )

    def find_source_cell(self, *args: str) -> SimpleNamespace:
        return self.source_cell

    def find_graded_cell(self, *args: str) -> SimpleNamespace:
        return SimpleNamespace(max_score=4)


def overwrite(
    submitted: str, stored: str, caplog: pytest.LogCaptureFixture
) -> tuple[str, list[str]]:
    pre = OverwriteCellsQuietOnHiddenTests()
    pre.log = logging.getLogger("overwrite-test")
    pre.gradebook, pre.notebook_id, pre.assignment_id = Gradebook(stored), "nb", "a"
    with caplog.at_level(logging.WARNING, logger="overwrite-test"):
        cell, _ = pre.preprocess_cell(grade_cell(submitted), {}, 0)
    return cell.source, [r.getMessage() for r in caplog.records]


def test_released_source_is_what_the_release_holds() -> None:
    assert released_source(SOURCE) == RELEASED
    assert released_source(RELEASED) is None


def test_untouched_release_is_restored_silently(caplog) -> None:
    source, warnings = overwrite(RELEASED, SOURCE, caplog)
    assert source == SOURCE and warnings == []


@pytest.mark.parametrize(
    ("submitted", "stored"),
    [
        ("score = 4.0  # edited\nscore", SOURCE),  # the visible part edited
        (
            SOURCE.replace('tier="hidden"', 'tier="public"'),
            SOURCE,
        ),  # hidden part forged
        ("score = 4.0\nscore", RELEASED),  # a cell without hidden tests edited
    ],
)
def test_an_edited_grade_cell_is_still_reported_and_overwritten(
    submitted: str, stored: str, caplog
) -> None:
    source, warnings = overwrite(submitted, stored, caplog)
    assert source == stored
    assert any("'checksum'" in w and "has changed" in w for w in warnings), warnings
