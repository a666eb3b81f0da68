"""Every place that keeps the answers from students agrees with ``autograder.secrets``."""

from __future__ import annotations

import pickle
import shlex
import sys
from pathlib import Path

import pytest

from autograder import secrets, transport
from autograder.grader import judge, remote, sandbox
from autograder.tasks import TASKS, properties
from course_lib.reference import em as reference_em
from tests.test_grader import builders as b

sys.path.insert(0, str(b.ROOT / "scripts"))
import gradescope_bundle
import student_bundle

RELATIVE = [
    f"{p}/{sub}" for p, subs in secrets.PRIVATE_SUBPACKAGES.items() for sub in subs
]


def test_the_rule_names_the_answers_and_only_them() -> None:
    assert sorted(RELATIVE) == ["autograder/hidden", "course_lib/reference"]
    assert secrets.SECRET_MODULES == tuple(r.replace("/", ".") for r in RELATIVE)
    assert secrets.HIDDEN_CHECKS in secrets.SECRET_MODULES
    for name in (
        "autograder.hidden",
        "autograder.hidden.em",
        "course_lib.reference._autograd",
        "tests.test_grader.fakecourse.hidden",
    ):
        assert secrets.is_secret(name), name
    for name in (
        "autograder.checks.em",
        "course_lib.referee",
        "autograder",
        "hiddenness",
    ):
        assert not secrets.is_secret(name), name
    assert secrets.is_secret("plug.answers.x", extra=["plug.answers"])
    assert [d.relative_to(b.ROOT) for d in secrets.secret_dirs()] == [
        Path(r) for r in RELATIVE
    ]


def test_the_sandbox_denies_the_secret_folders_and_modules(tmp_path: Path) -> None:
    policy = sandbox.plan(
        "rlimits", str(tmp_path), secret_paths=["/srv/out"], secret_modules=["p.hidden"]
    )
    assert policy.deny_paths == [*map(str, secrets.secret_dirs()), "/srv/out"]
    assert policy.deny_modules == [*secrets.SECRET_MODULES, "p.hidden"]
    assert sandbox.Policy("rlimits", str(tmp_path)).deny_modules == list(
        secrets.SECRET_MODULES
    )


def test_the_judge_keeps_secret_plugins_and_probes_on_its_side() -> None:
    plugins = ["tests.test_grader.fakecourse", "tests.test_grader.fakecourse.hidden"]
    assert judge._public(plugins) == plugins[:1]
    assert judge._secret(plugins) == plugins[1:]
    with pytest.raises(TypeError, match="cannot import"):
        remote.probe_address(reference_em.e_step)
    # Nothing defined in a secret module is unpickled next to student code.
    payload = pickle.dumps(((reference_em.e_step,), {}))
    with pytest.raises(transport.TransportError, match="may not be sent"):
        transport.unpickle_args(payload)


def test_a_property_is_hidden_exactly_when_its_module_is_secret() -> None:
    tiers = set()
    for task in TASKS.values():
        for prop in properties(task.id):
            module = getattr(
                getattr(prop.fn, "hypothesis", None), "inner_test", prop.fn
            ).__module__
            assert prop.tier == ("hidden" if secrets.is_secret(module) else "public")
            tiers.add(prop.tier)
    assert tiers == {"public", "hidden"}


def test_the_bundles_leave_out_or_lock_exactly_the_secrets(tmp_path: Path) -> None:
    for package, subs in secrets.PRIVATE_SUBPACKAGES.items():
        student_bundle._copy_package(b.ROOT / package, tmp_path / package, subs)
        shipped = {p.name for p in (tmp_path / package).iterdir() if p.is_dir()}
        there = {
            p.name
            for p in (b.ROOT / package).iterdir()
            if p.is_dir() and p.name != "__pycache__"
        }
        assert shipped == there - set(subs), package
    setup = gradescope_bundle.SETUP.format(
        torch="2", secret_dirs=gradescope_bundle._secret_dirs()
    )
    (chmod,) = [line for line in setup.splitlines() if line.startswith("chmod")]
    locked = shlex.split(chmod)[3:]
    assert locked == [f"$site/{r}" for r in RELATIVE] + ["/autograder/source"]
