"""A plugin adds an assignment through ``autograder.tasks``' registration functions."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from autograder import tasks
from autograder.grader import cli
from tests.test_grader import builders as b


def test_a_registered_plugin_is_graded_through_the_registry() -> None:
    public, hidden = b.PLUGINS
    importlib.import_module(public)
    assert tasks.ASSIGNMENTS["00_fake"] == "fake"
    assert [t.id for t in tasks.tasks_of("00_fake")] == ["add_one", "double"]
    importlib.import_module(hidden)
    assert tasks.check_modules("fake") == (f"{public}.checks", hidden)
    tiers = {p.tier for p in tasks.properties("add_one")}
    assert tiers == {"public", "hidden"}
    assert (
        sum(p.points for p in tasks.properties("add_one"))
        == tasks.TASKS["add_one"].points
    )
    # No module is aliased into the course's namespaces any more.
    assert "autograder.checks.fake" not in sys.modules
    assert "autograder.hidden.fake" not in sys.modules


def test_registration_refuses_clashes_and_public_hidden_modules() -> None:
    importlib.import_module(b.PLUGINS[0])
    with pytest.raises(ValueError, match="taken"):
        tasks.register_assignment("00_fake", "other", {}, checks="x")
    with pytest.raises(ValueError, match="taken"):
        tasks.register_assignment("00_other", "em", {}, checks="x")
    with pytest.raises(ValueError, match="another assignment"):
        tasks.register_assignment("00_other", "other", {"e_step": 1}, checks="x")
    assert "00_other" not in tasks.ASSIGNMENTS
    with pytest.raises(ValueError, match="public"):
        tasks.register_hidden_checks("fake", "tests.test_grader.fakecourse.answers")


def test_plugins_come_from_the_flag_and_the_environment_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(tasks.PLUGINS_ENV, f"{b.PLUGINS[0]},,{b.PLUGINS[1]}")
    assert tasks.load_plugins([b.PLUGINS[0]]) == b.PLUGINS


def test_the_batch_plan_says_what_to_grade_before_any_judge_starts(
    tmp_path: Path,
) -> None:
    submitted = tmp_path / "submitted"
    b.write_submission(submitted, "ada", b.notebook(b.honest_cells()))
    plan = cli.plan_batch(submitted, tmp_path / "out", plugins=b.PLUGINS, insecure=True)
    assert [s.key for s in plan.pending] == ["ada/00_fake"] and not plan.finished
    assert plan.config.plugins == tuple(b.PLUGINS)
    assert str((tmp_path / "out").resolve()) in plan.config.secret_paths
    with pytest.raises(cli.UsageError, match="not a folder"):
        cli.plan_batch(tmp_path / "nothing", tmp_path / "out", insecure=True)
