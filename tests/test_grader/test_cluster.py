"""Grading on a Dask cluster (issue 12): shards, merge, byte-identical files, and faults.

The cluster is a ``LocalCluster`` of two one-thread worker processes on 127.0.0.1, with
``allowed-failures`` 1 (two tries) and a worker saturation of 1 (a worker holds only the
submission it grades, so killing it makes no innocent submission suspicious).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autograder import cli, cluster
from autograder.judge import JudgeConfig, Submission
from autograder.report import write_submission
from tests.test_grader import builders as b

CLASS: dict[str, Any] = {
    "alice": b.honest_cells(),
    "bob": b.honest_cells(add_one="def add_one(x):\n    return x + 2"),
    "erin": b.honest_cells(
        add_one="def add_one(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    ),
    "frank": "{ this is not json",
    "mallory": b.honest_cells(),  # its Dask worker is killed every time it is graded
    "victor": b.honest_cells(),  # its Dask worker is killed once
    "wendy": b.honest_cells(double="def double(t):\n    return t + t"),
}
LIMITS = ("--timeout", "60", "--cell-timeout", "10")
FILES = ("results.json", "feedback.html")


def _make_class(root: Path) -> Path:
    submitted = root / "submitted"
    for student, cells in CLASS.items():
        b.write_submission(
            submitted, student, cells if isinstance(cells, str) else b.notebook(cells)
        )
    (submitted / "gina" / b.ASSIGNMENT).mkdir(parents=True)  # no notebook at all
    return submitted


def _files(out: Path) -> dict[str, bytes]:
    found = {
        str(p.relative_to(out)): p.read_bytes()
        for name in FILES
        for p in out.glob(f"*/*/{name}")
    }
    found["gradebook.csv"] = (out / "gradebook.csv").read_bytes()
    return found


# --------------------------------------------------------------------------- shards (fast)


def test_parse_shard_accepts_i_of_n_and_names_the_form_otherwise() -> None:
    assert cluster.parse_shard("2/4") == (2, 4)
    assert cluster.parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "1/0", "a/b", "3", "-1/2", ""):
        with pytest.raises(ValueError, match=r"I/N|between 1 and N"):
            cluster.parse_shard(bad)


def test_shards_are_disjoint_cover_everything_and_never_move() -> None:
    keys = [f"student{i:04d}/{a:02d}_x" for i in range(400) for a in range(1, 6)]
    for count in (1, 2, 3, 7):
        parts = [cluster.shard_of(k, count) for k in keys]
        assert set(parts) <= set(range(1, count + 1))
        for index in range(1, count + 1):  # each key in exactly one part
            members = [k for k in keys if cluster.in_shard(k, (index, count))]
            assert len(members) == parts.count(index)
            # SHA-256 spreads 2,000 keys evenly: a part off by more than 25% of its share
            # would mean the hash is not used (deterministic: fixed keys, no randomness).
            assert abs(len(members) - len(keys) / count) < 0.25 * len(keys) / count
    # A submission's part is a function of its key alone (SHA-256, computed once by hand),
    # pinned so that CI matrices on different machines and grader versions agree.
    pinned = {"alice/01_em": 2, "bob/05_vae": 3, "carol/02_score": 4}
    assert {k: cluster.shard_of(k, 4) for k in pinned} == pinned


def test_select_shard_splits_submissions_and_problems_alike() -> None:
    subs = [Submission(f"s{i}", b.ASSIGNMENT, None) for i in range(20)]
    problems = [f"s{i}/99_unknown: unknown assignment '99_unknown'" for i in range(20)]
    kept = [cluster.select_shard(subs, problems, (i, 3)) for i in (1, 2, 3)]
    assert sorted(s.key for part in kept for s in part[0]) == sorted(
        s.key for s in subs
    )
    assert sorted(p for part in kept for p in part[1]) == sorted(problems)
    for index, (part_subs, part_problems) in enumerate(kept, start=1):
        assert all(cluster.shard_of(s.key, 3) == index for s in part_subs)
        assert all(
            cluster.shard_of(p.split(": ")[0], 3) == index for p in part_problems
        )


def _fake_part(out: Path, shard: tuple[int, int], students: list[str]) -> None:
    config = JudgeConfig()
    subs = [Submission(s, b.ASSIGNMENT, None) for s in students]
    for submission in subs:
        write_submission(out, cluster.killed_outcome(submission, config, 2))
    cluster.write_shard_manifest(out, shard, subs)


def test_merge_refuses_missing_conflicting_or_foreign_parts(tmp_path: Path) -> None:
    import tests.test_grader.fakecourse.hidden  # noqa: F401 - registers 00_fake

    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    _fake_part(one, (1, 2), ["ann", "ben"])
    _fake_part(two, (2, 2), ["cat"])
    merged = tmp_path / "merged"
    assert cluster.merge_outputs([one], merged) == 1  # part 2/2 missing
    assert not merged.exists()
    assert cluster.merge_outputs([one, two], merged) == 0
    rows = (merged / "gradebook.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["ann", "ben", "cat"]
    assert (merged / "cat" / b.ASSIGNMENT / "results.json").read_bytes() == (
        two / "cat" / b.ASSIGNMENT / "results.json"
    ).read_bytes()
    # A listed submission without its results.json: the part is incomplete.
    (two / "cat" / b.ASSIGNMENT / "results.json").unlink()
    assert cluster.merge_outputs([one, two], tmp_path / "m2") == 1
    # Two parts that disagree on a submission.
    _fake_part(three, (2, 2), ["ann"])
    text = (three / "ann" / b.ASSIGNMENT / "results.json").read_text()
    (three / "ann" / b.ASSIGNMENT / "results.json").write_text(
        text.replace("Not graded", "Nope")
    )
    _fake_part(two, (2, 2), ["cat"])
    assert cluster.merge_outputs([one, two, three], tmp_path / "m3") == 1
    # A folder that is not a --shard output: a usage error.
    assert cluster.merge_outputs([one, tmp_path], tmp_path / "m4") == 2


def test_grade_rejects_a_malformed_shard(tmp_path: Path, capsys: Any) -> None:
    submitted = tmp_path / "submitted"
    b.write_submission(submitted, "alice", b.notebook(b.honest_cells()))
    code = cli.main(
        ["grade", str(submitted), "--out", str(tmp_path / "o"), "--shard", "3/2"]
    )
    assert code == 2
    assert "between 1 and N" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
