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
    "gaussian_entropy",
]

LogJoint = Callable[[Tensor], Tensor]
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
