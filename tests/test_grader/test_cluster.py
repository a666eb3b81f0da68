"""Grading on a Dask cluster (issue 12): shards, merge, byte-identical files, and faults.

The cluster is a ``LocalCluster`` of two one-thread worker processes on 127.0.0.1, with
``allowed-failures`` 1 (two tries) and a worker saturation of 1 (a worker holds only the
submission it grades, so killing it makes no innocent submission suspicious).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autograder.grader import cli, cluster
from autograder.grader.judge import JudgeConfig
from autograder.grader.report import write_submission
from autograder.grader.submissions import Submission
from tests.test_grader import builders as b

CLASS: dict[str, Any] = {
    "alice": b.honest_cells(),
    "bob": b.honest_cells(add_one="def add_one(x):\n    return x + 2"),
    "erin": b.honest_cells(
        add_one="def add_one(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    ),
    "frank": "{ this is not json",
    # Honest, and slow enough to be caught mid-submission, where the test kills its Dask
    # worker: every time for mallory, once for victor.
    "mallory": [*b.honest_cells(), "import time  # mallory\ntime.sleep(2)"],
    "victor": [*b.honest_cells(), "import time  # victor\ntime.sleep(2)"],
    "wendy": b.honest_cells(double="def double(t):\n    return t + t"),
}
# Generous: the machine may be loaded, and no notebook of the class comes near them.
LIMITS = ("--timeout", "300", "--cell-timeout", "120")
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
    # A manifest naming something outside its folder: a usage error, nothing copied.
    (two / "shard.json").write_text('{"shard": [2, 2], "submissions": ["../../x"]}')
    assert cluster.merge_outputs([one, two], tmp_path / "m5") == 2
    assert not (tmp_path / "m5").exists()


def test_grade_rejects_a_malformed_shard(tmp_path: Path, capsys: Any) -> None:
    submitted = tmp_path / "submitted"
    b.write_submission(submitted, "alice", b.notebook(b.honest_cells()))
    code = cli.main(
        ["grade", str(submitted), "--out", str(tmp_path / "o"), "--shard", "3/2"]
    )
    assert code == 2
    assert "between 1 and N" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_dask_task_grades_a_private_copy_and_refuses_another_grader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.test_grader.fakecourse.hidden  # noqa: F401 - registers 00_fake
    from autograder.grader.fingerprint import grader_fingerprint
    from autograder.grader.sandbox import Limits

    class Gone:  # a judge that died while idle
        plugins = tuple(b.PLUGINS)

        def grade(self, *_: Any) -> Any:
            raise cluster._JudgeGone

        def alive(self) -> bool:
            return False

    class Echo(Gone):
        def grade(self, submission: Any, config: Any) -> Any:
            return submission, config, Path(submission.notebook).read_bytes()

        def alive(self) -> bool:
            return True

    judges = iter([Gone(), Echo()])
    monkeypatch.setattr(cluster, "_take_judge", lambda plugins: next(judges))
    monkeypatch.setattr(cluster, "_return_judge", lambda judge: None)
    monkeypatch.setattr(cluster, "_CLEANED", True)
    right = grader_fingerprint(Limits(), b.ASSIGNMENT, b.PLUGINS)
    config = JudgeConfig(
        secret_paths=("/srv/out",),
        plugins=tuple(b.PLUGINS),
        fingerprints={b.ASSIGNMENT: right},
    )
    submission = Submission("ann", b.ASSIGNMENT, "/client/only/path.ipynb")
    copy, private, content = cluster.grade_on_worker(submission, b"{ notebook", config)
    assert content == b"{ notebook"  # the bytes sent, graded from a private folder
    assert (copy.student, copy.assignment) == ("ann", b.ASSIGNMENT)
    folder = str(Path(copy.notebook).parent)
    assert private.secret_paths == ("/srv/out", folder)  # that the sandbox may not read
    assert not Path(folder).exists()
    other = JudgeConfig(plugins=tuple(b.PLUGINS), fingerprints={b.ASSIGNMENT: "0" * 16})
    with pytest.raises(cluster.GraderMismatch, match="different grader"):
        cluster.grade_on_worker(submission, b"{}", other)


def test_a_judge_gets_the_workers_environment_but_not_its_module_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A folder the Dask worker's process put on sys.path (a script's own folder) must not
    # reach the sandboxed worker: listing it there is forbidden and zeroes honest notebooks.
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(
        cluster.subprocess, "Popen", lambda args, **kw: started.append(kw) or None
    )
    monkeypatch.setattr(sys, "path", [*sys.path, "/somewhere/scripts"])
    monkeypatch.setenv("COURSE_DATA", "/data")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    cluster._Judge(tuple(b.PLUGINS))
    env = started[0]["env"]
    assert "PYTHONPATH" not in env and env["COURSE_DATA"] == "/data"
    assert "cwd" not in started[0]  # the Dask worker's folder, as ``python -m`` there


# --------------------------------------------------------------------------- on a cluster (slow)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[tuple[Any, Any]]:
    """Two one-thread Dask worker processes (with nannies) on loopback; two tries a task."""
    import dask
    from distributed import Client, LocalCluster

    settings = {
        "distributed.scheduler.allowed-failures": 1,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in b.env().items():
            if os.environ.get(name) != value:
                patch.setenv(
                    name, value
                )  # the workers inherit the grader's environment
        with dask.config.set(settings):
            local = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
        client = Client(local)
        try:
            yield local, client
        finally:
            client.close()
            local.close()


@pytest.fixture(scope="module")
def graded_locally(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The class graded by the local path (``--jobs 1``): what every cluster run must equal."""
    base = tmp_path_factory.mktemp("cluster")
    submitted = _make_class(base)
    out = base / "local"
    done = b.run_autograde(submitted, out, "--jobs", "1", *LIMITS)
    assert done.returncode == 0, done.stderr
    return submitted, out


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.glob("*/*/results.json")
    }


@pytest.mark.slow
def test_interrupted_shard_resumes_and_the_shards_merge_into_the_local_run(
    dask_cluster: tuple[Any, Any], graded_locally: tuple[Path, Path], tmp_path: Path
) -> None:
    local, _ = dask_cluster
    submitted, expected = graded_locally
    everyone = {f"{s}/{b.ASSIGNMENT}" for s in [*CLASS, "gina"]}
    parts = [tmp_path / "part1", tmp_path / "part2"]
    commands = [
        b.autograde_command(
            submitted,
            part,
            "--shard",
            f"{index}/2",
            "--scheduler",
            local.scheduler_address,
            *LIMITS,
        )
        for index, part in enumerate(parts, start=1)
    ]
    # Part 1 holds alice, erin, frank (unreadable: graded on the client), mallory and wendy
    # (pinned by SHA-256). Interrupt it once a Dask worker's result is in.
    first = subprocess.Popen(
        commands[0],
        cwd=b.ROOT,
        env=b.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while len(_stamps(parts[0])) < 2 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)  # the instructor's Ctrl-C
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err.decode()
    assert b"Rerun the same command to resume" in err
    before = _stamps(parts[0])
    assert 2 <= len(before) < 5, sorted(before)

    reruns = [
        subprocess.run(
            command,
            cwd=b.ROOT,
            env=b.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        for command in commands  # the rerun of part 1, then part 2
    ]
    assert [r.returncode for r in reruns] == [0, 0], [r.stderr for r in reruns]
    assert f"{len(before)} already graded" in reruns[0].stderr
    for name, stamp in before.items():  # what was written before the interrupt stays
        path = parts[0] / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    keys = [
        set(json.loads((p / "shard.json").read_text())["submissions"]) for p in parts
    ]
    assert keys == [everyone - keys[1], everyone - keys[0]] and all(
        keys
    )  # disjoint, all
    for part, part_keys in zip(parts, keys):
        graded = {
            str(p.parent.relative_to(part)) for p in part.glob("*/*/results.json")
        }
        assert graded == part_keys
        log = (part / "grading.log").read_text().splitlines()
        assert sorted(json.loads(line)["graded"] for line in log) == sorted(part_keys)

    merged = tmp_path / "merged"
    plugins = [a for p in b.PLUGINS for a in ("--plugin", p)]
    command = [sys.executable, "-m", "autograder.grader.cli", "merge", *map(str, parts)]
    done = subprocess.run(
        [*command, "--out", str(merged), *plugins],
        cwd=b.ROOT,
        env=b.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _files(merged) == _files(expected)  # byte-identical to the local run


def _killer(
    client: Any,
    stop: threading.Event,
    always: str,
    once: str,
    killed: list[tuple[str, int, list[int]]],
) -> None:
    """Kill the Dask worker process grading ``always`` whenever it does, ``once`` once.

    A worker grades a student when the scheduler says the student's task is processing there
    and a notebook with the student's marker sits in a grading folder (the task has started).
    """
    import psutil

    started: dict[tuple[str, int], float] = {}
    while not stop.is_set():
        with contextlib.suppress(Exception):
            running = {
                student
                for path in Path(tempfile.gettempdir()).glob(
                    "autograde-*-dask-*/*.ipynb"
                )
                for student in (always, once)
                if f"# {student}" in path.read_text()
            }
            if running:
                pids = client.run(os.getpid, on_error="ignore")
                for worker, keys in client.processing().items():
                    for key in keys:
                        student = str(key).rsplit("-", 1)[-1].split("/")[0]
                        if student not in running or worker not in pids:
                            continue
                        if student == once and any(s == once for s, _, _ in killed):
                            continue
                        seen = started.setdefault(
                            (student, pids[worker]), time.monotonic()
                        )
                        if time.monotonic() - seen < 0.5:  # well into the notebook
                            continue
                        process = psutil.Process(pids[worker])
                        children = [c.pid for c in process.children(recursive=True)]
                        process.kill()
                        killed.append((student, pids[worker], children))
        stop.wait(0.1)


@pytest.mark.slow
def test_a_killed_worker_costs_a_retry_and_a_killer_gets_zero_with_a_flag(
    dask_cluster: tuple[Any, Any], graded_locally: tuple[Path, Path], tmp_path: Path
) -> None:
    local, client = dask_cluster
    submitted, expected = graded_locally
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    thread = threading.Thread(
        target=_killer, args=(client, stop, "mallory", "victor", killed), daemon=True
    )
    thread.start()
    try:
        code = cli.grade_batch(
            submitted,
            out,
            limits=cli._limits(
                cli._parser().parse_args(["grade", "x", "--out", "y", *LIMITS])
            ),
            plugins=b.PLUGINS,
            progress=False,
            scheduler=local.scheduler_address,
        )
    finally:
        stop.set()
        thread.join()
    assert code == 0  # the batch finishes, nothing is a grader failure
    students = [s for s, _, _ in killed]
    assert students.count("mallory") == 2, killed  # allowed-failures 1: two tries
    assert students.count("victor") == 1, killed
    got, want = _files(out), _files(expected)
    mallory = f"mallory/{b.ASSIGNMENT}/results.json"
    for name in want:  # every other file equals the local run's, victor's included
        if "mallory" not in name and name != "gradebook.csv":
            assert got[name] == want[name], name
    data = json.loads(got[mallory])
    assert data["score"] == 0 and data["extra_data"]["flags"] == ["killed_worker"]
    assert all(
        t["score"] == 0
        and "killed the grading machine's worker process all 2 times" in t["output"]
        for t in data["tests"]
    )
    rows = {r.split(",")[0]: r for r in got["gradebook.csv"].decode().splitlines()}
    assert rows["mallory"].startswith("mallory,00_fake,0,4,killed_worker")
    # Nothing the killed workers started (judge, zygote, sandboxed worker) is left running.
    import psutil

    def running(pid: int) -> bool:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        return False

    deadline = time.monotonic() + 30
    left = [pid for _, worker, children in killed for pid in [worker, *children]]
    while any(running(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in left if running(pid)]
    assert all(children for _, _, children in killed)  # each kill hit a grading worker
