"""Notebooks and classes of submissions for the grader tests (the fake ``00_fake`` assignment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "00_fake"
PLUGINS = ["tests.test_grader.fakecourse", "tests.test_grader.fakecourse.hidden"]
HIDDEN_FAKE = ROOT / "tests" / "test_grader" / "fakecourse" / "hidden.py"
SECRET = "the hidden answer is 42"

IMPORTS = "import numpy as np\nimport torch"
ADD_ONE = "def add_one(x):\n    return x + 1"
DOUBLE = "def double(t):\n    return 2 * t"


def grade_cell(task: str, points: float = 2) -> tuple[str, dict[str, Any]]:
    """A released grade cell with nbgrader metadata."""
    meta = {
        "nbgrader": {
            "grade": True,
            "solution": False,
            "locked": True,
            "grade_id": f"{task}_check",
            "points": points,
            "schema_version": 3,
        }
    }
    return f"score = grade({task!r}, {task})\nscore", meta


def solution_cell(source: str, grade_id: str) -> tuple[str, dict[str, Any]]:
    """An autograded answer cell."""
    meta = {
        "nbgrader": {
            "grade": False,
            "solution": True,
            "locked": False,
            "grade_id": grade_id,
            "schema_version": 3,
        }
    }
    return source, meta


def notebook(
    cells: Sequence[str | tuple[str, dict[str, Any]]], kernel: str = "python3"
) -> dict[str, Any]:
    """An nbformat-4 notebook from sources (plain code cells) or ``(source, metadata)`` pairs."""
    built = []
    for cell in cells:
        source, meta = (cell, {}) if isinstance(cell, str) else cell
        built.append(
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": meta,
                "outputs": [],
                "source": source,
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel, "display_name": kernel, "language": "python"}
        },
        "cells": built,
    }


def honest_cells(add_one: str = ADD_ONE, double: str = DOUBLE) -> list[Any]:
    """The fake assignment done right (or with the given implementations)."""
    return [
        IMPORTS,
        solution_cell(add_one, "add_one"),
        grade_cell("add_one"),
        solution_cell(double, "double"),
        grade_cell("double"),
    ]


def write_submission(
    root: Path,
    student: str,
    content: dict[str, Any] | str | bytes,
    assignment: str = ASSIGNMENT,
) -> Path:
    """``root/<student>/<assignment>/<assignment>.ipynb``."""
    path = root / student / assignment / f"{assignment}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        path.write_text(json.dumps(content, indent=1))
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def autograde_command(submitted: Path, out: Path, *extra: str) -> list[str]:
    """The CLI as CI runs it, with the fake assignment's plugins."""
    plugins = [arg for p in PLUGINS for arg in ("--plugin", p)]
    return [
        sys.executable,
        "-m",
        "autograder.grader.cli",
        "grade",
        str(submitted),
        "--out",
        str(out),
        "--no-progress",
        *plugins,
        *extra,
    ]


def env() -> dict[str, str]:
    """The environment of a grader subprocess: one thread, no shrinking."""
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        AUTOGRADER_SHRINK="0",
        PYTHONDONTWRITEBYTECODE="1",
    )


def processes(field: int, value: int) -> list[int]:
    """Pids of the processes whose ``/proc/<pid>/stat`` field ``field`` (counted after the
    command name: 1 the parent, 3 the session) equals ``value``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[field]) == value:
                found.append(int(entry))
    return found


def run_autograde(
    submitted: Path, out: Path, *extra: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``autograde grade`` to completion."""
    return subprocess.run(
        autograde_command(submitted, out, *extra),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def results(out: Path, student: str, assignment: str = ASSIGNMENT) -> dict[str, Any]:
    """A submission's results.json."""
    return json.loads((out / student / assignment / "results.json").read_text())


def task_scores(data: dict[str, Any]) -> dict[str, float]:
    """Points per task from a results.json."""
    scores: dict[str, float] = {}
    for test in data["tests"]:
        task = test["name"].split(": ", 1)[0]
        scores[task] = scores.get(task, 0) + test["score"]
    return scores


#: Flags that mark a submission as caught doing something (an honest one has none of them).
CAUGHT_FLAGS = frozenset(
    {"forbidden", "crashed", "timeout", "invalid_notebook", "grader_error", "symlink"}
)


def assert_contained(
    data: dict[str, Any],
    student: str,
    scores: dict[str, float],
    flag: str | None,
    words: str,
) -> None:
    """A results.json gives ``scores`` per task, carries ``flag`` (or, for None, none of
    :data:`CAUGHT_FLAGS`) and names ``words`` in its feedback."""
    assert task_scores(data) == scores, json.dumps(data, indent=1)[:4000]
    flags = data["extra_data"]["flags"]
    if flag is None:
        assert not set(flags) & CAUGHT_FLAGS, flags
    else:
        assert flag in flags, flags
    text = json.dumps(data)
    assert words in text, f"{words!r} not in the feedback of {student}: {text[:3000]}"


_DECODE_PEAK = """import resource, sys
from autograder import transport
payload = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    transport.decode(payload)
    verdict = "accepted"
except transport.TransportError as error:
    verdict = f"refused: {error}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{verdict}; peak grew {(after - before) / 1024:.1f} MB")
"""


def decode_in_a_fresh_judge(payload: bytes, folder: Path) -> tuple[str, float]:
    """Decode ``payload`` in a fresh judge-like process: its verdict (``accepted`` or
    ``refused: <why>``) and how much its peak memory grew while decoding, in MB (read after
    the payload itself is in memory, so a payload's own size does not count)."""
    path = folder / "payload.bin"
    path.write_bytes(payload)
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_PEAK, str(path)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    line = done.stdout.strip()
    verdict, grew = line.rsplit("; peak grew ", 1)
    return verdict, float(grew.split()[0])
