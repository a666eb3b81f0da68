"""The registry is complete and consistent; public checks never carry the answers."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

from autograder.tasks import ASSIGNMENTS, TASKS, check_modules, properties

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: Judge-side modules allowed to load judge-only code: the judge's end of the wire answers a
#: held helper's calls with ``autograder.hidden.held`` (the worker, where student code runs,
#: can neither read nor import it: tests/test_grader/test_secrets.py).
JUDGE_SIDE = {ROOT / "autograder" / "grader" / "remote.py"}
PUBLIC_FILES = [
    p
    for p in (ROOT / "autograder").rglob("*.py")
    if "hidden" not in p.parts and p not in JUDGE_SIDE
]


@pytest.mark.parametrize("task_id", list(TASKS))
def test_property_points_add_up_to_the_task(task_id: str) -> None:
    props = properties(task_id)
    assert props, f"{task_id} has no properties"
    assert {p.tier for p in props} == {"public", "hidden"}, (
        f"{task_id} needs public and hidden checks"
    )
    assert sum(p.points for p in props) == pytest.approx(TASKS[task_id].points)
    assert len({p.name for p in props}) == len(props)


@pytest.mark.parametrize("path", PUBLIC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_autograder_never_imports_the_reference(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            assert not name.startswith(("course_lib.reference", "autograder.hidden")), (
                f"{path} imports {name}"
            )


def test_every_assignment_has_check_modules() -> None:
    for module in ASSIGNMENTS.values():
        public, hidden = check_modules(module)
        importlib.import_module(public)
        if public.startswith("autograder."):  # the course's own, not a test plugin's
            assert hidden is not None, module
            importlib.import_module(hidden)
