"""The em checks: strategies keep bug-hiding values out, and feedback names the bug."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from autograder.checks.em import (
    EXAMPLES,
    KINDS,
    TABULATED,
    Mixture,
    Right,
    far_arrays,
    ill_conditioned_arrays,
    make_arrays,
    mixtures,
    right,
    tiny_determinant_arrays,
)
from autograder.grade import run_task
from autograder.hidden.em import right_of
from autograder.subject import LocalSubject
from course_lib.reference import em as reference
from tests import corpus

REFERENCE_NAMES = {name: getattr(reference, name) for name in reference.__all__}


def test_a_mixture_prints_as_its_sizes_and_seed() -> None:
    assert repr(Mixture(3, 2, 4, 0)) == "Mixture(N=3, K=2, D=4, seed=0)"
    assert Mixture(3, 2, 4, 0) == Mixture(3, 2, 4, 0) != Mixture(3, 2, 4, 1)


@given(problem=mixtures())
def test_mixtures_exclude_bug_hiding_values(problem: Mixture) -> None:
    X, weights, means, covs = make_arrays(problem)
    n, k, d = problem.n_points, problem.n_components, problem.dim
    assert len({n, k, d}) == 3, "N, K, D must be pairwise distinct"
    assert (
        X.shape == (n, d)
        and weights.shape == (k,)
        and means.shape == (k, d)
        and covs.shape == (k, d, d)
    )
    assert abs(weights.sum() - 1) < 1e-12
    assert np.min(np.diff(np.sort(weights))) > 0.3 / (k * (k + 1)), (
        "weights must be distinct"
    )
    off_diagonal = covs[:, ~np.eye(d, dtype=bool)]
    assert np.all(np.abs(off_diagonal).max(axis=1) > 1e-3), (
        "covariances must be full, not diagonal"
    )
    assert np.all(np.linalg.eigvalsh(covs) > 0)
    assert not np.allclose(covs, np.eye(d)), (
        "identity covariances hide Sigma / Sigma^-1 confusions"
    )
    assert not np.allclose(covs[0], covs[1]), (
        "equal covariances hide a dropped normaliser"
    )


def test_the_tabulated_answers_are_current_and_their_mixtures_distinct() -> None:
    """scripts/tabulate_answers.py wrote them from the reference for these very arrays.

    Equal to 1e-12 relative: the same float64 computation, up to BLAS summation order."""
    assert len(set(TABULATED)) == len(TABULATED) and set(EXAMPLES) <= set(TABULATED)
    for problem in TABULATED:
        assert len({problem.n_points, problem.n_components, problem.dim}) == 3
        for kind, build in KINDS.items():
            shipped, fresh = right(problem, kind), right_of(build(problem))
            for field in Right.FIELDS:
                np.testing.assert_allclose(
                    getattr(shipped, field),
                    getattr(fresh, field),
                    rtol=1e-12,
                    err_msg=f"{problem} {kind} {field}: rerun scripts/tabulate_answers.py",
                )


def test_an_untabulated_mixture_has_no_public_answer() -> None:
    with pytest.raises(KeyError, match="no tabulated answer"):
        right(Mixture(3, 2, 4, 999))


@pytest.mark.parametrize(
    "build", [far_arrays, ill_conditioned_arrays, tiny_determinant_arrays]
)
def test_extreme_problems_are_what_they_claim(build) -> None:
    X, weights, means, covs = build(EXAMPLES[0])
    assert np.all(np.linalg.eigvalsh(covs) > 0)
    log_p = reference.log_joint(X, weights, means, covs)
    assert np.all(np.isfinite(log_p))
    if build is far_arrays:
        assert (
            log_p.max() < -1e6
        )  # thousands of standard deviations from every component
    if build is ill_conditioned_arrays:
        assert np.linalg.cond(covs).min() > 1e6
    if build is tiny_determinant_arrays:
        assert (
            np.all(np.linalg.det(covs) == 0.0) and log_p.max(axis=1).min() > 709
        )  # det underflows, exp overflows


@pytest.mark.parametrize(
    ("task", "name", "words"),
    [
        ("log_joint", "log_joint_missing_weights", "without log pi_k"),
        ("log_joint", "log_joint_drops_normaliser", "normaliser"),
        ("log_joint", "log_joint_sigma_not_inverse", "instead of its inverse"),
        ("log_joint", "log_joint_returns_k_by_n", "(K, N)"),
        ("log_joint", "log_joint_log_of_det", "slogdet"),
        ("log_joint", "log_joint_float32", "float32"),
        ("e_step", "e_step_normalises_over_data", "data axis"),
        ("e_step", "e_step_naive_exp", "logsumexp"),
        ("e_step", "e_step_missing_weights", "weights"),
        ("e_step", "e_step_hard_assignments", "hard (one-hot)"),
        ("e_step", "e_step_returns_log_resp", "log-responsibilities"),
        ("e_step", "e_step_centres_X_in_place", "`X` in place"),
        ("e_step", "e_step_loglik_mean_over_points", "mean over points"),
        ("e_step", "e_step_clamps_without_renormalising", "renormalise"),
        ("free_energy", "free_energy_nan_at_zero", "0 * log 0"),
        ("free_energy", "free_energy_missing_entropy", "entropy term is missing"),
        ("free_energy", "free_energy_wrong_sign", "sign is flipped"),
        ("free_energy", "free_energy_ignores_q", "does not depend on q"),
    ],
)
def test_public_feedback_names_the_bug(task: str, name: str, words: str) -> None:
    entry = next(e for e in corpus.load(("em",)) if e.name == name)
    results = run_task(task, LocalSubject(corpus.namespace(entry)), ("public",))
    feedback = [r.feedback for r in results if not r.passed]
    assert any(words in text for text in feedback), feedback
    # The smallest failing input is shown once per task, with the first failure
    # (autograder.feedback.one_cause), not repeated under every later one.
    assert "Mixture(N=" in feedback[0], "the smallest failing input must be shown"
    assert sum("Smallest failing input" in text for text in feedback) == 1, feedback


def test_a_wrong_return_type_is_feedback_not_a_grader_error() -> None:
    def e_step(X, weights, means, covs):
        return reference.e_step(X, weights, means, covs)[0]  # forgot the log-likelihood

    results = run_task(
        "e_step", LocalSubject({**REFERENCE_NAMES, "e_step": e_step}), ("public",)
    )
    assert not any(r.passed for r in results)
    assert all("expected a pair (resp, log_likelihood)" in r.feedback for r in results)
    assert not any("grader_error" in r.flags for r in results)


def test_array_likes_are_accepted() -> None:
    def log_joint(X, weights, means, covs):
        return reference.log_joint(X, weights, means, covs).tolist()

    results = run_task(
        "log_joint",
        LocalSubject({**REFERENCE_NAMES, "log_joint": log_joint}),
        ("public",),
    )
    assert all(r.passed for r in results), [r.feedback for r in results if not r.passed]


def test_the_corpus_covers_every_task() -> None:
    entries = [e for e in corpus.load(("em",)) if e.name != "reference"]
    for task in ("log_joint", "e_step", "free_energy"):
        kinds = [e.kind for e in entries if e.task == task]
        assert kinds.count("variant") >= 3 and kinds.count("mutant") >= 8, task
