"""Shared test configuration: markers, GPU auto-skip, fast-failing mutants, a dev profile."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# nbgrader runs `alembic` from PATH; tests run `nbgrader` and `autograde`: put this
# interpreter's bin first, so `.venv/bin/python -m pytest` works without activating.
os.environ["PATH"] = (
    os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)

# Must be set before autograder.profiles is imported: mutants fail without shrinking.
os.environ.setdefault("AUTOGRADER_SHRINK", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from hypothesis import settings

from autograder.tasks import TASKS

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Tests of course_lib (not grading) use a small, derandomized profile of their own.
settings.register_profile(
    "dev", max_examples=25, deadline=None, derandomize=True, database=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(
        config, "workerinput"
    ):  # the main process (xdist's controller or serial)
        os.environ["COURSE_TEST_TIMES_DIR"] = tempfile.mkdtemp(prefix="test-times-")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Notebook timings written by every test process (``tests/test_notebooks/conftest.py``)."""
    if hasattr(terminalreporter.config, "workerinput"):
        return  # an xdist worker: the controller prints (and removing the folder here lost them)
    folder = Path(os.environ.get("COURSE_TEST_TIMES_DIR", "/nonexistent"))
    times: dict[str, dict[str, float]] = {}
    for path in sorted(folder.glob("notebooks-*.json")):
        for assignment, steps in json.loads(path.read_text()).items():
            times.setdefault(assignment, {}).update(steps)
    shutil.rmtree(folder, ignore_errors=True)
    if not times:
        return
    terminalreporter.section("notebook timings (seconds, this machine)")
    for assignment, steps in sorted(times.items()):
        parts = ", ".join(f"{step} {seconds:.1f}" for step, seconds in steps.items())
        terminalreporter.write_line(f"{assignment}: {parts}")


#: pytest-xdist (``make test`` runs ``-n 2``) hands out *groups* of tests, each to one worker,
#: through the scheduler below (xdist's own ``loadgroup`` renames node ids, which pytest 9 no
#: longer allows: every test became its own group). A group is a test file, except: the files
#: sharing the graded corpus cached by ``tests.corpus.grade`` form one group, and the nbgrader
#: courses of ``tests/test_notebooks/conftest.py`` (session fixtures parametrized by
#: assignment) are grouped by assignment, so the five courses spread over the workers and
#: each is built once.
SHARED_GROUPS = {
    "test_corpus.py": "corpus",
    "test_known_bugs.py": "corpus",
}
NBGRADER_COURSE_FILES = ("test_nbgrader_pipeline.py", "test_release_in_sync.py")
#: Groups that take minutes: scheduled first, so that no long group starts last and runs
#: alone on one worker while the other idles (longest first).
HEAVY = (
    "nbgrader-course",
    "corpus",
    "test_instructor.py",
    "test_cluster.py",
    "test_hostile.py",
    "test_batch.py",
    "test_nonroot.py",
    "test_fair_cpu.py",
    "test_browser.py",
)


def test_group(nodeid: str) -> str:
    """The group of the test ``nodeid`` (see :data:`SHARED_GROUPS`).

    The corpus is cached per entry, so its tests split by the entry's assignment module
    (``corpus-elbo``...): the tests of one entry, in both files, stay on one worker, and five
    groups of one to two minutes balance better than one of five minutes."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if name in NBGRADER_COURSE_FILES and nodeid.endswith("]"):
        return f"nbgrader-course-{nodeid[nodeid.rindex('[') + 1 : -1]}"
    group = SHARED_GROUPS.get(name, path)
    if group == "corpus" and nodeid.endswith("]"):
        task = nodeid[nodeid.rindex("[") + 1 : -1].split("/", 1)[0]
        if task in TASKS:
            return f"corpus-{TASKS[task].module}"
    return group


def _weight(item: pytest.Item) -> int:
    group = test_group(item.nodeid)
    return next((i for i, h in enumerate(HEAVY) if h in group), len(HEAVY))


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` without xdist still runs
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups to one worker each, in collection order (heavy groups first)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    items.sort(key=_weight)  # stable: a file's tests keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
