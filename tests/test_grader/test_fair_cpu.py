"""Fair CPU (issue 19.6): a submission that starts many busy processes, each in a session of
its own, slows only itself.

Two ``autograde grade --jobs 2`` runs of the fake assignment: an honest submission alone (the
baseline), then the same honest submission next to a hostile one that starts 40 busy loops
with ``setsid`` from a shell (no audit hook sees them). The honest one keeps its points; the
hostile one's control group held every loop and held them together to its quota; no loop
outlives the batch. (Whether the quota had to stop them depends on the machine's load: on a
loaded machine the group's fair share is below its quota.) The honest submission's slowdown is printed (a ratio against the
baseline, never asserted: it depends on the machine's load).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from autograder.grader import sandbox
from tests.test_grader import builders as b

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or sandbox.group_dirs("probe") is None,
        reason="needs root and a cgroup cpu controller (the namespace level)",
    ),
]

MARKER = "busy-loop-issue-19-6"
LOOPS = 40
#: Starts the loops from a shell, each in a new session, then keeps the worker alive a
#: while so that they run while the neighbour is graded.
BUSY = f"""import subprocess, time
subprocess.Popen(["sh", "-c", "for i in $(seq {LOOPS}); do setsid sh -c 'while :; do :; done' {MARKER} & done"])
time.sleep(3)"""


def _grade(base: Path, students: dict[str, Any]) -> tuple[Path, Any]:
    submitted, out = base / "submitted", base / "out"
    for student, content in students.items():
        b.write_submission(submitted, student, content)
    done = b.run_autograde(
        submitted, out, "--jobs", "2", "--timeout", "120", "--cell-timeout", "10"
    )
    return out, done


def _timing(out: Path, student: str) -> dict[str, Any]:
    return json.loads((out / student / b.ASSIGNMENT / "grading.json").read_text())


def _survivors() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if MARKER.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_busy_processes_in_their_own_sessions_slow_only_their_submission(
    tmp_path: Path,
) -> None:
    honest = b.notebook(b.honest_cells())
    alone_out, alone = _grade(tmp_path / "alone", {"honest": honest})
    assert alone.returncode == 0, alone.stderr[-3000:]
    hostile = b.notebook([BUSY, *b.honest_cells()])
    out, done = _grade(tmp_path / "batch", {"honest": honest, "hostile": hostile})
    assert done.returncode == 0, done.stderr[-3000:]

    # The neighbour keeps its points and is not flagged.
    data = b.results(out, "honest")
    b.assert_contained(data, "honest", {"add_one": 2, "double": 2}, None, "")

    # Every loop was in the hostile submission's group, and the group held to its quota.
    timing = _timing(out, "hostile")
    cpu, seconds = timing["cpu"], timing["seconds"]
    quota = sandbox.Limits().cpus
    assert cpu["cpus"] == quota, cpu
    if cpu["peak_processes"]:  # where the kernel counts it (pids.peak)
        assert cpu["peak_processes"] > LOOPS, cpu
    # CPU used <= quota x the time its workers lived (within the submission's seconds), plus
    # a period of slack per worker start (0.1 s each, 10 starts at most).
    assert cpu["cpu_s"] <= quota * seconds + 1.0, (cpu, seconds)
    # ... and none of them outlived the batch.
    assert _survivors() == []

    before = _timing(alone_out, "honest")["seconds"]
    after = _timing(out, "honest")["seconds"]
    print(
        f"\nhonest neighbour: {before:.1f} s alone, {after:.1f} s next to {LOOPS} busy loops "
        f"(slowdown x{after / before:.2f}); the hostile group used {cpu['cpu_s']:.1f} CPU s "
        f"in {seconds:.1f} s (quota {quota} CPU), throttled {cpu['throttled']:.0f} times; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
