"""``OverwriteCellsQuietOnHiddenTests``: silent on an untouched released grade cell, and
nbgrader's warning and overwrite on any edit (fast: a stand-in gradebook, no nbgrader run)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbgrader import utils

from autograder.nbgrader_cells import OverwriteCellsQuietOnHiddenTests, released_source
from tests.test_notebooks import nbtools as nbt

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


def test_a_gradebook_made_in_process_is_nbgrader_s_own(tmp_path: Path) -> None:
    """``release.new_gradebook`` (the test courses' gradebook, without nbgrader's 4-second
    ``alembic heads`` subprocess) stamps the schema version nbgrader stamps and holds the
    same tables."""
    import sqlite3
    from unittest import mock

    import nbgrader.api

    ours = nbt.release_script.new_gradebook(tmp_path)
    theirs = tmp_path / "nbgrader.db"
    real = nbgrader.api.get_alembic_version  # the subprocess, as nbgrader runs it
    with mock.patch.object(nbgrader.api, "get_alembic_version", real):
        nbgrader.api.Gradebook(f"sqlite:///{theirs}", course_id="dsc190-vi").close()

    def schema(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str]]]:
        with sqlite3.connect(path) as db:
            tables = db.execute(
                "SELECT name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
            version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        return tables, version

    assert schema(ours) == schema(theirs)
    assert schema(ours)[1] and schema(ours)[1][0][0]


def test_nbgrader_config_loads_the_preprocessor_without_torch() -> None:
    """Every nbgrader command reads ``nbgrader_config.py``; importing the preprocessor through
    the ``autograder`` package would import torch and the checks (3 s a command)."""
    script = (
        "import sys\n"
        "from traitlets.config import Config\n"
        f"source = open({str(nbt.ROOT / 'nbgrader_config.py')!r}).read()\n"
        "space = {'get_config': Config, '__file__': 'nbgrader_config.py'}\n"
        "exec(compile(source, 'nbgrader_config.py', 'exec'), space)\n"
        "names = [p.__name__ for p in space['c'].Autograde.sanitize_preprocessors]\n"
        "print(names, sorted(m for m in ('torch', 'autograder') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "['ClearOutput', 'DeduplicateIds', 'OverwriteKernelspec', "
        "'OverwriteCellsQuietOnHiddenTests', 'CheckCellMetadata'] []"
    ), done.stdout + done.stderr
