"""Shared helpers of the notebook tests: find notebooks, classify cells, drive real nbgrader.

Everything is generic over the assignments present in ``solutions/``, so a new notebook is
tested as soon as it lands there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import nbformat
from nbformat import NotebookNode

from autograder.tasks import TASKS, tasks_of

ROOT = Path(__file__).resolve().parents[2]
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
NBGRADER_KEYS = {
    "schema_version",
    "grade",
    "solution",
    "locked",
    "task",
    "grade_id",
    "points",
    "checksum",
    "cell_type",
}


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_scripts_{name}", ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release_script = _load_script("release")


def assignment_ids() -> list[str]:
    """Every ``solutions/<id>/<id>.ipynb``, sorted."""
    return release_script.assignment_ids(ROOT)


def source_path(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


def release_path(assignment: str) -> Path:
    return ROOT / "assignments" / assignment / f"{assignment}.ipynb"


def read(path: Path) -> NotebookNode:
    return nbformat.read(path, as_version=4)


def nbgrader_meta(cell: NotebookNode) -> dict:
    return dict(cell.metadata.get("nbgrader", {}))


def is_grade_code(cell: NotebookNode) -> bool:
    meta = nbgrader_meta(cell)
    return (
        cell.cell_type == "code"
        and bool(meta.get("grade"))
        and not meta.get("solution")
    )


def is_solution_code(cell: NotebookNode) -> bool:
    meta = nbgrader_meta(cell)
    return (
        cell.cell_type == "code"
        and bool(meta.get("solution"))
        and not meta.get("grade")
    )


def is_manual_answer(cell: NotebookNode) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and bool(meta.get("solution"))


def grade_cell_source(task: str) -> str:
    """The five-line grade cell of docs/DEVELOPING.md."""
    return (
        f'score = grade("{task}", {task})\n'
        f"{BEGIN_HIDDEN}\n"
        f'score += grade("{task}", {task}, tier="hidden")\n'
        f"{END_HIDDEN}\n"
        "score"
    )


def hidden_lines(nb: NotebookNode) -> list[str]:
    """The code between the HIDDEN TESTS markers, one stripped line at a time."""
    lines: list[str] = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if BEGIN_HIDDEN in line:
                inside = True
            elif END_HIDDEN in line:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def replace_solution_body(source: str, body: str) -> str:
    """Swap the text between the solution markers for ``body`` (indented like the markers)."""
    lines = source.splitlines()
    begin = next(i for i, line in enumerate(lines) if BEGIN_SOLUTION in line)
    end = next(i for i, line in enumerate(lines) if END_SOLUTION in line)
    indent = re.match(r"\s*", lines[begin]).group(0)  # type: ignore[union-attr]
    new_body = [
        indent + line if line.strip() else line
        for line in body.strip("\n").splitlines()
    ]
    return "\n".join([*lines[: begin + 1], *new_body, *lines[end:]])


def task_points(assignment: str) -> dict[str, float]:
    return {task.id: task.points for task in tasks_of(assignment)}


def points_of(task: str) -> float:
    return TASKS[task].points


# --------------------------------------------------------------------------- nbgrader


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("NBGRADER_EXECUTION", None)  # nbgrader sets it itself while autograding
    return env


def nbgrader(
    course: Path, *args: str, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run the real nbgrader CLI in ``course`` with the repository's config."""
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"],
        cwd=course,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def nbgrader_stamped(course: Path, *args: str) -> tuple[int, list[tuple[float, str]]]:
    """Run nbgrader and stamp each log line with the time it arrived (for per-student times)."""
    start = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"],
        cwd=course,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = [
            (time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout
        ]
        returncode = process.wait()
    lines.append((time.perf_counter() - start, "<exit>"))
    return returncode, lines


def seconds_per_student(
    lines: list[tuple[float, str]], assignment: str
) -> dict[str, float]:
    """From nbgrader's ``Sanitizing .../submitted/<student>/...`` line to the next student's (or the end)."""
    starts = []
    for stamp, line in lines:
        found = re.search(
            rf"Sanitizing .*/submitted/([^/]+)/{re.escape(assignment)}/", line
        )
        if found:
            starts.append((stamp, found.group(1)))
    ends = [stamp for stamp, _ in starts[1:]] + [lines[-1][0]]
    return {student: end - begin for (begin, student), end in zip(starts, ends)}


@dataclass
class Course:
    """A throwaway nbgrader course: the solutions as ``source/``, our config, a gradebook."""

    root: Path
    ids: list[str]
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, ids: list[str]) -> Course:
        release_script.make_course(root, ids, ROOT)
        release_script.new_gradebook(root)
        return cls(root, ids)

    def run(
        self, step: str, assignment: str, *args: str
    ) -> subprocess.CompletedProcess[str]:
        start = time.perf_counter()
        done = nbgrader(self.root, step, assignment, *args)
        self.seconds.setdefault(assignment, {})[step] = time.perf_counter() - start
        return done

    def release(self, assignment: str) -> Path:
        return self.root / "assignments" / assignment / f"{assignment}.ipynb"

    def submit(self, student: str, assignment: str, nb: NotebookNode) -> None:
        folder = self.root / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{assignment}.ipynb")
        (folder / "timestamp.txt").write_text("2025-01-01 12:00:00.000000 UTC")

    def autograded(self, student: str, assignment: str) -> NotebookNode:
        return read(
            self.root / "autograded" / student / assignment / f"{assignment}.ipynb"
        )

    def feedback_html(self, student: str, assignment: str) -> str:
        return (
            self.root / "feedback" / student / assignment / f"{assignment}.html"
        ).read_text()

    def gradebook_url(self) -> str:
        return f"sqlite:///{self.root / 'gradebook.db'}"


def copy_tree_without(src: Path, dest: Path, *patterns: str) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*patterns))
