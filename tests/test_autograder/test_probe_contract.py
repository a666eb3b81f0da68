"""The probe naming rule: functions that run in the student's process end in ``_probe``,
judge-side helpers never do, and checks hand ``subject.call`` nothing else."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "autograder"
#: An assignment's checks: a package by role (``checks/<module>/probes.py`` holds its probes)
#: or, not yet split, one module.
PACKAGES = sorted(p.parent for p in (ROOT / "checks").glob("*/__init__.py"))
PUBLIC = [
    ROOT / "probes.py",
    *sorted((ROOT / "checks").glob("[a-z]*.py")),
    *sorted((ROOT / "checks").glob("*/[a-z]*.py")),
]
CHECKS = [*PUBLIC[1:], *sorted((ROOT / "hidden").glob("[a-z]*.py"))]
#: A context manager the probes use; never handed to ``subject.call``.
NOT_PROBES = {"held_correct"}


def _functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)]


def _first_parameter(fn: ast.FunctionDef) -> str:
    return fn.args.args[0].arg if fn.args.args else ""


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", PUBLIC, ids=_label)
def test_student_side_functions_end_in_probe(path: Path) -> None:
    for fn in _functions(path):
        student_side = _first_parameter(fn) == "student" and fn.name not in NOT_PROBES
        assert student_side == fn.name.endswith("_probe"), (
            f"{path.name}: {fn.name} takes {_first_parameter(fn)!r} first"
        )


def _handed(path: Path) -> list[ast.expr]:
    """The first argument of every ``<something>.call(...)`` in ``path``."""
    return [
        node.args[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "call"
        and node.args
    ]


@pytest.mark.parametrize("path", CHECKS, ids=_label)
def test_checks_hand_subject_call_only_probes(path: Path) -> None:
    for arg in _handed(path):
        name = arg.attr if isinstance(arg, ast.Attribute) else getattr(arg, "id", "")
        assert name.endswith("_probe"), (
            f"{path.name}:{arg.lineno} hands {name!r} to call"
        )


def test_the_rule_is_checked_on_the_real_calls() -> None:
    assert sum(len(_handed(path)) for path in CHECKS) >= 50


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_a_checks_package_keeps_its_probes_in_probes_py(package: Path) -> None:
    """What runs in the student's process is one file per assignment: every ``*_probe`` of
    the package is defined in its ``probes.py``, and that file imports nothing of the judge's
    side of the package (its imports are the attack surface the worker walks)."""
    probes = package / "probes.py"
    assert probes.is_file(), f"{package.name} has no probes.py"
    assert any(fn.name.endswith("_probe") for fn in _functions(probes))
    for path in sorted(package.glob("*.py")):
        if path != probes:
            misplaced = [
                fn.name for fn in _functions(path) if fn.name.endswith("_probe")
            ]
            assert not misplaced, f"{_label(path)} defines probes {misplaced}"
    sibling = f"autograder.checks.{package.name}"
    for node in ast.walk(ast.parse(probes.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith((sibling, "autograder.hidden")), (
                f"{_label(probes)} imports {node.module}"
            )


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_a_probes_annotations_resolve_where_it_lives(package: Path) -> None:
    """The judge reads a probe's result through its return annotation
    (:func:`autograder.transport.result_problem`), resolved in the probe's own module: a name
    that does not resolve there would turn that check off silently."""
    module = importlib.import_module(f"autograder.checks.{package.name}.probes")
    probes = [
        fn
        for name, fn in vars(module).items()
        if inspect.isfunction(fn)
        and name.endswith("_probe")
        and fn.__module__ == module.__name__
    ]
    assert probes
    for fn in probes:
        hints = typing.get_type_hints(fn)
        assert "return" in hints, f"{fn.__name__} declares no return type"
