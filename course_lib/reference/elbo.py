r"""Reference solutions for ``04_elbo``: the ELBO and black-box variational inference.

:math:`\mathcal{L}(\lambda) = \mathbb{E}_{q}[\log p(x, z)] - \mathbb{E}_{q}[\log q(z \mid \lambda)]`
for a mean-field Gaussian :math:`q = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)`,
:math:`\sigma = e^{\log\sigma}`.

References:
    Ranganath, Gerrish & Blei (2014), "Black Box Variational Inference";
    Kucukelbir et al. (2017), "Automatic Differentiation Variational Inference".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from course_lib._validate import check_tensor, per_sample
from course_lib.reference.score import gaussian_score

__all__ = [
    "elbo",
    "elbo_entropy_form",
    "elbo_score_grad",
    "fit_bbvi",
    "fullcov_entropy",
    "fullcov_rsample",
    "gaussian_entropy",
    "mean_field_sigma",
    "mixture_log_prob",
    "mixture_score_surrogate",
]

LogJoint = Callable[[Tensor], Tensor]
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_entropy(log_sigma: Tensor) -> Tensor:
    r"""Entropy :math:`H(q) = \sum_d (\log\sigma_d + \tfrac12 \log 2\pi e)` (a scalar)."""
    check_tensor("log_sigma", log_sigma)
    return log_sigma.sum() + log_sigma.numel() * (_HALF_LOG_2PI + 0.5)


def _gaussian_log_density(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """:math:`\\log q(z_s)` for each row of ``z``: shape ``(S,)``."""
    standardized = (z - mu) / torch.exp(log_sigma)
    return (-0.5 * standardized.square() - log_sigma - _HALF_LOG_2PI).sum(dim=-1)


def _samples(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    check_tensor("eps", eps)
    if eps.ndim != 2 or eps.shape[1] != mu.shape[-1]:
        raise ValueError(
            f"eps must have shape (S, {mu.shape[-1]}), got {tuple(eps.shape)}"
        )
    return mu + torch.exp(log_sigma) * eps


def elbo(log_joint: LogJoint, mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    r"""Monte Carlo ELBO :math:`\frac1S\sum_s [\log p(x, z_s) - \log q(z_s)]`, :math:`z_s = \mu + \sigma\epsilon_s`.

    Differentiable in ``mu`` and ``log_sigma`` (the total derivative, through both the
    sample and the density).

    Args:
        log_joint: ``log_joint(z) -> (S,)``, :math:`\log p(x, z)` with the data fixed.
        mu: Mean, shape ``(D,)``.
        log_sigma: Log standard deviation, shape ``(D,)``.
        eps: Standard normal noise, shape ``(S, D)``.

    Returns:
        A scalar tensor.
    """
    z = _samples(mu, log_sigma, eps)
    log_p = per_sample("log_joint", log_joint(z), eps.shape[0])
    return (log_p - _gaussian_log_density(z, mu, log_sigma)).mean()


def elbo_entropy_form(
    log_joint: LogJoint, mu: Tensor, log_sigma: Tensor, eps: Tensor
) -> Tensor:
    r"""ELBO with the entropy in closed form: :math:`\frac1S\sum_s \log p(x, z_s) + H(q)`."""
    z = _samples(mu, log_sigma, eps)
    log_p = per_sample("log_joint", log_joint(z), eps.shape[0])
    return log_p.mean() + gaussian_entropy(log_sigma)


def elbo_score_grad(
    log_joint: LogJoint, mu: Tensor, log_sigma: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    r"""BBVI score gradient :math:`\frac1S\sum_s \nabla_\lambda \log q(z_s|\lambda)\,(\log p(x, z_s) - \log q(z_s|\lambda))`.

    Args:
        log_joint: ``log_joint(z) -> (S,)``.
        mu: Mean, shape ``(D,)``.
        log_sigma: Log standard deviation, shape ``(D,)``.
        z: Samples from :math:`q`, shape ``(S, D)``.

    Returns:
        ``(grad_mu, grad_log_sigma)``, each of shape ``(D,)``.
    """
    z, mu, log_sigma = (t.detach() for t in (z, mu, log_sigma))
    with torch.no_grad():
        weight = per_sample(
            "log_joint", log_joint(z), z.shape[0]
        ) - _gaussian_log_density(z, mu, log_sigma)
    d_mu, d_log_sigma = gaussian_score(z, mu, log_sigma)
    return (weight[:, None] * d_mu).mean(dim=0), (weight[:, None] * d_log_sigma).mean(
        dim=0
    )


def fit_bbvi(
    log_joint: LogJoint,
    dim: int,
    *,
    estimator: str = "reparam",
    num_steps: int = 2000,
    num_samples: int = 16,
    lr: float = 0.05,
    seed: int = 0,
) -> tuple[Tensor, Tensor, list[float]]:
    r"""Fit :math:`q = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)` by stochastic gradient ascent on the ELBO.

    Adam on :math:`(\mu, \log\sigma)` from :math:`(0, 0)`, with fresh noise each step from a
    generator seeded by ``seed``.

    Args:
        log_joint: ``log_joint(z) -> (S,)`` for ``z`` of shape ``(S, dim)``.
        dim: Latent dimension.
        estimator: ``"reparam"`` (pathwise) or ``"score"`` (BBVI score function).
        num_steps: Optimisation steps.
        num_samples: Monte Carlo samples per step.
        lr: Adam learning rate.
        seed: Seed of the noise generator.

    Returns:
        ``(mu, log_sigma, elbos)``: the fitted parameters (detached, float64) and the
        Monte Carlo ELBO estimate at every step.
    """
    if estimator not in ("reparam", "score"):
        raise ValueError(f'estimator must be "reparam" or "score", got {estimator!r}')
    generator = torch.Generator().manual_seed(seed)
    mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_sigma], lr=lr)
    elbos: list[float] = []
    for _ in range(num_steps):
        eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
        optimizer.zero_grad()
        if estimator == "reparam":
            value = elbo(log_joint, mu, log_sigma, eps)
            (-value).backward()
        else:
            with torch.no_grad():
                z = mu + torch.exp(log_sigma) * eps
                value = (log_joint(z) - _gaussian_log_density(z, mu, log_sigma)).mean()
            grad_mu, grad_log_sigma = elbo_score_grad(log_joint, mu, log_sigma, z)
            mu.grad, log_sigma.grad = -grad_mu, -grad_log_sigma
        optimizer.step()
        elbos.append(float(value.detach()))
    return mu.detach(), log_sigma.detach(), elbos


# --------------------------------------------------------------------------- which q?


def _square(name: str, raw_tril: Tensor) -> None:
    check_tensor(name, raw_tril)
    if raw_tril.ndim != 2 or raw_tril.shape[0] != raw_tril.shape[1]:
        raise ValueError(
            f"{name} must be a square (D, D) matrix, got shape {tuple(raw_tril.shape)}"
        )


def _cholesky_factor(raw_tril: Tensor) -> Tensor:
    r""":math:`L = \operatorname{tril}(R, -1) + \operatorname{diag}(e^{\operatorname{diag} R})`: lower triangular, positive diagonal."""
    return torch.tril(raw_tril, diagonal=-1) + torch.diag_embed(
        torch.exp(torch.diagonal(raw_tril))
    )


def fullcov_rsample(mu: Tensor, raw_tril: Tensor, eps: Tensor) -> Tensor:
    r"""Reparameterized samples of a full-covariance Gaussian :math:`q = \mathcal{N}(\mu, LL^\top)`.

    :math:`z_s = \mu + L\epsilon_s` with
    :math:`L = \operatorname{tril}(R, -1) + \operatorname{diag}(\exp(\operatorname{diag} R))`
    for the unconstrained ``raw_tril`` :math:`R` (its strict upper triangle is ignored), so
    every real :math:`R` gives a valid Cholesky factor.

    Args:
        mu: Mean, shape ``(D,)``.
        raw_tril: Unconstrained parameters of the Cholesky factor, shape ``(D, D)``.
        eps: Standard normal noise, shape ``(S, D)``.

    Returns:
        Samples of shape ``(S, D)``, differentiable in ``mu`` and ``raw_tril``.
    """
    check_tensor("mu", mu)
    _square("raw_tril", raw_tril)
    check_tensor("eps", eps)
    dim = raw_tril.shape[0]
    if mu.shape != (dim,) or eps.ndim != 2 or eps.shape[1] != dim:
        raise ValueError(
            f"expected mu ({dim},) and eps (S, {dim}), got {tuple(mu.shape)} and {tuple(eps.shape)}"
        )
    # Row s of eps @ L^T is L @ eps_s.
    return mu + eps @ _cholesky_factor(raw_tril).T


def fullcov_entropy(raw_tril: Tensor) -> Tensor:
    r"""Entropy of :math:`\mathcal{N}(\mu, LL^\top)`: :math:`\tfrac12\log\det(2\pi e\,LL^\top) = \sum_d R_{dd} + \tfrac D2\log 2\pi e`.

    :math:`\log\det L = \sum_d \log L_{dd} = \sum_d R_{dd}` because :math:`L` is triangular
    with diagonal :math:`e^{R_{dd}}`.

    Args:
        raw_tril: Unconstrained Cholesky parameters, shape ``(D, D)``.

    Returns:
        A scalar tensor, differentiable in ``raw_tril`` (gradient: the identity matrix).
    """
    _square("raw_tril", raw_tril)
    return torch.diagonal(raw_tril).sum() + raw_tril.shape[0] * _HALF_LOG_2PI_E


def mean_field_sigma(covariance: Tensor) -> Tensor:
    r"""Standard deviations of the best mean-field Gaussian for the target :math:`\mathcal{N}(m, \Sigma)`.

    The ELBO of :math:`q = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)` is, up to a constant,
    :math:`-\tfrac12 \sum_{d,e} \Lambda_{de}(\mu_d - m_d)(\mu_e - m_e) - \tfrac12 \sum_d \Lambda_{dd}\sigma_d^2 + \sum_d \log\sigma_d`
    with :math:`\Lambda = \Sigma^{-1}`; setting its derivative in :math:`\sigma_d` to zero gives
    :math:`\sigma_d = 1/\sqrt{\Lambda_{dd}}` (and :math:`\mu = m`). In 2-D,
    :math:`\sigma_d^2 = (1 - \rho^2)\Sigma_{dd}`: narrower than the marginal.

    Args:
        covariance: Symmetric positive definite :math:`\Sigma`, shape ``(D, D)``.

    Returns:
        :math:`\sigma`, shape ``(D,)``.
    """
    _square("covariance", covariance)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0 or not torch.allclose(covariance, covariance.T):
        raise ValueError("covariance must be symmetric positive definite")
    eye = torch.eye(covariance.shape[0], dtype=covariance.dtype)
    return torch.diagonal(torch.cholesky_solve(eye, factor)).rsqrt()


def mixture_log_prob(
    z: Tensor, logits: Tensor, mu: Tensor, log_sigma: Tensor
) -> Tensor:
    r"""Log density of a mixture of diagonal Gaussians, :math:`\log\sum_k \pi_k \mathcal{N}(z; \mu_k, \operatorname{diag}\sigma_k^2)`.

    :math:`\pi = \operatorname{softmax}(\text{logits})`, :math:`\sigma_k = e^{\log\sigma_k}`.
    Computed as a log-sum-exp over components of :math:`\log\pi_k + \log\mathcal{N}_k`, so it
    stays finite for points far from every component, where each density underflows.

    Args:
        z: Points, shape ``(S, D)``.
        logits: Unnormalised log weights, shape ``(K,)``.
        mu: Component means, shape ``(K, D)``.
        log_sigma: Component log standard deviations, shape ``(K, D)``.

    Returns:
        Shape ``(S,)``, differentiable in ``logits``, ``mu`` and ``log_sigma``.
    """
    for name, t in (("z", z), ("logits", logits), ("mu", mu), ("log_sigma", log_sigma)):
        check_tensor(name, t)
    k, d = mu.shape if mu.ndim == 2 else (-1, -1)
    if (
        mu.ndim != 2
        or log_sigma.shape != mu.shape
        or logits.shape != (k,)
        or z.ndim != 2
        or z.shape[1] != d
    ):
        raise ValueError(
            "expected z (S, D), logits (K,), mu and log_sigma (K, D); got "
            f"{tuple(z.shape)}, {tuple(logits.shape)}, {tuple(mu.shape)}, {tuple(log_sigma.shape)}"
        )
    standardized = (z[:, None, :] - mu) / torch.exp(log_sigma)  # (S, K, D)
    log_components = (-0.5 * standardized.square() - log_sigma - _HALF_LOG_2PI).sum(-1)
    return torch.logsumexp(torch.log_softmax(logits, dim=0) + log_components, dim=1)


def mixture_score_surrogate(log_q: Tensor, log_p: Tensor) -> Tensor:
    r"""A scalar whose gradient is the score-function ELBO gradient with a leave-one-out baseline.

    With weights :math:`w_s = \log p_s - \log q_s` held fixed and
    :math:`b_s = \frac{1}{S-1}\sum_{t \ne s} w_t`, the surrogate is
    :math:`\frac1S \sum_s \log q_s\,(w_s - b_s)`; its gradient through ``log_q`` is
    :math:`\frac1S \sum_s \nabla_\lambda \log q(z_s \mid \lambda)\,(w_s - b_s)`.

    Args:
        log_q: :math:`\log q(z_s \mid \lambda)` at fixed samples, differentiable in
            :math:`\lambda`, shape ``(S,)`` with ``S >= 2``.
        log_p: :math:`\log p(x, z_s)`, shape ``(S,)`` (values only: no gradient reaches it).

    Returns:
        A scalar tensor.
    """
    check_tensor("log_q", log_q)
    check_tensor("log_p", log_p)
    if log_q.ndim != 1 or log_q.shape != log_p.shape or log_q.shape[0] < 2:
        raise ValueError(
            f"log_q and log_p must both be (S,) with S >= 2, got {tuple(log_q.shape)} and {tuple(log_p.shape)}"
        )
    weights = (log_p - log_q).detach()
    baseline = (weights.sum() - weights) / (weights.shape[0] - 1)
    return (log_q * (weights - baseline)).mean()
