"""Score-function estimators against closed forms, enumeration and torch autograd."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Categorical, Normal

from course_lib.reference.score import (
    gaussian_score,
    score_function_grad,
    score_function_grad_loo,
)

# Two-sided z for a family false-failure rate of 1e-6 per test over its coordinates.
Z_1E6 = 4.89


def normal(mu, log_sigma):
    return Normal(mu, log_sigma.exp())


def shifted_square(k):
    def f(z, mu, log_sigma):
        return (z - k).square().sum(-1)

    return f


@given(st.integers(0, 2**32 - 1), st.integers(2, 5), st.integers(3, 9))
def test_gaussian_score_matches_autograd_of_log_prob(seed, dim, samples):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    log_sigma = 0.5 * torch.randn(dim, generator=g, dtype=torch.float64)
    z = torch.randn(samples, dim, generator=g, dtype=torch.float64) * 2
    d_mu, d_log_sigma = gaussian_score(z, mu, log_sigma)
    for s in range(samples):
        m, ls = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
        grads = torch.autograd.grad(Normal(m, ls.exp()).log_prob(z[s]).sum(), (m, ls))
        torch.testing.assert_close(d_mu[s], grads[0])
        torch.testing.assert_close(d_log_sigma[s], grads[1])


@pytest.mark.parametrize("estimator", [score_function_grad, score_function_grad_loo])
def test_unbiased_for_shifted_square(estimator):
    """1-D f = (z - k)^2 at mu=0.7, sigma=1.6, k=-0.5: E[g] = (2(mu-k), 2 sigma^2) for (mu, log sigma).

    Known per-sample variance of the plain estimator (anchors §2.2) bounds the LOO one too
    (its variance is lower here). n = 400,000 >> 100 skew^2; false-failure probability 1e-6.
    """
    mu, log_sigma, k = (
        torch.tensor([0.7], dtype=torch.float64),
        torch.tensor([math.log(1.6)], dtype=torch.float64),
        -0.5,
    )
    sigma, m, n = 1.6, 0.7 - k, 400_000
    torch.manual_seed(0)
    grad_mu, grad_log_sigma = estimator(shifted_square(k), normal, (mu, log_sigma), n)
    std_mu = math.sqrt(m**4 / sigma**2 + 14 * m**2 + 15 * sigma**2)
    std_log_sigma = sigma * math.sqrt(2 * m**4 / sigma**2 + 60 * m**2 + 74 * sigma**2)
    assert abs(grad_mu.item() - 2 * m) < Z_1E6 * std_mu / math.sqrt(n)
    assert abs(
        grad_log_sigma.item() - 2 * sigma**2
    ) < Z_1E6 * std_log_sigma / math.sqrt(n)


def test_loo_has_much_lower_variance_when_f_has_a_large_mean():
    """f = (z - 1)^2 + 50 over 300 replicates of S=8: the true variance ratio is > 100; we assert > 10.

    log-variance ratio SE is about sqrt((kurtosis sum)/300) < 0.5, so 10 is > 4 SE below the truth.
    """
    mu, log_sigma = (
        torch.tensor([0.3], dtype=torch.float64),
        torch.tensor([-0.4], dtype=torch.float64),
    )

    def f(z, mu, log_sigma):
        return (z - 1.0).square().sum(-1) + 50.0

    plain, loo = [], []
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        z = mu + log_sigma.exp() * torch.randn(8, 1, generator=g, dtype=torch.float64)
        plain.append(score_function_grad(f, normal, (mu, log_sigma), 8, z=z)[0])
        loo.append(score_function_grad_loo(f, normal, (mu, log_sigma), 8, z=z)[0])
    assert torch.stack(plain).var() / torch.stack(loo).var() > 10


def _enumerated_expectation(estimator, f, make_q, params, support):
    """E_q[g] computed exactly: sum over the support of q(z) * g(z) with one sample at z."""
    q = make_q(*params)
    total = [torch.zeros_like(p) for p in params]
    for value in support:
        z = value.reshape(1, *value.shape)
        weight = q.log_prob(value).sum().exp().detach()
        for acc, g in zip(total, estimator(f, make_q, params, 1, z=z)):
            acc += weight * g
    return total


def test_bernoulli_expectation_is_exact_by_enumeration():
    logits = torch.tensor([0.4, -1.2], dtype=torch.float64)

    def make_q(logits):
        return Bernoulli(logits=logits)

    def f(z, logits):  # depends on the parameter too: the grad-f term matters
        return (
            (z - 0.3).square() * torch.tensor([2.0, -1.0], dtype=torch.float64)
        ).sum(-1) + (logits * z).sum(-1)

    support = [
        torch.tensor([a, b], dtype=torch.float64)
        for a in (0.0, 1.0)
        for b in (0.0, 1.0)
    ]
    (expected,) = _enumerated_expectation(
        score_function_grad, f, make_q, (logits,), support
    )
    leaf = logits.clone().requires_grad_()
    q = make_q(leaf)
    exact = sum(q.log_prob(z).sum().exp() * f(z[None], leaf)[0] for z in support)
    torch.testing.assert_close(expected, torch.autograd.grad(exact, leaf)[0])


def test_categorical_expectation_is_exact_by_enumeration():
    logits = torch.tensor([0.1, 1.0, -0.7, 0.4], dtype=torch.float64)
    values = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)

    def make_q(logits):
        return Categorical(logits=logits)

    def f(z, logits):
        return values[z]

    support = [torch.tensor(i) for i in range(4)]
    (expected,) = _enumerated_expectation(
        score_function_grad, f, make_q, (logits,), support
    )
    leaf = logits.clone().requires_grad_()
    exact = (torch.softmax(leaf, 0) * values).sum()
    torch.testing.assert_close(expected, torch.autograd.grad(exact, leaf)[0])


def test_params_untouched_and_no_grad_left():
    mu = torch.tensor([0.5, -0.2], dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor([0.3, -0.6], dtype=torch.float64, requires_grad=True)
    before = (mu.detach().clone(), log_sigma.detach().clone())
    for estimator in (score_function_grad, score_function_grad_loo):
        grads = estimator(shifted_square(1.0), normal, (mu, log_sigma), 5)
        assert [g.shape for g in grads] == [mu.shape, log_sigma.shape]
    assert mu.grad is None and log_sigma.grad is None
    assert torch.equal(mu.detach(), before[0]) and torch.equal(
        log_sigma.detach(), before[1]
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: score_function_grad_loo(
                shifted_square(0), normal, (torch.zeros(1), torch.zeros(1)), 1
            ),
            "num_samples >= 2",
        ),
        (
            lambda: score_function_grad(shifted_square(0), normal, torch.zeros(1), 3),
            "tuple of tensors",
        ),
        (
            lambda: score_function_grad(
                shifted_square(0),
                normal,
                (torch.zeros(1), torch.zeros(1)),
                3,
                z=torch.zeros(2, 1),
            ),
            "num_samples",
        ),
        (
            lambda: score_function_grad(
                lambda z, *p: z, normal, (torch.zeros(2), torch.zeros(2)), 3
            ),
            r"shape \(3,\)",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# --------------------------------------------------------------------------- optimal_baseline


def test_optimal_baseline_minimises_the_sample_variance_objective() -> None:
    # independent oracle: minimise mean((f - b)^2 s^2) over b numerically, coordinate by coordinate
    from scipy.optimize import minimize_scalar

    from course_lib.reference.score import optimal_baseline

    generator = torch.Generator().manual_seed(3)
    scores = (
        torch.randn(7, 3, generator=generator, dtype=torch.float64),
        torch.randn(7, 2, 2, generator=generator, dtype=torch.float64),
    )
    f_values = (
        5.0
        + scores[0][:, 0] ** 2
        + torch.randn(7, generator=generator, dtype=torch.float64)
    )
    baselines = optimal_baseline(f_values, scores)
    for b, score in zip(baselines, scores):
        assert b.shape == score.shape[1:]
        flat_scores, flat_b = score.reshape(7, -1).numpy(), b.reshape(-1).numpy()
        f = f_values.numpy()
        for i in range(flat_scores.shape[1]):
            s2 = flat_scores[:, i] ** 2
            best = minimize_scalar(
                lambda c: float(((f - c) ** 2 * s2).mean()), tol=1e-12
            )
            assert flat_b[i] == pytest.approx(best.x, rel=1e-6)
