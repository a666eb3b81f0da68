"""Held-correct helpers hold no implementation within a submission's reach (issue 19, item 2).

A task that calls another graded function is graded with a :class:`autograder.probes.Held`
stand-in for it, whose values come from judge-only code: in the CI grader the worker asks
its judge, which answers only while the running probe holds that helper. A submission that
calls a stand-in itself (to answer ``log_joint``, say) scores zero on the task being
checked, with the ``forbidden`` flag; an honest one in the same batch keeps every point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autograder.grade import run_task
from autograder.subject import LocalSubject
from tests.test_grader import builders as b

ASSIGNMENT = "01_em"

E_STEP_AND_FREE_ENERGY = """
def e_step(X, weights, means, covs):
    log_p = log_joint(X, weights, means, covs)
    log_evidence = logsumexp(log_p, axis=1)
    return np.exp(log_p - log_evidence[:, None]), float(log_evidence.sum())


def free_energy(X, resp, weights, means, covs):
    log_p = log_joint(X, weights, means, covs)
    energy = np.sum(np.where(resp > 0, resp * log_p, 0.0))
    return float(-(energy - xlogy(resp, resp).sum()))
"""

HONEST_LOG_JOINT = """
def log_joint(X, weights, means, covs):
    out = np.empty((X.shape[0], len(weights)))
    for k in range(len(weights)):
        chol = np.linalg.cholesky(covs[k])
        solved = solve_triangular(chol, (X - means[k]).T, lower=True)
        log_det = 2 * np.log(np.diag(chol)).sum()
        out[:, k] = np.log(weights[k]) - 0.5 * (
            (solved**2).sum(0) + log_det + X.shape[1] * np.log(2 * np.pi)
        )
    return out
"""

#: The stand-in built by hand: the grader's own log_joint.
PROXY_LOG_JOINT = """
from autograder.probes import Held

def log_joint(X, weights, means, covs):
    return Held("log_joint")(X, weights, means, covs)
"""

#: The public checks' closed form, as the issue's attack called it (12/12 on main).
CLOSED_FORM_LOG_JOINT = """
def log_joint(X, weights, means, covs):
    from autograder.checks.em import closed_form_log_joint

    return closed_form_log_joint(X, weights, means, covs)
"""

IMPORTS = (
    "import numpy as np\n"
    "from scipy.linalg import solve_triangular\n"
    "from scipy.special import logsumexp, xlogy"
)


def _cells(log_joint: str) -> list[Any]:
    return [
        IMPORTS,
        b.solution_cell(log_joint, "log_joint"),
        b.grade_cell("log_joint", 3),
        b.solution_cell(E_STEP_AND_FREE_ENERGY, "e_step"),
        b.grade_cell("e_step", 5),
        b.grade_cell("free_energy", 4),
    ]


def _namespace(log_joint: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    exec(IMPORTS + log_joint + E_STEP_AND_FREE_ENERGY, namespace)
    return namespace


@pytest.mark.slow
def test_a_stand_in_called_by_hand_is_forbidden_in_one_process() -> None:
    results = run_task("log_joint", LocalSubject(_namespace(PROXY_LOG_JOINT)))
    assert sum(r.score for r in results) == 0
    assert all("forbidden" in r.flags for r in results), [r.flags for r in results]
    honest = run_task("log_joint", LocalSubject(_namespace(HONEST_LOG_JOINT)))
    assert all(r.passed for r in honest), [r.feedback for r in honest if not r.passed]


@pytest.mark.slow
def test_the_judge_refuses_a_stand_in_that_its_probe_does_not_hold(
    tmp_path: Path,
) -> None:
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    for student, log_joint in (
        ("honest", HONEST_LOG_JOINT),
        ("proxy", PROXY_LOG_JOINT),
        ("closed_form", CLOSED_FORM_LOG_JOINT),
    ):
        b.write_submission(
            submitted, student, b.notebook(_cells(log_joint)), ASSIGNMENT
        )
    done = b.run_autograde(submitted, out, "--jobs", "2", "--timeout", "300")
    assert done.returncode == 0, done.stderr[-3000:]
    honest = b.results(out, "honest", ASSIGNMENT)
    b.assert_contained(
        honest, "honest", {"log_joint": 3, "e_step": 5, "free_energy": 4}, None, ""
    )
    # The cheat runs whenever the student's own log_joint does: in log_joint's checks and
    # in the one property of e_step and of free_energy that runs it as wired.
    cheat = b.results(out, "proxy", ASSIGNMENT)
    b.assert_contained(
        cheat,
        "proxy",
        {"log_joint": 0, "e_step": 0, "free_energy": 0},
        "forbidden",
        "held-correct",
    )
    # The public checks no longer hold a log joint: the attack fails on log_joint, and
    # costs e_step and free_energy only their one property run as wired (0.5 each).
    copied = b.results(out, "closed_form", ASSIGNMENT)
    b.assert_contained(
        copied,
        "closed_form",
        {"log_joint": 0, "e_step": 4.5, "free_energy": 3.5},
        None,
        "closed_form_log_joint",
    )


ELBO_IMPORTS = "import math\nimport torch"

HONEST_ELBO = """
def elbo(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    log_q = (-0.5 * eps**2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    return (log_joint(z) - log_q).mean()
"""

#: fit_bbvi's held elbo, built by hand: the judge answers it only while fit_bbvi is checked.
PROXY_ELBO = """
from autograder.probes import Held

def elbo(log_joint, mu, log_sigma, eps):
    return Held("elbo")(log_joint, mu, log_sigma, eps)
"""

#: The stand-in as the public checks make it (a public closed form until issue 19 item 2):
#: next to a submission the hidden checks are absent, so held_for makes no stand-in at all.
HELD_TABLE_ELBO = """
def elbo(log_joint, mu, log_sigma, eps):
    from autograder.checks.elbo import held_for

    return held_for("fit_bbvi")["elbo"](log_joint, mu, log_sigma, eps)
"""


@pytest.mark.slow
def test_the_judge_refuses_fit_bbvi_s_held_elbo_to_elbo(tmp_path: Path) -> None:
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    for student, source in (
        ("honest", HONEST_ELBO),
        ("proxy", PROXY_ELBO),
        ("table", HELD_TABLE_ELBO),
    ):
        cells = [
            ELBO_IMPORTS,
            b.solution_cell(source, "elbo"),
            b.grade_cell("elbo", 4),
        ]
        b.write_submission(submitted, student, b.notebook(cells), "04_elbo")
    done = b.run_autograde(submitted, out, "--jobs", "2", "--timeout", "300")
    assert done.returncode == 0, done.stderr[-3000:]
    # The other tasks of 04_elbo are missing from these notebooks (zero for everyone).
    honest = b.results(out, "honest", "04_elbo")
    assert b.task_scores(honest)["elbo"] == 4, honest["output"]
    assert "forbidden" not in honest["extra_data"]["flags"]
    proxy = b.results(out, "proxy", "04_elbo")
    assert b.task_scores(proxy)["elbo"] == 0, proxy["output"]
    assert "forbidden" in proxy["extra_data"]["flags"]
    assert "held-correct" in json.dumps(proxy)
    table = b.results(out, "table", "04_elbo")
    assert b.task_scores(table)["elbo"] == 0, table["output"]
