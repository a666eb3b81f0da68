"""Honest submissions get the same points from ``autograde grade`` and ``nbgrader autograde``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_grader import builders as b

sys.path.insert(0, str(b.ROOT / "scripts"))
import grader_throughput as gt

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_honest_submissions_get_the_same_points_from_nbgrader(tmp_path: Path) -> None:
    pytest.importorskip("nbgrader")
    pairs = gt.copy_class(list(gt.HONEST), ["01_em"], tmp_path / "submitted")
    if len(pairs) < 2:
        pytest.skip("run python scripts/make_demo_class.py first")
    gt.run_autograde(tmp_path / "submitted", tmp_path / "out", "--jobs", "1")
    gt.make_course(tmp_path / "course", ["01_em"], tmp_path / "submitted")
    gt.run_nbgrader(tmp_path / "course", ["01_em"])
    ours = gt.autograde_scores(tmp_path / "out", pairs)
    theirs = gt.nbgrader_scores(tmp_path / "course", pairs)
    assert theirs, "nbgrader graded nothing"
    assert gt.compare(ours, theirs) == []
    assert sum(ours.values()) < 2 * 12, "the partly wrong student should lose points"
