"""Regenerate ``assignments/`` from ``solutions/`` with the real ``nbgrader generate_assignment``.

Each assignment is generated in a throwaway copy of the course (the repository's
``nbgrader_config.py`` plus ``solutions/<id>``), so no ``gradebook.db`` or half-written release
is ever left in the tree; the result then replaces ``assignments/<id>`` as a whole.

Usage: python scripts/release.py [ID ...]      (default: every solutions/<id>/<id>.ipynb)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "solutions"
RELEASE = "assignments"


def assignment_ids(root: Path = ROOT) -> list[str]:
    """Every assignment with a source notebook ``solutions/<id>/<id>.ipynb``, sorted."""
    return sorted(
        p.parent.name
        for p in (root / SOURCE).glob("*/*.ipynb")
        if p.stem == p.parent.name
    )


def new_gradebook(course: Path, course_id: str = "dsc190-vi") -> Path:
    """``course/gradebook.db`` as nbgrader's first command would create it, in this process.

    nbgrader creates a missing gradebook by running ``alembic heads`` in a subprocess to stamp
    its schema version (about 4 s: a second interpreter importing nbgrader and alembic). The
    same head comes from reading nbgrader's migration scripts here; the tables, the version
    row and the course row are nbgrader's own (``nbgrader.api.Gradebook`` creates them).
    """
    from unittest import mock

    import nbgrader.api
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option(
        "script_location", str(Path(nbgrader.api.__file__).parent / "alembic")
    )
    head = ScriptDirectory.from_config(config).get_current_head()
    path = course / "gradebook.db"
    with mock.patch.object(nbgrader.api, "get_alembic_version", lambda: head):
        nbgrader.api.Gradebook(f"sqlite:///{path}", course_id=course_id).close()
    return path


def make_course(course: Path, ids: list[str], root: Path = ROOT) -> None:
    """Lay out a course directory: our config and a copy of the source of ``ids``."""
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "nbgrader_config.py", course / "nbgrader_config.py")
    for assignment in ids:
        shutil.copytree(
            root / SOURCE / assignment,
            course / SOURCE / assignment,
            ignore=shutil.ignore_patterns(
                ".ipynb_checkpoints", "__pycache__", "*.pyc", ".hypothesis"
            ),
        )


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbgrader ARGS`` in ``course`` (its config file is read from there)."""
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def generate(course: Path, assignment: str) -> Path:
    """``nbgrader generate_assignment`` of one assignment; returns its release folder.

    Raises:
        RuntimeError: with nbgrader's log when it fails.
    """
    done = nbgrader(
        course,
        "generate_assignment",
        assignment,
        "--force",
        "--no-db",
        "--log-level=WARN",
    )
    release = course / RELEASE / assignment
    if done.returncode != 0 or not (release / f"{assignment}.ipynb").exists():
        raise RuntimeError(
            f"nbgrader generate_assignment {assignment} failed:\n{done.stdout}{done.stderr}"
        )
    return release


def release(ids: list[str], root: Path = ROOT) -> dict[str, float]:
    """Regenerate ``assignments/<id>`` for each id; returns seconds per assignment."""
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dsc190-release-") as tmp:
        course = Path(tmp) / "course"
        make_course(course, ids, root)
        for assignment in ids:
            start = time.perf_counter()
            generated = generate(course, assignment)
            target = root / RELEASE / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(generated, target)
            seconds[assignment] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "ids", nargs="*", help="assignment ids (default: all in solutions/)"
    )
    args = parser.parse_args(argv)
    known = assignment_ids()
    ids = args.ids or known
    unknown = sorted(set(ids) - set(known))
    if unknown:
        parser.error(
            f"no solutions/<id>/<id>.ipynb for {', '.join(unknown)}; known: {', '.join(known)}"
        )
    try:
        seconds = release(ids)
    except RuntimeError as error:
        print(error)
        return 1
    for assignment, took in seconds.items():
        print(
            f"{RELEASE}/{assignment}/{assignment}.ipynb  (generate_assignment {took:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
