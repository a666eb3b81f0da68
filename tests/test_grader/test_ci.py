"""Ready-made CI: the Gradescope bundle, ``autograde gradescope``, the Classroom workflow."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from autograder.grader.report import check_results_json, classroom_result
from tests.test_grader import builders as b

sys.path.insert(0, str(b.ROOT / "scripts"))
import gradescope_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    path = gradescope_bundle.build("01_em", tmp_path_factory.mktemp("gs"))
    return zipfile.ZipFile(path)


def test_the_bundle_has_gradescopes_two_scripts_executable(
    bundle: zipfile.ZipFile,
) -> None:
    for name in ("setup.sh", "run_autograder"):
        info = bundle.getinfo(name)
        assert stat.S_IMODE(info.external_attr >> 16) & 0o111, (
            f"{name} is not executable"
        )
    run = bundle.read("run_autograder").decode()
    assert "autograde gradescope --assignment 01_em" in run
    assert "/autograder/results" in run
    setup = bundle.read("setup.sh").decode()
    assert "chmod -R go-rwx" in setup and "hidden" in setup and "reference" in setup


def test_the_bundle_carries_the_grader_but_no_solutions_or_tests(
    bundle: zipfile.ZipFile,
) -> None:
    names = bundle.namelist()
    assert "autograder/grader/cli.py" in names and "autograder/hidden/em.py" in names
    assert "course_lib/reference/em.py" in names and "pyproject.toml" in names
    assert not [
        n for n in names if n.startswith(("solutions/", "tests/", "examples/", ".git/"))
    ]
    assert not [n for n in names if "__pycache__" in n]


def test_the_classroom_workflow_runs_the_same_grader_and_reports_points() -> None:
    workflow = yaml.safe_load(
        (b.ROOT / ".github" / "workflows" / "classroom.yml").read_text()
    )
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert 'autograde" grade submitted --out out' in commands
    assert 'autograde" classroom out' in commands
    reporter = next(
        s for s in steps if "autograding-grading-reporter" in s.get("uses", "")
    )
    assert (
        reporter["with"]["runners"] == "grader" and "GRADER_RESULTS" in reporter["env"]
    )


def test_classroom_result_keeps_partial_credit() -> None:
    results = {
        "tests": [
            {
                "name": "e_step: a",
                "score": 2,
                "max_score": 2,
                "status": "passed",
                "output": "passed",
            },
            {
                "name": "e_step: b",
                "score": 0,
                "max_score": 3,
                "status": "failed",
                "output": "look at the axis",
            },
        ],
        "extra_data": {"max_score": 5},
    }
    converted = classroom_result([results])
    assert converted["max_score"] == 5 and converted["status"] == "fail"
    assert [t["score"] for t in converted["tests"]] == [2, 0]
    assert converted["tests"][1]["message"] == "look at the axis"


@pytest.mark.slow
def test_autograde_gradescope_writes_results_json_where_gradescope_reads_it(
    tmp_path: Path,
) -> None:
    submission, results = tmp_path / "submission", tmp_path / "results"
    submission.mkdir()
    (submission / "my_work.ipynb").write_text(json.dumps(b.notebook(b.honest_cells())))
    plugins = [arg for p in b.PLUGINS for arg in ("--plugin", p)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder.grader.cli",
            "gradescope",
            "--assignment",
            b.ASSIGNMENT,
            "--submission",
            str(submission),
            "--results",
            str(results),
            *plugins,
        ],
        cwd=b.ROOT,
        env=b.env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((results / "results.json").read_text())
    assert check_results_json(data) == []
    assert data["score"] == 4
    classroom = subprocess.run(
        [sys.executable, "-m", "autograder.grader.cli", "classroom", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        classroom.returncode == 1
    )  # no OUT tree there: says so instead of reporting nothing
    encoded = base64.b64encode(json.dumps(classroom_result([data])).encode())
    assert json.loads(base64.b64decode(encoded))["max_score"] == 4
