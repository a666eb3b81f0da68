"""Closed forms the judge knows for ``03_reparam``: CDFs, tail probabilities, pivots, and
:math:`F^{-1}(u)` by bisection (for failure messages only: the public checks never contain a
quantile formula). None of them is a graded sampler."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Fn = Callable[..., Tensor]


def _exp_cdf(z: Tensor, rate: Tensor) -> Tensor:
    return -torch.expm1(-rate * z)


def _exp_sf(z: Tensor, rate: Tensor) -> Tensor:
    return torch.exp(-rate * z)


def _gumbel_cdf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return torch.exp(-torch.exp(-(z - loc) / scale))


def _gumbel_sf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return -torch.expm1(-torch.exp(-(z - loc) / scale))


def _cauchy_cdf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    # atan2(1, -x)/pi = 1/2 + atan(x)/pi, accurate in the lower tail.
    return torch.atan2(torch.ones_like(z), -(z - loc) / scale) / math.pi


def _cauchy_sf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return torch.atan2(torch.ones_like(z), (z - loc) / scale) / math.pi


def _laplace_cdf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    x = (z - loc) / scale
    return torch.where(
        x < 0, 0.5 * torch.exp(x.clamp(max=0)), 1.0 - 0.5 * torch.exp(-x.clamp(min=0))
    )


def _laplace_sf(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    x = (z - loc) / scale
    return torch.where(
        x > 0, 0.5 * torch.exp(-x.clamp(min=0)), 1.0 - 0.5 * torch.exp(x.clamp(max=0))
    )


def _gauss_pivot(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    return (z - mu) / torch.exp(log_sigma)


def _lognormal_pivot(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    return (torch.log(z) - mu) / torch.exp(log_sigma)


def _bisect(
    cdf: Fn, params: Sequence[Tensor], u: Tensor, lo: Tensor, hi: Tensor
) -> Tensor:
    """:math:`F^{-1}(u)` by bisection on a closed-form CDF (messages only)."""
    lo, hi = torch.broadcast_tensors(lo, hi, u)[:2]
    lo, hi = lo.clone(), hi.clone()
    for _ in range(160):
        mid = 0.5 * (lo + hi)
        below = cdf(mid, *params) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


# Wrong formulas, as functions of (noise, *params), each with what it tells the student.
# Only the *wrong* formulas are written here, and the exponential's quantile is found by
# bisection on its CDF: the public checks never contain the answer.
def _unit_exponentials(u: Tensor) -> Tensor:
    """Unit-rate exponential quantiles of every entry of ``u``, by bisection on the CDF."""
    one = torch.ones((), dtype=u.dtype)
    return _bisect(_exp_cdf, (one,), u, torch.zeros_like(u), torch.full_like(u, 50.0))


def _t_ratio(eps: Tensor, chi: Tensor) -> Tensor:
    return eps[:, 0] / chi


def _erlang_cdf(z: Tensor, rate: Tensor, k: int) -> Tensor:
    r"""Gamma CDF for an integer shape: :math:`1 - e^{-x}\sum_{m<k} x^m/m!`, :math:`x = \lambda z`."""
    x = rate * z
    terms = sum(x**m / math.factorial(m) for m in range(k))
    return 1.0 - torch.exp(-x) * terms


def _t_standard(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return (z - loc) / scale


def _gamma_quantile(shape: Tensor, u: Tensor) -> Tensor:
    """Solve P(shape, z) = u by bisection in float64 (100 halvings of [0, 200]: exact to round-off)."""
    low = torch.zeros_like(u)
    high = torch.full_like(u, 200.0)
    for _ in range(100):
        mid = (low + high) / 2
        below = torch.special.gammainc(shape, mid) < u
        low = torch.where(below, mid, low)
        high = torch.where(below, high, mid)
    return (low + high) / 2
