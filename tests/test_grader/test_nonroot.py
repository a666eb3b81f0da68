"""Graders that are not root (issue 8, class 5), and judges that die or stop.

``test_a_non_root_grader_isolates_with_user_namespaces`` really runs ``autograde grade`` as an
unprivileged user (created with ``useradd``): it must pick the ``userns`` level, and a
submission that sends SIGKILL or SIGSTOP to every process it may signal, or switches the audit
hook off through ``gc`` and reads the hidden checks, must neither stop the batch nor reach a
secret, while honest classmates keep full marks. Before the fix a non-root grader ran at the
``rlimits`` level, where ``kill(-1, SIGKILL)`` ended the whole batch.

``test_the_batch_survives_a_killed_or_stopped_judge`` runs (as root, ``--insecure
--sandbox rlimits``, the one level where a submission can reach its judge) submissions that
SIGKILL or SIGSTOP their own judge process: the pool is rebuilt, the culprits get zeros with
the ``crashed`` flag, the classmates are graded; and submissions that kill or stop the batch's
mother (the process the judges' zygotes are forked from), which no grade depends on.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_grader import builders as b

USER = "autograde-test"

KILL_ALL = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass"
STOP_ALL = "import os, signal\ntry:\n    os.kill(-1, signal.SIGSTOP)\nexcept OSError:\n    pass"
#: Switch the audit hook off through its thread-local flag, then read the hidden checks.
GC_BYPASS = f"""import gc, threading
try:
    for found in gc.get_objects():
        if isinstance(found, threading.local):
            found.busy = True
except Exception:
    pass

def add_one(x):
    try:
        leaked = open({str(b.HIDDEN_FAKE)!r}).read()
    except Exception as error:
        leaked = repr(error)
    raise ValueError(leaked)"""
#: The judge: the one other process that holds this worker's pipes (its channel and output).
#: (The worker's parent is a zygote, forked from the batch's mother: neither is the judge.)
_JUDGE = """import os, signal
def _pipes(pid):
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("pipe:"):
            found.add(link)
    return found
MINE = _pipes("self")
JUDGE = next(
    int(pid)
    for pid in os.listdir("/proc")
    if pid.isdigit() and int(pid) != os.getpid() and _pipes(pid) & MINE
)
"""
#: The batch's mother: the parent of this worker's zygote (it forks the judges' zygotes).
#: (Once the mother is gone, judges start their own zygotes: the grandparent is then the
#: judge, which these leave alone.)
_MOTHER = """import os, signal
with open(f"/proc/{os.getppid()}/stat") as handle:
    MOTHER = int(handle.read().rsplit(")", 1)[1].split()[1])
with open(f"/proc/{MOTHER}/cmdline", "rb") as handle:
    IS_MOTHER = b"--mother" in handle.read().split(b"\\0")
"""
KILL_MOTHER = _MOTHER + "if IS_MOTHER:\n    os.kill(MOTHER, signal.SIGKILL)"
STOP_MOTHER = _MOTHER + "if IS_MOTHER:\n    os.kill(MOTHER, signal.SIGSTOP)"
KILL_JUDGE = _JUDGE + "os.kill(JUDGE, signal.SIGKILL)"
STOP_JUDGE = _JUDGE + "os.kill(JUDGE, signal.SIGSTOP)"


def _can_switch_user() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("useradd") is not None
        and shutil.which("runuser") is not None
        and shutil.which("unshare") is not None
    )


@pytest.fixture(scope="module")
def user() -> str:
    if not _can_switch_user():
        pytest.skip(
            "needs root with useradd, runuser and unshare to create a grader user"
        )
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", USER],
            check=True,
            capture_output=True,
        )
    return USER


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the grader user can read and write (pytest's own tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="autograde-nonroot-", dir="/tmp"))
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _hidden_ancestor(path: Path) -> tuple[Path, Path] | None:
    """The nearest ancestor of ``path`` that other users cannot traverse, and its child on the
    way to ``path`` (None when every ancestor is traversable)."""
    for child, parent in zip([path, *path.parents], path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent, child
    return None


def _as_user(
    user: str, command: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``user``. The interpreter (pyenv in /root) or the checkout itself
    (a clone in ``mktemp -d``'s folder, mode 700) may live under a folder the user cannot
    traverse: a private mount namespace (of this harness only) covers each such folder with an
    empty one and shows the user the interpreter's and the checkout's trees in it, with nothing
    else of it."""
    python = Path(os.path.realpath(sys.executable))
    env = {**b.env(), "HOME": "/tmp", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.pop("VIRTUAL_ENV", None)
    run_user = [
        "runuser",
        "-u",
        user,
        "--",
        "env",
        *[f"{k}={v}" for k, v in env.items()],
    ]
    needed = {
        found
        for found in map(_hidden_ancestor, (python, b.ROOT.resolve()))
        if found is not None
    }
    pairs = sorted(needed)
    stages = [tempfile.mkdtemp(prefix="autograde-stage-", dir="/tmp") for _ in pairs]
    # Every tree aside first, then each folder covered once, then every tree put back.
    script = [
        f'mount --bind "{keep}" "{stage}"' for (_, keep), stage in zip(pairs, stages)
    ]
    script += [
        f'mount -t tmpfs -o mode=755 tmpfs "{hidden}"'
        for hidden in sorted({hidden for hidden, _ in pairs})
    ]
    script += [
        f'mkdir -p "{keep}" && mount --move "{stage}" "{keep}"'
        for (_, keep), stage in zip(pairs, stages)
    ]
    prefix: tuple[str, ...] = ()
    if script:
        prefix = (
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            " && ".join([*script, 'exec "$@"']),
            "sh",
        )
    try:
        return subprocess.run(
            [*prefix, *run_user, *command],
            cwd=b.ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        for stage in stages:
            os.rmdir(stage)


def _grade_as(
    user: str, submitted: Path, out: Path, *extra: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return _as_user(user, b.autograde_command(submitted, out, *extra), timeout)


NONROOT_EXPECTED: dict[str, tuple[float, float, str | None]] = {
    "honest": (2, 2, None),
    "honest_too": (2, 2, None),
    "kill_all": (2, 2, None),
    "stop_all": (2, 2, None),
    "gc_bypass": (0, 2, "forbidden"),
}


@pytest.mark.slow
def test_a_non_root_grader_isolates_with_user_namespaces(
    user: str, shared_dir: Path
) -> None:
    submitted, out = shared_dir / "submitted", shared_dir / "out"
    honest = b.honest_cells()
    notebooks: dict[str, Any] = {
        "honest": b.notebook(honest),
        "honest_too": b.notebook(honest),
        "kill_all": b.notebook([KILL_ALL, *honest]),
        "stop_all": b.notebook([STOP_ALL, *honest]),
        "gc_bypass": b.notebook(b.honest_cells(add_one=GC_BYPASS)),
    }
    for student, content in notebooks.items():
        b.write_submission(submitted, student, content)
    for path in [submitted, *submitted.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    done = _grade_as(
        user, submitted, out, "--jobs", "2", "--timeout", "90", "--cell-timeout", "10"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for student, (add_one, double, flag) in NONROOT_EXPECTED.items():
        data = b.results(out, student)
        assert data["extra_data"]["sandbox"] == "userns", student
        assert b.task_scores(data) == {"add_one": add_one, "double": double}, (
            student,
            json.dumps(data)[:3000],
        )
        if flag:
            assert flag in data["extra_data"]["flags"], (student, data["extra_data"])
    for path in out.rglob("*"):
        if path.is_file():
            assert b.SECRET not in path.read_text(errors="replace"), path


def test_no_isolating_level_means_no_grading_without_insecure(tmp_path: Path) -> None:
    from autograder.grader.cli import grade_batch

    b.write_submission(tmp_path / "submitted", "honest", b.notebook(b.honest_cells()))
    code = grade_batch(
        tmp_path / "submitted",
        tmp_path / "out",
        sandbox_level="rlimits",
        plugins=b.PLUGINS,
        progress=False,
    )
    assert code == 2
    assert not (tmp_path / "out" / "honest").exists()


@pytest.mark.slow
def test_the_batch_survives_a_killed_or_stopped_judge(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "the rlimits level is only safe to attack from a root grader's test"
        )
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    honest = b.honest_cells()
    for student, cells in {
        "honest": honest,
        "honest_too": honest,
        "kills_judge": [KILL_JUDGE, *honest],
        "stops_judge": [STOP_JUDGE, *honest],
        # The mother is no judge: killed or stopped, judges start their own zygotes.
        "kills_mother": [KILL_MOTHER, *honest],
        "stops_mother": [STOP_MOTHER, *honest],
    }.items():
        b.write_submission(submitted, student, b.notebook(cells))
    done = b.run_autograde(
        submitted,
        out,
        "--insecure",
        "--sandbox",
        "rlimits",
        "--jobs",
        "2",
        "--timeout",
        "60",
        "--cell-timeout",
        "10",
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for student in ("honest", "honest_too", "kills_mother", "stops_mother"):
        assert b.results(out, student)["score"] == 4, student
    for student in ("kills_judge", "stops_judge"):
        data = b.results(out, student)
        assert data["score"] == 0, student
        assert "crashed" in data["extra_data"]["flags"], student
        assert "judge process died or was stopped" in json.dumps(data), student
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert len(rows) == 7
