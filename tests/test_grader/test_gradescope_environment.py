"""Gradescope hides the hidden tier (issue 19 item 7) and the fingerprint covers the grading
environment (item 8).

Gradescope's autograder specifications (results.json) are written out below as a schema:
every field this grader writes must be one Gradescope documents, with a documented value.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from typing import Any

import pytest

from autograder.core import CheckResult
from autograder.grader import cli, cluster, judge
from autograder.grader.judge import JudgeConfig
from autograder.grader.report import (
    HIDDEN_VISIBILITY,
    VISIBILITIES,
    Outcome,
    results_json,
)
from autograder.grader.sandbox import Limits
from tests.test_grader import builders as b

# --------------------------------------------------------------------------- Gradescope's schema

#: https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format").
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
OUTPUT_FORMATS = {"text", "html", "simple_format", "md", "ansi"}
TOP_LEVEL: dict[str, Any] = {
    "score": (int, float),
    "execution_time": (int, float),
    "output": str,
    "output_format": str,
    "test_output_format": str,
    "test_name_format": str,
    "visibility": str,
    "stdout_visibility": str,
    "extra_data": dict,
    "tests": list,
    "leaderboard": list,
}
TEST: dict[str, Any] = {
    "score": (int, float),
    "max_score": (int, float),
    "status": str,
    "name": str,
    "name_format": str,
    "number": str,
    "output": str,
    "output_format": str,
    "tags": list,
    "visibility": str,
    "extra_data": dict,
}


def gradescope_problems(data: dict[str, Any]) -> list[str]:
    """What in ``data`` Gradescope's documented results.json does not allow."""
    problems = []

    def fields(where: str, obj: dict[str, Any], schema: dict[str, Any]) -> None:
        for key, value in obj.items():
            if key not in schema:
                problems.append(f"{where}{key} is not a Gradescope field")
            elif not isinstance(value, schema[key]) or isinstance(value, bool):
                problems.append(f"{where}{key} has type {type(value).__name__}")
        for key in ("visibility", "stdout_visibility"):
            if key in obj and obj[key] not in VISIBILITY:
                problems.append(f"{where}{key} is {obj[key]!r}")
        for key in (
            "output_format",
            "test_output_format",
            "test_name_format",
            "name_format",
        ):
            if key in obj and obj[key] not in OUTPUT_FORMATS:
                problems.append(f"{where}{key} is {obj[key]!r}")

    fields("", data, TOP_LEVEL)
    if "score" not in data and not all("score" in t for t in data.get("tests", [])):
        problems.append("no score, at the top or on every test")
    for index, test in enumerate(data.get("tests", [])):
        fields(f"tests[{index}].", test, TEST)
        if test.get("status", "passed") not in ("passed", "failed"):
            problems.append(f"tests[{index}].status is {test['status']!r}")
        if "max_score" in test and "score" not in test:
            problems.append(f"tests[{index}] has max_score without score")
    return problems


def _outcome(visibility: str = HIDDEN_VISIBILITY) -> Outcome:
    tests = [
        CheckResult("add_one", "adds one", "public", 1.0, 1.0, True, "", 0.1, []),
        CheckResult(
            "add_one", "matches", "hidden", 0.0, 1.0, False, "off by one", 0.1, []
        ),
    ]
    return Outcome(
        "s1", b.ASSIGNMENT, "ab" * 32, "f" * 16, tests, hidden_visibility=visibility
    )


def test_hidden_checks_are_shown_after_publishing_and_public_ones_always() -> None:
    data = results_json(_outcome())
    assert gradescope_problems(data) == []
    shown = {t["name"]: t["visibility"] for t in data["tests"]}
    assert shown == {
        "add_one: adds one": "visible",
        "add_one: matches": "after_published",
    }
    assert HIDDEN_VISIBILITY == "after_published"


@pytest.mark.parametrize("visibility", sorted(VISIBILITY))
def test_the_hidden_visibility_is_configurable(visibility: str) -> None:
    assert set(VISIBILITIES) == VISIBILITY
    args = cli._parser().parse_args(
        ["grade", "in", "--out", "out", "--hidden-visibility", visibility]
    )
    assert args.hidden_visibility == visibility
    data = results_json(_outcome(args.hidden_visibility))
    assert gradescope_problems(data) == []
    assert [t["visibility"] for t in data["tests"]] == ["visible", visibility]
    # A rerun with another visibility rewrites the results.json files (not "already graded").
    fingerprints = {
        judge.grader_fingerprint(Limits(), b.ASSIGNMENT, b.PLUGINS, v)
        for v in VISIBILITY
    }
    assert len(fingerprints) == len(VISIBILITY)


def test_an_unknown_visibility_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        cli._parser().parse_args(
            ["grade", "in", "--out", "out", "--hidden-visibility", "soon"]
        )


def test_the_schema_catches_what_gradescope_refuses() -> None:
    data = results_json(_outcome())
    data["tests"][1]["visibility"] = "students"
    data["tests"][0]["stauts"] = "passed"
    data["output_format"] = "pdf"
    assert len(gradescope_problems(data)) == 3


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    "package",
    ["python", "torch", "numpy", "hypothesis", "scipy", "scikit-learn", "nbformat"],
)
def test_the_fingerprint_changes_with_the_environment(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = judge.grader_fingerprint(Limits(), b.ASSIGNMENT, b.PLUGINS)
    if package == "python":
        monkeypatch.setattr(platform, "python_version", lambda: "3.99.0")
    else:
        real = importlib.metadata.version
        monkeypatch.setattr(
            importlib.metadata,
            "version",
            lambda name: "0.0.1" if name == package else real(name),
        )
    assert judge.grading_environment()[package].endswith(("0.0.1", "3.99.0"))
    assert judge.grader_fingerprint(Limits(), b.ASSIGNMENT, b.PLUGINS) != before


def test_a_dask_worker_with_another_torch_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = JudgeConfig(
        plugins=tuple(b.PLUGINS),
        fingerprints={
            b.ASSIGNMENT: judge.grader_fingerprint(Limits(), b.ASSIGNMENT, b.PLUGINS)
        },
    )
    monkeypatch.setattr(cluster, "_FINGERPRINTS", {})
    cluster._check_grader(config, b.ASSIGNMENT)  # the same environment: accepted
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda n: "1.0.0" if n == "torch" else real(n)
    )
    monkeypatch.setattr(cluster, "_FINGERPRINTS", {})
    with pytest.raises(cluster.GraderMismatch, match=r"constraints/grading\.txt"):
        cluster._check_grader(config, b.ASSIGNMENT)


def test_the_grading_packages_are_the_course_dependencies() -> None:
    """Every runtime dependency of the course package decides grades, but the progress bar."""
    text = (b.ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = {
        re.match(r'\s*"([A-Za-z0-9_.-]+)', line).group(1)
        for line in block.splitlines()
        if '"' in line
    }  # type: ignore[union-attr]
    assert names - {"tqdm"} == set(judge.GRADING_PACKAGES)


def test_the_constraints_pin_what_is_installed() -> None:
    """constraints/grading.txt pins each grading package at this environment's version (CI's,
    since ``make install`` installs with it); regenerate with scripts/grading_constraints.py."""
    path = b.ROOT / "constraints" / "grading.txt"
    pins = {}
    for line in path.read_text().splitlines():
        if line.startswith("# python "):
            assert platform.python_version().startswith(line.split()[-1] + "."), line
        elif line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    assert set(pins) == set(judge.GRADING_PACKAGES)
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version, name
    assert "-c constraints/grading.txt" in (b.ROOT / "Makefile").read_text()
