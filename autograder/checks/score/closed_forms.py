"""Judge-side maths of ``02_score`` that answers no graded task for a submission's inputs.

The tabulated right scores and exact estimates (``autograder/checks/score_answers.py``) read
back, the integrand's own gradient, autograd of ``torch.distributions`` (needs the distribution,
no answer key), and the laws of the estimators (mean and per-sample variance by Gauss-Hermite
quadrature or enumeration) that the statistical tier tests against."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from torch import Tensor
from torch.distributions import (
    Normal,
)

from autograder import tables
from autograder.checks.score.probes import ParamDependentCost
from autograder.checks.score.problems import (
    SCORE_FIELDS,
    Built,
    Case,
    GaussianScoreCase,
    estimate_key,
    score_key,
)


def tabulated_scores(case: GaussianScoreCase) -> tuple[Tensor, Tensor]:
    """The tabulated right ``(d_mu, d_log_sigma)`` of ``case``.

    Raises:
        KeyError: ``case`` is not in :data:`TABULATED_SCORES` (a public check drew it elsewhere).
    """
    table = tables.load("autograder.checks.score_answers")
    if score_key(case, "d_mu") not in table:
        raise KeyError(f"no tabulated answer for {case!r}")
    d_mu, d_log_sigma = (
        torch.from_numpy(table[score_key(case, f)]) for f in SCORE_FIELDS
    )
    return d_mu, d_log_sigma


def _grad_f(built: Built) -> list[Tensor]:
    if isinstance(built.f, ParamDependentCost):
        return list(built.f.grads(built.z, *built.params))
    return [
        torch.zeros((built.z.shape[0], *p.shape), dtype=torch.float64)
        for p in built.params
    ]


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def _leave_one_out(values: Tensor) -> Tensor:
    """Mean of the other samples' values, :math:`b_s = (S\bar f - f_s)/(S-1)` (SPEC's definition)."""
    count = len(values)
    return (count * values.mean() - values) / (count - 1)


@dataclass
class Expected:
    """The exact estimate on given samples, with the magnitudes of its parts (for tolerances)."""

    grads: list[Tensor]
    scale: float
    parts: dict[str, list[Tensor]]


def tabulated_estimate(case: Case, loo: bool) -> Expected:
    """The exact estimate of ``case`` on its given samples (plain, or with the leave-one-out
    baseline), with its known wrong variants, as tabulated from the reference.

    Raises:
        KeyError: ``case`` is not among the tabulated cases.
    """
    table = tables.load("autograder.checks.score_answers")
    prefix = estimate_key(case, loo, "")
    if prefix + "scale" not in table:
        raise KeyError(f"no tabulated estimate for {case!r}")
    grads: list[Tensor] = []
    parts: dict[str, list[Tensor]] = {}
    for key in sorted(k for k in table if k.startswith(prefix)):
        rest = key[len(prefix) :].split("/")
        if rest[0] == "grads":
            grads.append(torch.from_numpy(table[key]))
        elif rest[0] == "parts":
            parts.setdefault(rest[1], []).append(torch.from_numpy(table[key]))
    return Expected(grads, float(table[prefix + "scale"]), parts)


@dataclass(frozen=True)
class Law:
    """The exact law of one sample's :math:`(f, \\nabla\\log q)` as weighted points (quadrature or enumeration)."""

    weights: np.ndarray  # (N,), sums to 1
    f: np.ndarray  # (N,)
    scores: np.ndarray  # (N, C) coordinates of every parameter, flattened
    truth: np.ndarray  # (C,) exact gradient of E f


def estimator_law(case: Case, offset: float = 0.0, nodes: int = 80) -> Law:
    """The law of a single sample for a ``gaussian`` (cosine cost) or ``bernoulli`` (table) case."""
    built = case.build(offset)
    if case.family == "gaussian":
        mu, log_sigma = (p.numpy() for p in built.params)
        x, w = hermegauss(nodes)
        w = w / math.sqrt(2.0 * math.pi)
        grids = np.meshgrid(*([x] * case.D), indexing="ij")
        eps = np.stack([g.ravel() for g in grids], axis=1)
        weights = np.prod(np.meshgrid(*([w] * case.D), indexing="ij"), axis=0).ravel()
        sigma = np.exp(log_sigma)
        z = torch.from_numpy(mu + sigma * eps)
        f = built.f(z).numpy()
        scores = np.concatenate([eps / sigma, eps**2 - 1], axis=1)
        truth = np.concatenate(
            [t.numpy() for t in built.f.expectation_grads(*built.params)]
        )
        check_truth = (weights[:, None] * f[:, None] * scores).sum(axis=0)
        if not np.allclose(
            check_truth, truth, rtol=1e-9, atol=1e-11
        ):  # grader self-check
            raise RuntimeError(
                "Gauss-Hermite quadrature disagrees with the closed form"
            )
        return Law(weights, f, scores, truth)
    if case.family == "bernoulli":
        (logits,) = built.params
        support = ((torch.arange(2**case.D)[:, None] >> torch.arange(case.D)) & 1).to(
            torch.float64
        )
        q = built.make_q(logits)
        weights = torch.exp(q.log_prob(support).sum(dim=1)).numpy()
        f = built.f(support).numpy()
        scores = (support - torch.sigmoid(logits)).numpy()
        truth = (weights[:, None] * f[:, None] * scores).sum(axis=0)
        return Law(weights, f, scores, truth)
    raise ValueError(f"no exact law for {case.family!r}")


def _moments(
    law: Law, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance, |skewness| and kurtosis of ``values`` (N, C) under the law's weights."""
    w = law.weights[:, None]
    mean = (w * values).sum(axis=0)
    centred = values - mean
    var = (w * centred**2).sum(axis=0)
    skew = np.abs((w * centred**3).sum(axis=0)) / var**1.5
    kurt = (w * centred**4).sum(axis=0) / var**2
    return mean, var, skew, kurt


def plain_moments(law: Law) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Moments of one sample of the plain estimator :math:`f(z)\\nabla\\log q(z)`."""
    return _moments(law, law.f[:, None] * law.scores)


def centred_moments(law: Law) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Moments of :math:`(f - Ef)\nabla\log q`, the leading term of the leave-one-out estimator."""
    centred = law.f - (law.weights * law.f).sum()
    return _moments(law, centred[:, None] * law.scores)


def loo_variance(law: Law, S: int) -> np.ndarray:
    r"""Exact variance of the leave-one-out estimator with ``S`` samples.

    It equals the U-statistic with kernel :math:`\tfrac12 (f_x - f_y)(h_x - h_y)` (the unbiased
    sample covariance of :math:`f` and :math:`h = \nabla\log q`), so with :math:`F = f - Ef`:
    :math:`\operatorname{Var} = \frac{S-2}{S(S-1)}\operatorname{Var}(Fh) + \frac{1}{S(S-1)}(E[F^2h^2] + E[F^2]E[h^2])`.
    """
    w = law.weights[:, None]
    F = (law.f - (law.weights * law.f).sum())[:, None]
    Fh = F * law.scores
    var_Fh = (w * Fh**2).sum(axis=0) - (w * Fh).sum(axis=0) ** 2
    second = (w * Fh**2).sum(axis=0) + (w * F**2).sum(axis=0) * (w * law.scores**2).sum(
        axis=0
    )
    return (S - 2) / (S * (S - 1)) * var_Fh + second / (S * (S - 1))


def _normal(mu: Tensor, log_sigma: Tensor) -> Normal:
    return Normal(mu, torch.exp(log_sigma))


def _autograd_scores(
    make_q: Callable[[Tensor, Tensor], Any], z: Tensor, mu: Tensor, log_sigma: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample gradients of ``make_q(mu, log_sigma).log_prob`` by autograd (parameters
    expanded per sample). The distribution is an argument: torch's autograd is the only
    implementation here, nothing that takes ``gaussian_score``'s inputs (issue 19)."""
    with torch.enable_grad():
        mu_s = mu.detach().expand_as(z).clone().requires_grad_(True)
        log_sigma_s = log_sigma.detach().expand_as(z).clone().requires_grad_(True)
        log_q = make_q(mu_s, log_sigma_s).log_prob(z.detach()).sum()
        d_mu, d_log_sigma = torch.autograd.grad(log_q, (mu_s, log_sigma_s))
    return d_mu, d_log_sigma
