"""The 04_elbo checks' own oracles, problems and targets are right (independently of the corpus)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from autograder import transport
from autograder.checks import elbo as checks
from course_lib.reference import elbo as reference

PROBLEMS = [
    checks.Conjugate(dim, n, seed, 5)
    for dim, n, seed in ((2, 3, 0), (3, 5, 7), (4, 2, 2**32 - 1))
]
CASES = [
    checks.QCase(t, d, 4, s)
    for t, d, s in (("conjugate", 3, 1), ("logistic", 4, 2), ("bimodal", 2, 3))
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_problems_exclude_bug_hiding_values(problem: checks.Conjugate) -> None:
    model = problem.model
    mean, log_sigma = problem.posterior()
    assert abs(model.prior_std - 1) >= 0.15 and abs(model.noise_std - 1) >= 0.15
    assert abs(float(log_sigma[0])) >= 0.15
    assert torch.all(mean.abs() >= 0.1) and torch.all(mean.abs() <= 3.0)
    assert len(repr(problem)) < 50 and "_cache" not in repr(problem)


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_zero_variance_oracle_holds_for_the_reference(
    problem: checks.Conjugate,
) -> None:
    mu, log_sigma = problem.posterior()
    for row in problem.eps:
        value = reference.elbo(problem.model, mu, log_sigma, row[None])
        assert float(value) == pytest.approx(problem.log_evidence, rel=1e-12)
    eps = checks.moment_matched(problem.eps)
    assert float(
        reference.elbo_entropy_form(problem.model, mu, log_sigma, eps)
    ) == pytest.approx(problem.log_evidence, rel=1e-12)


def test_moment_matched_noise_has_mean_zero_and_variance_one() -> None:
    eps = checks.moment_matched(PROBLEMS[1].eps)
    assert torch.allclose(eps.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(
        eps.square().mean(0), torch.ones(3, dtype=torch.float64), atol=1e-12
    )


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pathwise_closed_form_matches_autograd_of_the_reference(
    case: checks.QCase,
) -> None:
    mu, log_sigma = case.mu.requires_grad_(True), case.log_sigma.requires_grad_(True)
    grads = torch.autograd.grad(
        reference.elbo(case.model, mu, log_sigma, case.eps), (mu, log_sigma)
    )
    for got, want in zip(
        checks.pathwise_expected(case.model, case.mu, case.log_sigma, case.eps), grads
    ):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", checks.TABULATED_SCORE_CASES, ids=repr)
def test_tabulated_score_grads_are_the_reference_s(case: checks.QCase) -> None:
    # The table is the reference's float64 output written to disk: equal to round-off.
    want = reference.elbo_score_grad(case.model, case.mu, case.log_sigma, case.z)
    for got, w in zip(checks.tabulated_score(case), want, strict=True):
        assert torch.allclose(got, w, rtol=1e-12, atol=1e-12)


def test_kl_to_posterior_matches_torch_distributions() -> None:
    problem = PROBLEMS[1]
    mu, log_sigma = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([-0.5, 0.2, -1.1])
    post_mu, post_ls = problem.posterior()
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu.double(), log_sigma.double().exp()),
        torch.distributions.Normal(post_mu, post_ls.exp()),
    ).sum()
    assert checks.kl_to_posterior(mu, log_sigma, problem.model) == pytest.approx(
        float(want), rel=1e-10
    )
    assert checks.kl_to_posterior(post_mu, post_ls, problem.model) == pytest.approx(
        0.0, abs=1e-12
    )


def test_targets_cross_to_the_worker_and_behave() -> None:
    model = PROBLEMS[0].model
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    for target in (
        checks.ValuesOnly(model, 1.0),
        checks.Offset(model, 1.0),
        checks.Recorder(model),
    ):
        (args, _) = transport.unpickle_args(transport.pickle_args((target,), {}))
        copy = args[0]
        assert torch.allclose(
            copy(z).detach(), model(z).detach() + getattr(target, "offset", 0.0)
        )
    assert not checks.ValuesOnly(model)(z).requires_grad
    recorder = checks.Recorder(model)
    recorder(z[:4])
    recorder(z)
    assert pickle.loads(pickle.dumps(recorder)).rows == [4, 6]


def test_reference_fit_is_invariant_to_constants_with_the_pathwise_estimator() -> None:
    model = PROBLEMS[0].model
    plain = reference.fit_bbvi(model, 2, num_steps=20, num_samples=5, seed=3)
    shifted = reference.fit_bbvi(
        checks.Offset(model, 500.0), 2, num_steps=20, num_samples=5, seed=3
    )
    assert torch.equal(plain[0], shifted[0]) and torch.equal(plain[1], shifted[1])
    assert np.allclose(np.array(shifted[2]) - np.array(plain[2]), 500.0)


# --------------------------------------------------------------------------- which q?

FULLCOV = [checks.FullCovCase(d, s, seed) for d, s, seed in ((2, 3, 0), (5, 2, 9))]
MIXTURES = [
    checks.MixtureCase(k, d, s, seed, where)
    for k, d, s, seed, where in (
        (2, 3, 5, 0, "near"),
        (4, 2, 3, 1, "far"),
        (3, 2, 7, 2**32 - 1, "mixed"),
    )
]


@pytest.mark.parametrize("case", FULLCOV, ids=repr)
def test_fullcov_cases_exclude_bug_hiding_values(case: checks.FullCovCase) -> None:
    raw = case.raw_tril
    d = case.dim
    assert torch.all(raw.diagonal().abs() >= 0.15)
    lower, upper = torch.tril_indices(d, d, -1), torch.triu_indices(d, d, 1)
    assert torch.all(raw[lower[0], lower[1]].abs() >= 0.2)
    assert torch.all(raw[upper[0], upper[1]].abs() >= 0.5)
    assert not torch.allclose(raw, raw.T)
    assert torch.all(case.mu.abs() >= 0.2) and case.eps.shape == (case.num_samples, d)
    assert len(repr(case)) < 50


@pytest.mark.parametrize("case", FULLCOV, ids=repr)
def test_fullcov_closed_forms_agree_with_the_reference(
    case: checks.FullCovCase,
) -> None:
    tril = checks.cholesky_factor(case.raw_tril)
    assert torch.allclose(
        reference.fullcov_rsample(case.mu, case.raw_tril, case.eps),
        case.mu + case.eps @ tril.T,
        rtol=1e-14,
    )


def _mixture_oracle(
    z: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor
) -> torch.Tensor:
    """torch.distributions' mixture log density (here in the tests: the public checks ship
    no implementation of a graded task, issue 19)."""
    dist = torch.distributions
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits),
        dist.Independent(dist.Normal(mu, torch.exp(log_sigma)), 1),
    ).log_prob(z)


def test_the_tabulated_mixtures_are_current_and_cover_near_far_and_mixed() -> None:
    """scripts/tabulate_answers.py wrote them from the reference for these very cases; they
    agree with torch.distributions (values and gradients, to 1e-10 relative: two float64
    log-sum-exps differing in summation order; far values are of order 1e4, so their round-off
    is 1e-12 of the value), and each has S apart from K and D."""
    cases = checks.TABULATED_MIXTURES
    assert len(set(cases)) == len(cases)
    assert {c.where for c in cases} == {"near", "far", "mixed"}
    for case in cases:
        assert case.num_samples not in (case.k, case.dim)
        z, *params = case.args()
        leaves = [p.clone().requires_grad_(True) for p in params]
        value = _mixture_oracle(z, *leaves)
        grads = torch.autograd.grad(value, leaves, case.cotangent)
        shipped = checks.tabulated_mixture(case)
        for field, want in zip(shipped, (value, *grads), strict=True):
            scale = float(want.detach().abs().max())
            np.testing.assert_allclose(
                shipped[field].numpy(),
                want.detach().numpy(),
                rtol=1e-10,
                atol=1e-12 * scale,
                err_msg=f"{case} {field}: rerun scripts/tabulate_answers.py",
            )
    with pytest.raises(KeyError, match="no tabulated answer"):
        checks.tabulated_mixture(checks.MixtureCase(3, 2, 5, 999))


@pytest.mark.parametrize("case", MIXTURES, ids=repr)
def test_mixture_cases_far_points_underflow_every_component(
    case: checks.MixtureCase,
) -> None:
    z, logits, mu, log_sigma = case.args()
    probs = torch.softmax(logits, 0)
    assert float(probs.max() / probs.min()) >= 1.5 - 1e-12
    assert torch.all((log_sigma.abs() >= 0.15) & (mu.abs() >= 0.2))
    per = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z[:, None]).sum(-1)
    far = per.max(1).values < -745.0  # exp underflows to 0 in float64 below about -745
    naive = torch.log((probs * per.exp()).sum(1))
    if case.where == "far":
        assert far.all()
    if case.where == "mixed":
        assert far.any() and (~far).any()
    assert torch.equal(torch.isinf(naive), far)
    oracle = _mixture_oracle(z, logits, mu, log_sigma)
    assert torch.isfinite(oracle).all()
    assert torch.allclose(
        reference.mixture_log_prob(z, logits, mu, log_sigma), oracle, rtol=1e-12
    )
    assert len(repr(case)) < 60
