"""nbgrader's Validate tells the truth: it passes a solved notebook and names a wrong cell.

A release grade cell runs only the public checks, yet nbgrader compares its value with the
cell's points (the task's points). Under Validate (``NBGRADER_EXECUTION=validate``) the public
tier is therefore scaled to the task's points; autograding and interactive runs stay exact.
The unit tests pin that contract; the notebook test runs the real ``nbgrader validate``.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from autograder.grade import grade
from autograder.tasks import TASKS, hidden_available
from tests.test_notebooks import nbtools as nbt

ASSIGNMENT = "03_reparam"  # the quickest notebook to run whole
TASK = "gaussian_rsample"


def correct(
    mu: torch.Tensor, log_sigma: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    return mu + torch.exp(log_sigma) * eps


def forgets_exp(
    mu: torch.Tensor, log_sigma: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    return mu + log_sigma * eps


def exact_public(impl: object) -> float:
    return grade(TASK, impl, tier="public", quiet=True, namespace={})


@pytest.mark.parametrize("mode", [None, "autograde"])
def test_public_points_stay_exact_outside_validate(
    monkeypatch: pytest.MonkeyPatch, mode: str | None
) -> None:
    if mode is None:
        monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    else:
        monkeypatch.setenv("NBGRADER_EXECUTION", mode)
    public = exact_public(correct)
    assert 0 < public <= TASKS[TASK].points
    assert exact_public(forgets_exp) < public


def test_validate_scales_public_tier_to_task_points(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    public_correct, public_wrong = exact_public(correct), exact_public(forgets_exp)
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    points = TASKS[TASK].points
    assert grade(TASK, correct, namespace={}) == points
    assert "Validate counts this cell as" in capsys.readouterr().out
    wrong = grade(TASK, forgets_exp, namespace={}, quiet=True)
    assert wrong == pytest.approx(points * public_wrong / public_correct)
    assert wrong < points


@pytest.mark.skipif(not hidden_available(), reason="hidden checks not installed")
def test_source_grade_cell_stays_exact_under_validate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source's cell (public + hidden) sums to the exact score under Validate too."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    exact = {
        impl: grade(TASK, impl, tier="all", quiet=True, namespace={})
        for impl in (correct, forgets_exp)
    }
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    for impl, total in exact.items():
        cell = grade(TASK, impl, quiet=True, namespace={})
        cell += grade(TASK, impl, tier="hidden", quiet=True, namespace={})
        assert cell == pytest.approx(total)


# --------------------------------------------------------------------------- real nbgrader


def solved_release(
    wrong_cell: str | None = None, wrong_source: str = ""
) -> nbformat.NotebookNode:
    """The release with every answer cell filled from the source (one optionally wrong)."""
    release = nbformat.read(nbt.release_path(ASSIGNMENT), as_version=4)
    source = nbformat.read(
        nbt.ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4
    )
    answers = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    solved = copy.deepcopy(release)
    for cell in solved.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = wrong_source if grade_id == wrong_cell else answers[grade_id]
    return solved


def nbgrader_validate(notebook: nbformat.NotebookNode, folder: Path) -> str:
    path = folder / f"{ASSIGNMENT}.ipynb"
    nbformat.write(notebook, path)
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", "validate", str(path)],
        cwd=nbt.ROOT,  # the course's nbgrader_config.py, as students get it in the bundle
        env=nbt._env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.stdout + done.stderr


@pytest.mark.notebook
@pytest.mark.slow
def test_nbgrader_validate_passes_solved_and_names_wrong_cell(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    solved = nbgrader_validate(solved_release(), tmp_path / "ok")
    assert "Success! Your notebook passes all the tests." in solved, solved
    wrong_source = (
        "def gaussian_rsample(mu, log_sigma, eps):\n"
        "    return mu + log_sigma * eps  # forgets the exp\n"
    )
    wrong = nbgrader_validate(solved_release(TASK, wrong_source), tmp_path / "bad")
    assert "VALIDATION FAILED ON" in wrong, wrong
    assert 'score = grade("gaussian_rsample", gaussian_rsample)' in wrong, wrong
    assert "Partial credit" in wrong, wrong
    # lognormal_rsample calls the student's gaussian_rsample, so it may be named too; the
    # tasks that do not use it must not be.
    for independent in ("exponential_rsample", "gumbel_rsample", "cauchy_rsample"):
        assert f'score = grade("{independent}"' not in wrong, wrong
