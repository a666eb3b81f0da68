r"""Reference solutions for ``03_reparam``: the reparameterization (pathwise) estimator.

Every sampler writes :math:`z = t(\epsilon, \lambda)` with the noise passed in, so samples are
differentiable functions of the parameters: Gaussian and log-normal (composition) from
standard normal noise, and the inverse-CDF families from uniform noise :math:`u \in (0, 1)`.

References:
    Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014);
    Mohamed, Rosca, Figurnov & Mnih (2020), "Monte Carlo Gradient Estimation in ML", §5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from course_lib._validate import check_params, check_tensor, per_sample
from course_lib.reference._autograd import fresh_leaves, grads_or_zeros

__all__ = [
    "cauchy_rsample",
    "exponential_rsample",
    "gaussian_rsample",
    "gumbel_rsample",
    "laplace_rsample",
    "lognormal_rsample",
    "reparam_grad",
]


def gaussian_rsample(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    r""":math:`z = \mu + e^{\log\sigma}\,\epsilon` with :math:`\epsilon \sim \mathcal{N}(0, I)`.

    Args:
        mu: Mean, shape ``(D,)`` (broadcast against ``eps``).
        log_sigma: Log standard deviation, shape ``(D,)``.
        eps: Standard normal noise, shape ``(S, D)``.

    Returns:
        Samples of shape ``(S, D)``, differentiable in ``mu`` and ``log_sigma``.
    """
    return mu + torch.exp(log_sigma) * eps


def exponential_rsample(rate: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of :math:`\mathrm{Exp}(\lambda)`: :math:`z = -\log(1 - u)/\lambda`.

    ``log1p`` keeps the result accurate for tiny ``u``.
    """
    return -torch.log1p(-u) / rate


def gumbel_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of the Gumbel (max) law: :math:`z = \mu - \beta \log(-\log u)`."""
    return loc - scale * torch.log(-torch.log(u))


def cauchy_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of the Cauchy law: :math:`z = x_0 + \gamma \tan(\pi(u - \tfrac12))`."""
    return loc + scale * torch.tan(math.pi * (u - 0.5))


def laplace_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Location-scale: :math:`z = \mu + b\,F_0^{-1}(u)` with the standard Laplace quantile.

    :math:`F_0^{-1}(u) = -\operatorname{sign}(u - \tfrac12)\log(1 - 2|u - \tfrac12|)`.
    """
    centered = u - 0.5
    return loc - scale * torch.sign(centered) * torch.log1p(-2.0 * centered.abs())


def lognormal_rsample(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    r"""Composition: :math:`z = \exp(\mu + e^{\log\sigma}\epsilon)`."""
    return torch.exp(gaussian_rsample(mu, log_sigma, eps))


def reparam_grad(
    f: Callable[[Tensor], Tensor],
    rsample: Callable[..., Tensor],
    params: tuple[Tensor, ...],
    noise: Tensor,
) -> tuple[Tensor, ...]:
    r"""Pathwise estimate :math:`\frac1S \sum_s \nabla_\lambda f(t(\epsilon_s, \lambda))`.

    Args:
        f: ``f(z) -> (S,)``.
        rsample: ``rsample(*params, noise) -> z`` with ``S`` samples along the first axis.
        params: Parameter tensors; never modified, no ``.grad`` left on them.
        noise: The noise :math:`\epsilon_s` (or :math:`u_s`), ``S`` along the first axis.

    Returns:
        One gradient tensor per parameter, shaped like it.
    """
    params = check_params(params)
    check_tensor("noise", noise)
    leaves = fresh_leaves(params)
    samples = rsample(*leaves, noise)
    values = per_sample("f", f(samples), noise.shape[0])
    return grads_or_zeros(values.mean(), leaves)
