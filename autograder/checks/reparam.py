r"""Public checks for ``03_reparam``: inverse-CDF identities, implicit gradients, closed forms.

Noise is passed in, so every property here is deterministic. For each sampler (the six
``*_rsample`` tasks) a *family* below holds what the judge knows in closed form: a pivot
:math:`P(z; \lambda)` that a correct sample maps back to its noise (the CDF :math:`F(z;\lambda) = u`
for inverse-CDF families, :math:`(z - \mu)/\sigma = \epsilon` for the Gaussian ones), tail
probabilities, and how the family is built from its standard member. From the pivot come
the implicit-gradient identity

.. math:: \frac{\partial z}{\partial \lambda} = -\frac{\partial_\lambda P(z; \lambda)}{\partial_z P(z; \lambda)}
          \quad\Big(= -\frac{\partial_\lambda F(z;\lambda)}{q(z;\lambda)}\Big),

computed by autograd through the closed form, and, for failure messages only, :math:`F^{-1}(u)`
by bisection (the public checks never contain a quantile formula).

``reparam_grad`` is checked against per-sample closed forms with the public samplers and
integrands defined here (module-level classes, so they travel to the student's process).

References:
    Mohamed, Rosca, Figurnov & Mnih (2020), "Monte Carlo Gradient Estimation in ML", §5;
    Figurnov, Mohamed & Mnih (2018), "Implicit Reparameterization Gradients" (the identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import Tensor

from autograder import probes
from autograder.compare import (
    Catalogue,
    KnownBug,
    as_numpy,
    expect_no_graph,
    expect_no_side_effects,
    first_known_bug,
    present,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING
from autograder.strategies import distinct_sizes, seeds
from autograder.subject import Student, StudentError, Subject

__all__ = [
    "FAMILIES",
    "Bump",
    "Cosine",
    "LogisticSampler",
    "Family",
    "SinhNormalSampler",
    "GradProblem",
    "WeibullSampler",
    "Quadratic",
    "SamplerProblem",
    "diagnose",
    "show_noise",
    "show_pair",
    "grad_problems",
    "grad_hint",
    "reparam_grad_probe",
    "rsample_probe",
    "sampler_problems",
]

DTYPE = torch.float64

#: Deterministic and cheap, but 45 properties share the ~10 s budget: each example already
#: checks S x D samples, so 15 examples per property suffice (the mutation report shows it).
#: No shrinking: a problem is sizes plus a seed, and the first example Hypothesis tries is
#: already the smallest (S=2, D=3, seed 0), where almost every bug shows; shrinking a seed
#: only swaps one noise draw for another, at ~2 s per failed property.
SAMPLER_SETTINGS = settings(
    GRADING, max_examples=15, phases=[Phase.explicit, Phase.generate]
)

# --------------------------------------------------------------------------------------
# Integrands f(z) -> (S,) and samplers rsample(*params, noise) handed to reparam_grad.
# Module-level classes: they are pickled into the student's process.
# --------------------------------------------------------------------------------------


def _fmt(values: Any) -> str:
    return (
        "["
        + ", ".join(
            f"{float(v):.3g}" for v in np.atleast_1d(as_numpy(values, "values"))
        )
        + "]"
    )


class Quadratic:
    r""":math:`f(z) = \sum_d (z_d - k_d)^2`, per sample."""

    def __init__(self, k: Tensor) -> None:
        self.k = k

    def __call__(self, z: Tensor) -> Tensor:
        return ((z - self.k) ** 2).sum(-1)

    def dfdz(self, z: Tensor) -> Tensor:
        """Elementwise :math:`\\partial f/\\partial z_d`, shape of ``z``."""
        return 2.0 * (z - self.k)

    def __repr__(self) -> str:
        return f"f(z) = sum((z - k)^2), k={_fmt(self.k)}"


class Cosine:
    r""":math:`f(z) = \sum_d \cos(w_d z_d)` (bounded: fine for heavy tails)."""

    def __init__(self, w: Tensor) -> None:
        self.w = w

    def __call__(self, z: Tensor) -> Tensor:
        return torch.cos(self.w * z).sum(-1)

    def dfdz(self, z: Tensor) -> Tensor:
        return -self.w * torch.sin(self.w * z)

    def __repr__(self) -> str:
        return f"f(z) = sum(cos(w z)), w={_fmt(self.w)}"


class Bump:
    r""":math:`f(z) = \sum_d \exp(-w_d z_d^2)`."""

    def __init__(self, w: Tensor) -> None:
        self.w = w

    def __call__(self, z: Tensor) -> Tensor:
        return torch.exp(-self.w * z**2).sum(-1)

    def dfdz(self, z: Tensor) -> Tensor:
        return -2.0 * self.w * z * torch.exp(-self.w * z**2)

    def __repr__(self) -> str:
        return f"f(z) = sum(exp(-w z^2)), w={_fmt(self.w)}"


class SinhNormalSampler:
    r""":math:`z = \mu + e^{\log\sigma}\sinh(\epsilon)`; params ``(mu, log_sigma)``.

    Not one of the assignment's samplers on purpose: these public checks must not ship the
    answers. Any differentiable ``t(eps, params)`` exercises ``reparam_grad`` equally well.
    """

    def __call__(self, mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
        return mu + torch.exp(log_sigma) * torch.sinh(eps)

    def derivatives(self, params: Sequence[Tensor], eps: Tensor) -> list[Tensor]:
        r"""Per-sample :math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\log\sigma = \sigma\sinh\epsilon`."""
        _, log_sigma = params
        return [torch.ones_like(eps), torch.exp(log_sigma) * torch.sinh(eps)]

    def __repr__(self) -> str:
        return "sinh-normal sampler (mu, log_sigma)"


class ShiftSampler:
    r""":math:`z = \mu + \sinh(\epsilon)`; params ``(mu, log_sigma)``, of which ``log_sigma`` is unused.

    A sampler may ignore one of its parameters; the pathwise gradient for that parameter is
    then exactly zero (the notebook asks for a zero tensor, not ``None``).
    """

    def __call__(self, mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
        del log_sigma
        return mu + torch.sinh(eps)

    def derivatives(self, params: Sequence[Tensor], eps: Tensor) -> list[Tensor]:
        r"""Per-sample :math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\log\sigma = 0`."""
        del params
        return [torch.ones_like(eps), torch.zeros_like(eps)]

    def __repr__(self) -> str:
        return "shift sampler z = mu + sinh(eps) (mu, log_sigma unused)"


class WeibullSampler:
    r"""Weibull with shape 2: :math:`z = \lambda\sqrt{-\log(1 - u)}`; one parameter ``(scale,)``."""

    def __call__(self, scale: Tensor, u: Tensor) -> Tensor:
        return scale * torch.sqrt(-torch.log1p(-u))

    def derivatives(self, params: Sequence[Tensor], u: Tensor) -> list[Tensor]:
        r"""Per-sample :math:`\partial z/\partial\lambda = z/\lambda`."""
        del params
        return [torch.sqrt(-torch.log1p(-u))]

    def __repr__(self) -> str:
        return "Weibull(shape 2) sampler (scale,)"


class LogisticSampler:
    r""":math:`z = \mu + s(\log u - \log(1 - u))`; params ``(loc, scale)``."""

    def __call__(self, loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
        return loc + scale * (torch.log(u) - torch.log1p(-u))

    def derivatives(self, params: Sequence[Tensor], u: Tensor) -> list[Tensor]:
        r"""Per-sample :math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial s = \log u - \log(1-u)`."""
        del params
        return [torch.ones_like(u), torch.log(u) - torch.log1p(-u)]

    def __repr__(self) -> str:
        return "logistic sampler (loc, scale)"


# --------------------------------------------------------------------------------------
# Probes: run next to the student's code, return plain data.
# --------------------------------------------------------------------------------------


class SampleOutput(probes.SideEffects):
    """What :func:`rsample_probe` and :func:`composed_probe` bring back (side effects on
    ``(*params, noise)``)."""

    z: Tensor
    dtype: str
    requires_grad: bool
    #: Per parameter, the ``(S, D)`` per-sample derivatives, or None (no ``weights`` given, or
    #: z not differentiable). Typed ``Any`` so property bodies (whose source seeds their
    #: Hypothesis examples) index it directly after checking ``requires_grad``.
    derivs: Any


class GradOutput(probes.SideEffects):
    """What :func:`reparam_grad_probe` brings back (side effects on ``(*params, noise)``)."""

    grads: list[Tensor]
    again: list[Tensor] | None
    #: Positions of the (first call's) gradients that still hold an autograd graph.
    graph: list[int]


def rsample_probe(
    student: Student,
    name: str,
    params: tuple[Tensor, ...],
    noise: Tensor,
    weights: Tensor | None = None,
) -> SampleOutput:
    r"""Call ``student.<name>(*params, noise)`` with the params as fresh leaves.

    With ``weights`` (``(S, D)``, nonzero), also return per-sample derivatives
    :math:`\partial z_{sd}/\partial\lambda_{id}`, one backward pass per sample row: row ``s`` is
    differentiated with cotangent ``weights[s]`` and divided by it, so a sample that wrongly
    depends on another coordinate's parameter shows up as a wrong derivative.

    Returns:
        The samples and the side effects on ``(*params, noise)`` (:class:`SampleOutput`).
    """
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    noise_arg = noise.detach().clone()
    z = getattr(student, name)(*leaves, noise_arg)
    if not isinstance(z, torch.Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(z).__name__}, expected a torch.Tensor of shape {tuple(noise.shape)}",
        )
    out: SampleOutput = {
        "z": z.detach().clone(),
        "dtype": str(z.dtype).replace("torch.", ""),
        "requires_grad": bool(z.requires_grad),
        "derivs": None,
        **probes.side_effects([*params, noise], [*leaves, noise_arg]),
    }
    if weights is not None and z.requires_grad and z.shape == noise.shape:
        derivs = [torch.zeros(noise.shape, dtype=DTYPE) for _ in leaves]
        for s in range(z.shape[0]):
            row = torch.autograd.grad(
                z[s],
                leaves,
                grad_outputs=weights[s].to(z.dtype),
                retain_graph=True,
                allow_unused=True,
            )
            for i, g in enumerate(row):
                if g is not None:
                    derivs[i][s] = (g.detach().to(DTYPE) / weights[s]).expand(
                        noise.shape[1:]
                    )
        out["derivs"] = derivs
    return out


def _plain_grads(grads: Any, params: Sequence[Tensor]) -> list[Tensor]:
    expected = f"a tuple of {len(params)} tensor(s), one gradient per parameter, shaped like it"
    if isinstance(grads, torch.Tensor):
        raise StudentError(
            "bad_result",
            f"reparam_grad returned a single tensor, expected {expected} (e.g. `(grad,)`)",
        )
    if not isinstance(grads, (tuple, list)) or len(grads) != len(params):
        got = (
            f"{type(grads).__name__} of length {len(grads)}"
            if isinstance(grads, (tuple, list))
            else type(grads).__name__
        )
        raise StudentError(
            "bad_result", f"reparam_grad returned a {got}, expected {expected}"
        )
    out = []
    for i, (g, p) in enumerate(zip(grads, params)):
        if g is None:
            raise StudentError(
                "bad_result",
                f"reparam_grad returned None as the gradient for params[{i}], which this "
                "rsample does not use: return a zero tensor shaped like it instead "
                "(torch.zeros_like(param) where autograd gives None)",
            )
        if not isinstance(g, torch.Tensor):
            raise StudentError(
                "bad_result",
                f"reparam_grad's gradient {i} is a {type(g).__name__}, expected a tensor shaped like params[{i}]",
            )
        if g.shape != p.shape:
            raise StudentError(
                "bad_result",
                f"reparam_grad's gradient {i} has shape {tuple(g.shape)}, expected {tuple(p.shape)} (like params[{i}])",
            )
        out.append(g.detach().to(DTYPE).clone())
    return out


def reparam_grad_probe(
    student: Student,
    f: Callable[[Tensor], Tensor],
    rsample: Callable[..., Tensor],
    params: tuple[Tensor, ...],
    noise: Tensor,
    calls: int = 1,
    requires_grad: bool = False,
) -> GradOutput:
    """Call ``student.reparam_grad(f, rsample, params, noise)`` ``calls`` times.

    The params are plain tensors by default, as the notebook passes them; with
    ``requires_grad=True`` they are leaves that require grad, as in an optimisation loop.

    Returns:
        The gradients of the first and (``calls > 1``) the second call, and the side effects
        on ``(*params, noise)`` (:class:`GradOutput`).
    """
    leaves = tuple(p.detach().clone().requires_grad_(requires_grad) for p in params)
    noise_arg = noise.detach().clone()
    results, graph = [], []
    for call in range(calls):
        grads = student.reparam_grad(f, rsample, leaves, noise_arg)
        results.append(_plain_grads(grads, leaves))  # copied before the next call
        if call == 0:
            graph = probes.graph_held(list(grads))
    return {
        "grads": results[0],
        "again": results[1] if calls > 1 else None,
        "graph": graph,
        **probes.side_effects(
            [*params, noise],
            [*leaves, noise_arg],
            requires_grad=[*(requires_grad for _ in leaves), None],
        ),
    }


# --------------------------------------------------------------------------------------
# Families: closed forms the judge knows (pivots, tails, standard member).
# --------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Range:
    """Parameter values in ``[low, high]`` at least ``margin`` from each value in ``bad``.

    With ``log=True`` the range is for the log of the value (scales and rates). Values are
    drawn from the problem's seed and rounded to 3 digits, so the repr shows exactly what was
    used; Hypothesis only draws sizes and a seed, which keeps generation cheap.
    """

    low: float
    high: float
    bad: tuple[float, ...] = (0.0,)
    margin: float = 0.2
    log: bool = False

    def draw(self, rng: np.random.Generator, dim: int) -> tuple[float, ...]:
        values: list[float] = []
        while len(values) < dim:
            x = float(f"{rng.uniform(self.low, self.high):.3g}")
            if all(abs(x - b) >= self.margin for b in self.bad):
                values.append(float(f"{math.exp(x):.3g}") if self.log else x)
        return tuple(values)


def _positive(bound: float = 5.0) -> Range:
    """Scales and rates in [1/bound, bound], at least 15% away from 1 (1 hides rate/scale bugs)."""
    return Range(-math.log(bound), math.log(bound), (0.0,), 0.15, log=True)


LOC2, LOC3, LOG_SIGMA = (
    Range(-2.0, 2.0),
    Range(-3.0, 3.0),
    Range(-1.5, 1.0, margin=0.15),
)


def _suspect(mutant: str, candidate: Fn, message: str) -> tuple[KnownBug, Fn]:
    """A known bug of a sampler: ``candidate(zstar, zflip, noise, *params)`` is the z it gives
    (from the right samples ``zstar`` and those at the flipped noise ``zflip``)."""
    return KnownBug(mutant, message), candidate


@dataclass(frozen=True)
class Family:
    """What the judge knows about one sampler task."""

    task: str
    param_names: tuple[str, ...]
    noise_name: str  # "u" (uniform) or "eps" (standard normal)
    pivot: Fn  # (z, *params) -> value that equals the noise (F(z) for u, standardised z for eps)
    pivot_text: str
    lower: Fn | None  # lower-tail probability F(z), accurate for small u
    upper: Fn | None  # upper-tail probability 1 - F(z), accurate for u near 1
    standard: tuple[float, ...]  # parameters of the standard member
    compose: Fn  # (z_standard, *params) -> z: how the family is built from its standard member
    structure_text: str
    hint: str
    #: Where each parameter is drawn (away from bug-hiding values).
    ranges: tuple[Range, ...]
    #: ``(u, *params) -> (lo, hi)``, the bisection bracket; None when the inverse is closed form.
    support: Callable[..., tuple[Tensor, Tensor]] | None = None
    closed_inverse: Fn | None = None
    #: Known wrong formulas (:func:`_suspect`), tried in order by :func:`diagnose`.
    suspects: Catalogue = field(default=())

    @property
    def uniform(self) -> bool:
        return self.noise_name == "u"

    def inverse(self, noise: Tensor, params: Sequence[Tensor]) -> Tensor:
        """The right samples (bisection on the CDF for the inverse-CDF families)."""
        if self.closed_inverse is not None:
            return self.closed_inverse(noise, *params)
        assert self.support is not None
        lo, hi = self.support(noise, *params)
        return _bisect(self.pivot, params, noise, lo, hi)

    def flip(self, noise: Tensor) -> Tensor:
        """The noise a '1 - u' (or '-eps') mix-up would use."""
        return 1.0 - noise if self.uniform else -noise


def _loc_scale_bracket(u: Tensor, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    return loc - 1e7 * scale, loc + 1e7 * scale


_FLIP = "you used 1 - u: it has the same law, but the SPEC fixes the sample itself, z = F^-1(u), so use u"
_DIVIDED = "z - loc is divided by scale: the location-scale map is loc + scale * (standard sample)"

FAMILIES: dict[str, Family] = {
    "gaussian_rsample": Family(
        task="gaussian_rsample",
        param_names=("mu", "log_sigma"),
        noise_name="eps",
        pivot=_gauss_pivot,
        pivot_text="(z - mu) / exp(log_sigma)",
        lower=None,
        upper=None,
        standard=(0.0, 0.0),
        compose=lambda z0, mu, ls: mu + torch.exp(ls) * z0,
        structure_text="z(mu, log_sigma, eps) = mu + exp(log_sigma) * z(0, 0, eps)",
        hint="z should be mu + sigma * eps with sigma = exp(log_sigma)",
        ranges=(LOC2, LOG_SIGMA),
        closed_inverse=lambda eps, mu, ls: mu + torch.exp(ls) * eps,
        suspects=(
            _suspect(
                "gaussian_rsample/gaussian_rsample_variance_as_std",
                lambda zs, zf, e, mu, ls: mu + torch.exp(2 * ls) * e,
                "you used exp(2 * log_sigma), the variance, as the standard deviation",
            ),
            _suspect(
                "gaussian_rsample/gaussian_rsample_half_log_sigma_logvar_confusion",
                lambda zs, zf, e, mu, ls: mu + torch.exp(0.5 * ls) * e,
                "you used exp(log_sigma / 2): that is for a log-variance; log_sigma is already the log of the standard deviation",
            ),
            _suspect(
                "gaussian_rsample/gaussian_rsample_log_sigma_as_sigma",
                lambda zs, zf, e, mu, ls: mu + ls * e,
                "you used log_sigma as sigma: exponentiate it",
            ),
            _suspect(
                "gaussian_rsample/gaussian_rsample_minus_sign",
                lambda zs, zf, e, mu, ls: mu - torch.exp(ls) * e,
                "a sign is flipped: z = mu + sigma * eps",
            ),
        ),
    ),
    "exponential_rsample": Family(
        task="exponential_rsample",
        param_names=("rate",),
        noise_name="u",
        pivot=_exp_cdf,
        pivot_text="F(z) = 1 - exp(-rate * z)",
        lower=_exp_cdf,
        upper=_exp_sf,
        standard=(1.0,),
        compose=lambda z1, rate: z1 / rate,
        structure_text="z(rate, u) = z(1, u) / rate",
        hint="solve u = F(z) = 1 - exp(-rate * z) for z: rate is an inverse scale (a larger rate gives smaller z)",
        ranges=(_positive(),),
        support=lambda u, rate: (torch.zeros_like(rate), 1e7 / rate),
        suspects=(
            _suspect(
                "exponential_rsample/exponential_rsample_rate_scale_swap",
                lambda zs, zf, u, rate: zs * rate**2,
                "you multiplied by rate: rate is an inverse scale (mean 1/rate), so divide by it",
            ),
            _suspect(
                "exponential_rsample/exponential_rsample_law_equivalent_log_u",
                lambda zs, zf, u, rate: zf,
                _FLIP,
            ),
            _suspect(
                "exponential_rsample/exponential_rsample_missing_minus",
                lambda zs, zf, u, rate: -zs,
                "z is negative: a minus sign is missing (-log(1 - u) is positive)",
            ),
            _suspect(
                "exponential_rsample/exponential_rsample_ignores_rate",
                lambda zs, zf, u, rate: zs * rate,
                "z does not depend on rate: divide by it",
            ),
        ),
    ),
    "gumbel_rsample": Family(
        task="gumbel_rsample",
        param_names=("loc", "scale"),
        noise_name="u",
        pivot=_gumbel_cdf,
        pivot_text="F(z) = exp(-exp(-(z - loc) / scale))",
        lower=_gumbel_cdf,
        upper=_gumbel_sf,
        standard=(0.0, 1.0),
        compose=lambda z0, loc, scale: loc + scale * z0,
        structure_text="z(loc, scale, u) = loc + scale * z(0, 1, u)",
        hint="solve u = exp(-exp(-(z - loc) / scale)) for z (the Gumbel max law); check the sign in front of the outer log",
        ranges=(LOC3, _positive()),
        support=_loc_scale_bracket,
        suspects=(
            _suspect(
                "gumbel_rsample/gumbel_rsample_min_sign",
                lambda zs, zf, u, loc, scale: 2 * loc - zs,
                "z is mirrored around loc: check the sign in front of the log (loc + scale * log(-log u) is the Gumbel-min law; the Gumbel of the SPEC is the max law)",
            ),
            _suspect(
                "gumbel_rsample/gumbel_rsample_law_equivalent_one_minus_u",
                lambda zs, zf, u, loc, scale: zf,
                _FLIP,
            ),
            _suspect(
                "gumbel_rsample/gumbel_rsample_divides_by_scale",
                lambda zs, zf, u, loc, scale: loc + (zs - loc) / scale**2,
                _DIVIDED,
            ),
            _suspect(
                "gumbel_rsample/gumbel_rsample_single_log",
                lambda zs, zf, u, loc, scale: loc - scale * torch.log(u),
                "you took only one log: the Gumbel quantile needs log(-log u)",
            ),
        ),
    ),
    "cauchy_rsample": Family(
        task="cauchy_rsample",
        param_names=("loc", "scale"),
        noise_name="u",
        pivot=_cauchy_cdf,
        pivot_text="F(z) = 1/2 + atan((z - loc) / scale) / pi",
        lower=_cauchy_cdf,
        upper=_cauchy_sf,
        standard=(0.0, 1.0),
        compose=lambda z0, loc, scale: loc + scale * z0,
        structure_text="z(loc, scale, u) = loc + scale * z(0, 1, u)",
        hint="solve u = 1/2 + atan((z - loc) / scale) / pi for z: check the pi and the shift by 1/2",
        ranges=(LOC3, _positive()),
        support=_loc_scale_bracket,
        suspects=(
            _suspect(
                "cauchy_rsample/cauchy_rsample_law_equivalent_mirrored",
                lambda zs, zf, u, loc, scale: zf,
                "z is mirrored around loc: " + _FLIP + " (or flip the sign)",
            ),
            _suspect(
                "cauchy_rsample/cauchy_rsample_law_equivalent_tan_pi_u",
                lambda zs, zf, u, loc, scale: loc + scale * torch.tan(math.pi * u),
                "you used tan(pi * u): same law (tan has period pi), but it is not F^-1(u) and jumps at u = 1/2; shift by 1/2",
            ),
            _suspect(
                "cauchy_rsample/cauchy_rsample_missing_pi",
                lambda zs, zf, u, loc, scale: loc + scale * torch.tan(u - 0.5),
                "the factor pi inside the tan is missing",
            ),
            _suspect(
                "cauchy_rsample/cauchy_rsample_divides_by_scale",
                lambda zs, zf, u, loc, scale: loc + (zs - loc) / scale**2,
                _DIVIDED,
            ),
        ),
    ),
    "laplace_rsample": Family(
        task="laplace_rsample",
        param_names=("loc", "scale"),
        noise_name="u",
        pivot=_laplace_cdf,
        pivot_text="F(z) = exp(x)/2 for x < 0, 1 - exp(-x)/2 for x >= 0, x = (z - loc) / scale",
        lower=_laplace_cdf,
        upper=_laplace_sf,
        standard=(0.0, 1.0),
        compose=lambda z0, loc, scale: loc + scale * z0,
        structure_text="z(loc, scale, u) = loc + scale * z(0, 1, u)",
        hint="invert each half of the CDF: u < 1/2 gives z < loc, u > 1/2 gives z > loc",
        ranges=(LOC3, _positive()),
        support=_loc_scale_bracket,
        suspects=(
            _suspect(
                "laplace_rsample/laplace_rsample_law_equivalent_mirrored",
                lambda zs, zf, u, loc, scale: zf,
                "z is mirrored around loc: F0^-1(u) must be negative for u < 1/2 (check the sign, or "
                + _FLIP
                + ")",
            ),
            _suspect(
                "laplace_rsample/laplace_rsample_missing_sign",
                lambda zs, zf, u, loc, scale: loc + (zs - loc).abs(),
                "z is never below loc: the sign of (u - 1/2) is missing",
            ),
            _suspect(
                "laplace_rsample/laplace_rsample_never_above_loc",
                lambda zs, zf, u, loc, scale: loc - (zs - loc).abs(),
                "z is never above loc: the sign of (u - 1/2) is missing",
            ),
            _suspect(
                "laplace_rsample/laplace_rsample_divides_by_scale",
                lambda zs, zf, u, loc, scale: loc + (zs - loc) / scale**2,
                _DIVIDED,
            ),
        ),
    ),
    "lognormal_rsample": Family(
        task="lognormal_rsample",
        param_names=("mu", "log_sigma"),
        noise_name="eps",
        pivot=_lognormal_pivot,
        pivot_text="(log z - mu) / exp(log_sigma)",
        lower=None,
        upper=None,
        standard=(0.0, 0.0),
        compose=lambda z0, mu, ls: torch.exp(mu + torch.exp(ls) * torch.log(z0)),
        structure_text="log z(mu, log_sigma, eps) = mu + exp(log_sigma) * log z(0, 0, eps) (exp of a Gaussian)",
        hint="z = exp(mu + sigma * eps): exponentiate the whole Gaussian sample",
        ranges=(LOC2, LOG_SIGMA),
        closed_inverse=lambda eps, mu, ls: torch.exp(mu + torch.exp(ls) * eps),
        suspects=(
            _suspect(
                "lognormal_rsample/lognormal_rsample_exp_mu_plus_sigma_eps",
                lambda zs, zf, e, mu, ls: torch.exp(mu) + torch.exp(ls) * e,
                "exp(mu) + sigma * eps is not log-normal: exponentiate the whole Gaussian sample, z = exp(mu + sigma * eps)",
            ),
            _suspect(
                "lognormal_rsample/lognormal_rsample_exp_mu_plus_sigma_times_eps",
                lambda zs, zf, e, mu, ls: torch.exp(mu + torch.exp(ls)) * e,
                "exp(mu + sigma) * eps is not log-normal: z = exp(mu + sigma * eps)",
            ),
            _suspect(
                "lognormal_rsample/lognormal_rsample_missing_exp",
                lambda zs, zf, e, mu, ls: mu + torch.exp(ls) * e,
                "the exp is missing: that is the Gaussian sample",
            ),
            _suspect(
                "lognormal_rsample/lognormal_rsample_log_sigma_as_sigma",
                lambda zs, zf, e, mu, ls: torch.exp(mu + ls * e),
                "you used log_sigma as sigma: exponentiate it",
            ),
            _suspect(
                "lognormal_rsample/lognormal_rsample_variance_as_std",
                lambda zs, zf, e, mu, ls: torch.exp(mu + torch.exp(2 * ls) * e),
                "you used the variance exp(2 * log_sigma) as the standard deviation",
            ),
        ),
    ),
}


# --------------------------------------------------------------------------------------
# Problems and strategies.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerProblem:
    """Parameters (one value per dimension) and a noise seed; the repr is what a student reads."""

    task: str
    params: tuple[tuple[float, ...], ...]
    num_samples: int
    seed: int

    @property
    def family(self) -> Family:
        return FAMILIES[self.task]

    @property
    def dim(self) -> int:
        return len(self.params[0])

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(torch.tensor(p, dtype=DTYPE) for p in self.params)

    def _generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed + salt) % 2**63)

    def noise(self) -> Tensor:
        """``(S, D)`` noise: u in [0.001, 0.999] (tails have their own check) or eps ~ N(0, 1)."""
        shape = (self.num_samples, self.dim)
        if self.family.uniform:
            return 1e-3 + (1 - 2e-3) * torch.rand(
                shape, generator=self._generator(), dtype=DTYPE
            )
        return torch.randn(shape, generator=self._generator(), dtype=DTYPE)

    def sorted_noise(self) -> Tensor:
        """Noise increasing down each column, at least ``0.2 / S`` apart in u."""
        s = self.num_samples
        jitter = (
            torch.rand((s, self.dim), generator=self._generator(1), dtype=DTYPE) - 0.5
        )
        u = (torch.arange(s, dtype=DTYPE)[:, None] + 0.5 + 0.6 * jitter) / s
        u = 1e-3 + (1 - 2e-3) * u
        return u if self.family.uniform else torch.special.ndtri(u)

    def weights(self, salt: int = 2) -> Tensor:
        """Random positive cotangents in [0.5, 1.5], ``(S, D)``."""
        return 0.5 + torch.rand(
            (self.num_samples, self.dim), generator=self._generator(salt), dtype=DTYPE
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(
            repr(self)
        )  # Hypothesis prints dataclasses field by field otherwise

    def __repr__(self) -> str:
        values = ", ".join(
            f"{n}={_fmt(p)}" for n, p in zip(self.family.param_names, self.params)
        )
        return f"{self.task}({values}, {self.family.noise_name}: {self.num_samples}x{self.dim}, seed={self.seed})"


_SIZES, _SEEDS = distinct_sizes(2, 2, 6), seeds()


@st.composite
def sampler_problems(draw: st.DrawFn, task: str) -> SamplerProblem:
    """Problems for one sampler: S != D, both >= 2; no scale 1, rate 1, loc 0, log_sigma 0."""
    family = FAMILIES[task]
    num_samples, dim = draw(_SIZES)
    seed = draw(_SEEDS)
    rng = np.random.default_rng(seed)
    params = tuple(r.draw(rng, dim) for r in family.ranges)
    return SamplerProblem(task, params, num_samples, seed)


# --------------------------------------------------------------------------------------
# Diagnosis and small helpers shared with the hidden checks.
# --------------------------------------------------------------------------------------


def show_noise(x: float) -> str:
    """A noise value, with u near 1 written as ``1 - 1e-12`` rather than rounded to 1."""
    return f"1 - {1 - x:.3g}" if 0.999 < x < 1 else f"{x:.4g}"


def show_pair(got: float, want: float) -> tuple[str, str]:
    """Both numbers with just enough digits to tell them apart."""
    a = b = ""
    for digits in (5, 8, 12, 17):
        a, b = f"{got:.{digits}g}", f"{want:.{digits}g}"
        if a != b:
            break
    return a, b


def _at(family: Family, noise: Tensor, index: tuple[int, ...]) -> str:
    s, d = index
    return (
        f"{family.noise_name}={show_noise(float(noise[s, d]))} (sample {s}, column {d})"
    )


def _close(a: Tensor, b: Tensor, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    # Used to recognise known distortions (a factor S, a sign, one sample): those differ by
    # O(1), so 1e-6 only needs to exceed float64 round-off (about 1e-15 relative).
    return a.shape == b.shape and bool(
        torch.isclose(a.to(DTYPE), b.to(DTYPE), rtol=rtol, atol=atol).all()
    )


def diagnose(
    family: Family,
    z: Tensor,
    zstar: Tensor,
    zflip: Tensor,
    noise: Tensor,
    params: Sequence[Tensor],
) -> str:
    """A hint naming the bug when ``z`` matches a known wrong formula, else the family's hint.

    Args:
        z: The student's samples. zstar: the right samples. zflip: the right samples at the
        flipped noise (1 - u, or -eps). noise, params: the inputs.
    """
    if not torch.isfinite(z).all():
        return "z has NaN or infinite entries: is a log taken of a negative number or of 0? check the signs inside the logs"
    bug = first_known_bug(
        z, family.suspects, _finite_close, zstar, zflip, noise, *params
    )
    return family.hint if bug is None else bug.hint


def _finite_close(z: Tensor, candidate: Tensor) -> bool:
    return bool(torch.isfinite(candidate).all()) and _close(z, candidate)


def sample_derivatives(out: SampleOutput) -> list[Tensor]:
    """The per-sample derivatives (present once the samples are known to be differentiable)."""
    return present(
        out["derivs"], "the samples are not differentiable in the parameters"
    )


def _check_shape_dtype(out: SampleOutput, noise: Tensor, name: str) -> Tensor:
    z = out["z"]
    expect(
        tuple(z.shape) == tuple(noise.shape),
        f"{name} returned shape {tuple(z.shape)} for params of shape ({noise.shape[1]},) and noise of shape "
        f"{tuple(noise.shape)}: return one sample per noise entry, shape {tuple(noise.shape)} (params broadcast over the samples)",
    )
    expect(
        out["dtype"] == "float64",
        f"{name} returned {out['dtype']} for float64 inputs: don't convert (no .float(), no numpy round trip, "
        "no torch.tensor(..., dtype=torch.float32))",
    )
    return z.to(DTYPE)


def _require_finite(family: Family, z: Tensor, noise: Tensor) -> None:
    bad = ~torch.isfinite(z)
    if bad.any():
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise Failure(
            f"z is {float(z[index])} at {_at(family, noise, index)}: a log of a negative number or of 0? check the signs inside the logs"
        )


def _worst(err: Tensor) -> tuple[int, ...]:
    return tuple(
        int(i) for i in np.unravel_index(int(torch.argmax(err)), tuple(err.shape))
    )


# --------------------------------------------------------------------------------------
# Sampler properties (registered for all six tasks).
# --------------------------------------------------------------------------------------


def _register_sampler_checks(family: Family) -> None:
    task, names = family.task, family.param_names
    nname = family.noise_name
    problems = sampler_problems(task)
    target = "u" if family.uniform else "eps"

    @check(
        task,
        f"samples invert the noise: {family.pivot_text} gives back {target}",
        points=0.5,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def inverts_noise(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        _require_finite(family, z, noise)
        with torch.no_grad():
            back = family.pivot(z, *params)
        err = torch.where(
            torch.isfinite(back), (back - noise).abs(), torch.full_like(back, math.inf)
        )
        tol = 1e-10 if family.uniform else 1e-9 * (1 + noise.abs())
        if (err > tol).any():
            index = _worst(err - tol)
            zstar, zflip = (
                family.inverse(noise, params),
                family.inverse(family.flip(noise), params),
            )
            what = "F(z)" if family.uniform else family.pivot_text
            got_back, want_back = show_pair(float(back[index]), float(noise[index]))
            got_z, want_z = show_pair(float(z[index]), float(zstar[index]))
            raise Failure(
                f"at {_at(family, noise, index)} z is {got_z}, so {what} = {got_back} "
                f"instead of {want_back}; the right sample is {want_z}. "
                + diagnose(family, z, zstar, zflip, noise, params)
            )

    @check(task, f"z increases with {nname}", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def monotone(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.sorted_noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        _require_finite(family, z, noise)
        step = z[1:] - z[:-1]
        if (step <= 0).any():
            s, d = _worst(-step)
            falls = "decreases" if bool((step <= 0).all()) else "is not monotone"
            raise Failure(
                f"z {falls} in {nname}: at column {d}, {nname}={float(noise[s, d]):.3g} gives z={float(z[s, d]):.4g} but "
                f"{nname}={float(noise[s + 1, d]):.3g} gives z={float(z[s + 1, d]):.4g}. The inverse CDF is increasing: "
                + (
                    "did you use 1 - u (same law, but the SPEC fixes z = F^-1(u)) or flip a sign? "
                    if family.uniform
                    else "check the signs. "
                )
                + family.hint
            )

    @check(
        task,
        "pathwise derivatives agree with the derivative computed from the CDF at fixed noise (Question 1 (b))",
        points=0.5,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def implicit_gradient(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        out = subject.call(rsample_probe, task, params, noise, problem.weights())
        z = _check_shape_dtype(out, noise, task)
        _require_finite(family, z, noise)
        expect(
            out["requires_grad"],
            f"the samples of {task} are not differentiable in {', '.join(names)}: did you detach, use .sample(), "
            "torch.no_grad() or numpy? Build z from the parameters with torch operations",
        )
        want = _implicit_derivatives(family, z, params)
        for name, got, exp in zip(names, out["derivs"], want):
            _compare_derivative(
                family,
                name,
                got,
                exp,
                noise,
                "-∂F/∂{p} / q" if family.uniform else "the identity",
            )

    @check(task, f"location-scale structure: {family.structure_text}", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def structure(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        standard = tuple(torch.full_like(p, v) for p, v in zip(params, family.standard))
        z0 = _check_shape_dtype(
            subject.call(rsample_probe, task, standard, noise), noise, task
        )
        _require_finite(family, z0, noise)
        _require_finite(family, z, noise)
        built = family.compose(z0, *params)
        if not _close(z, built, rtol=1e-9, atol=1e-12):
            err = torch.where(
                torch.isfinite(built),
                (z - built).abs() / (1 + built.abs()),
                torch.full_like(z, math.inf),
            )
            index = _worst(err)
            std = ", ".join(f"{n}={v:g}" for n, v in zip(names, family.standard))
            got_z, want_z = show_pair(float(z[index]), float(built[index]))
            raise Failure(
                f"{family.structure_text} fails at {_at(family, noise, index)}: z = {got_z} but the standard "
                f"sample ({std}) is {float(z0[index]):.6g}, which gives {want_z}. "
                "Each parameter should enter once, the same way for every sample: "
                + family.hint
            )

    @check(
        task,
        f"finite and accurate for {nname} in the far tails (float64)",
        points=0.125,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def tails(subject: Subject, problem: SamplerProblem) -> None:
        params = problem.tensors()
        noise = _tail_noise(family, problem.dim)
        weights = torch.ones_like(noise)
        out = subject.call(rsample_probe, task, params, noise, weights)
        z = _check_shape_dtype(out, noise, task)
        _require_finite(family, z, noise)
        if out["derivs"] is not None:
            for name, g in zip(names, out["derivs"]):
                bad = ~torch.isfinite(g)
                if bad.any():
                    index = _worst(bad.to(DTYPE))
                    raise Failure(
                        f"dz/d{name} is {float(g[index])} at {_at(family, noise, index)}: the sample is finite but its "
                        "gradient is not; avoid torch.where/clamp branches that produce inf or NaN"
                    )
        _tail_accuracy(family, z, noise, params)

    @check(task, "does not modify its inputs or leave .grad on them", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def no_side_effects(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        out = subject.call(rsample_probe, task, params, noise)
        expect_no_side_effects(
            task,
            out,
            (*names, nname),
            mutated="e.g. u.clamp_(...), eps.mul_(...): work on new tensors (u.clamp(...), eps * sigma)",
            grad_left=_SAMPLER_BUILDS_Z,
        )

    del inverts_noise, monotone, implicit_gradient, structure, tails, no_side_effects


def _implicit_derivatives(
    family: Family, z: Tensor, params: Sequence[Tensor]
) -> list[Tensor]:
    r"""Per-sample :math:`-\partial_\lambda P / \partial_z P` at the student's own samples."""
    zleaf = z.detach().clone().requires_grad_(True)
    leaves = [p.detach().expand_as(z).clone().requires_grad_(True) for p in params]
    pivot = family.pivot(zleaf, *leaves)
    grads = torch.autograd.grad(pivot.sum(), [zleaf, *leaves])
    # Outside the support (a negative log-normal sample) the pivot is NaN but its partial
    # derivatives may not be: mark those samples so they are reported, not compared.
    density = torch.where(
        torch.isfinite(pivot.detach()), grads[0], torch.full_like(grads[0], math.nan)
    )
    return [-g / density for g in grads[1:]]


def _compare_derivative(
    family: Family, name: str, got: Tensor, want: Tensor, noise: Tensor, formula: str
) -> None:
    finite = torch.isfinite(want)
    if not finite.all():
        index = _worst((~finite).to(DTYPE))
        raise Failure(
            f"at {_at(family, noise, index)} your z lies where the density is 0 or undefined (outside the support, "
            f"e.g. a negative log-normal sample), so dz/d{name} cannot satisfy the identity: {family.hint}"
        )
    tol = 1e-7 * want.abs() + 1e-9
    err = torch.where(finite, (got - want).abs() - tol, torch.zeros_like(want))
    if not (err > 0).any():
        return
    index = _worst(err)
    if bool((got.abs() < 1e-12).all()):
        hint = f"z does not depend on {name} through autograd: did you detach {name}, use torch.no_grad(), .sample() or .item()?"
    elif _close(got, -want):
        hint = "the derivative has the wrong sign"
    else:
        hint = family.hint
    got_d, want_d = show_pair(float(got[index]), float(want[index]))
    raise Failure(
        f"dz/d{name} at {_at(family, noise, index)} is {got_d}, but {formula.format(p=name)} gives {want_d} at your z: {hint}"
    )


_TAIL_U = (1e-12, 1e-6, 1 - 1e-6, 1 - 1e-12)
_TAIL_EPS = (-30.0, -8.0, 8.0, 30.0)


def _tail_noise(family: Family, dim: int) -> Tensor:
    values = _TAIL_U if family.uniform else _TAIL_EPS
    return torch.tensor(values, dtype=DTYPE)[:, None].expand(len(values), dim).clone()


def _tail_accuracy(
    family: Family, z: Tensor, noise: Tensor, params: Sequence[Tensor]
) -> None:
    """Tail probabilities within 0.1% of u (or 1 - u): naive log(1 - u) passes at 1e-12, clamps do not."""
    with torch.no_grad():
        if family.uniform:
            assert family.lower is not None and family.upper is not None
            low = noise < 0.5
            got = torch.where(low, family.lower(z, *params), family.upper(z, *params))
            want = torch.where(low, noise, 1.0 - noise)
        else:
            got, want = family.pivot(z, *params), noise
    rel = torch.where(
        torch.isfinite(got),
        (got - want).abs() / want.abs(),
        torch.full_like(got, math.inf),
    )
    if (rel > 1e-3).any():
        index = _worst(rel)
        what = (
            ("F(z)" if bool(noise[index] < 0.5) else "1 - F(z)")
            if family.uniform
            else family.pivot_text
        )
        goal = float(want[index])
        raise Failure(
            f"at {_at(family, noise, index)} z is {float(z[index]):.6g}, so {what} = {float(got[index]):.4g} instead of "
            f"{goal:.4g} (off by more than 0.1%): the sample is not accurate in the tail. "
            + (
                "Don't clamp u or z, don't add a small constant inside a log, and compute in float64"
                if family.uniform
                else "Don't clamp eps or z, and don't go through a CDF and its inverse (Phi(eps) rounds to 1 for eps > 8)"
            )
        )


for _family in FAMILIES.values():
    _register_sampler_checks(_family)


# --------------------------------------------------------------------------------------
# reparam_grad
# --------------------------------------------------------------------------------------

SAMPLERS: dict[str, Any] = {
    "sinh_normal": SinhNormalSampler(),
    "shift": ShiftSampler(),
    "weibull": WeibullSampler(),
    "logistic": LogisticSampler(),
}
_SAMPLER_PARAMS: dict[str, tuple[tuple[str, Range], ...]] = {
    "sinh_normal": (("mu", LOC2), ("log_sigma", LOG_SIGMA)),
    "shift": (("mu", LOC2), ("log_sigma", LOG_SIGMA)),
    "weibull": (("scale", _positive()),),
    "logistic": (("loc", LOC2), ("scale", _positive(3.0))),
}
_INTEGRANDS: dict[str, tuple[type, Range]] = {
    "quadratic": (Quadratic, LOC3),
    "cosine": (Cosine, Range(0.3, 2.0, (1.0,), 0.1)),
    "bump": (Bump, Range(0.2, 2.0, (1.0,), 0.1)),
}


@dataclass(frozen=True)
class GradProblem:
    """A sampler, an integrand and its coefficients, parameters and a noise seed."""

    sampler: str
    integrand: str
    params: tuple[tuple[float, ...], ...]
    coef: tuple[float, ...]
    num_samples: int
    seed: int

    @property
    def dim(self) -> int:
        return len(self.coef)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in _SAMPLER_PARAMS[self.sampler])

    def rsample(self) -> Any:
        return SAMPLERS[self.sampler]

    def f(self) -> Any:
        return _INTEGRANDS[self.integrand][0](torch.tensor(self.coef, dtype=DTYPE))

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(torch.tensor(p, dtype=DTYPE) for p in self.params)

    def noise(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_samples, self.dim)
        if self.sampler in ("sinh_normal", "shift"):
            return torch.randn(shape, generator=g, dtype=DTYPE)
        return 1e-3 + (1 - 2e-3) * torch.rand(shape, generator=g, dtype=DTYPE)

    def per_sample(self) -> list[Tensor]:
        r"""Per-sample pathwise gradients :math:`f'(z_s)\,\partial z_s/\partial\lambda`, each ``(S, D)``."""
        params, noise = self.tensors(), self.noise()
        z = self.rsample()(*params, noise)
        slope = self.f().dfdz(z)
        return [slope * dz for dz in self.rsample().derivatives(params, noise)]

    def expected(self) -> list[Tensor]:
        """The closed-form estimate: the mean over samples of the per-sample gradients."""
        return [g.mean(0) for g in self.per_sample()]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        values = ", ".join(
            f"{n}={_fmt(p)}" for n, p in zip(self.param_names, self.params)
        )
        return f"{self.rsample()!r} with {values}; {self.f()!r}; noise {self.num_samples}x{self.dim}, seed={self.seed}"


@st.composite
def grad_problems(
    draw: st.DrawFn,
    samplers: Sequence[str] = tuple(SAMPLERS),
    integrands: Sequence[str] = tuple(_INTEGRANDS),
) -> GradProblem:
    """reparam_grad problems: S != D, both >= 2 (sum vs mean, S vs S*D stay distinguishable)."""
    sampler = draw(st.sampled_from(list(samplers)))
    integrand = draw(st.sampled_from(list(integrands)))
    num_samples, dim = draw(_SIZES)
    seed = draw(_SEEDS)
    rng = np.random.default_rng(seed)
    params = tuple(r.draw(rng, dim) for _, r in _SAMPLER_PARAMS[sampler])
    coef = _INTEGRANDS[integrand][1].draw(rng, dim)
    return GradProblem(sampler, integrand, params, coef, num_samples, seed)


#: Known wrong pathwise gradients, from the right ones ``w`` and the per-sample ones ``p``.
GRAD_BUGS: Catalogue = (
    (
        KnownBug(
            "reparam_grad/reparam_grad_sums_over_samples",
            "the gradient is {s} times too large: average over the {s} samples (mean), don't sum",
        ),
        lambda want, per_sample, s, d: [w * s for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_divides_by_numel",
            "the gradient is {d} times too small: divide by the number of samples S = {s}, not by S * D",
        ),
        lambda want, per_sample, s, d: [w / d for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_wrong_sign", "the gradient has the wrong sign"
        ),
        lambda want, per_sample, s, d: [-w for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_first_sample_only",
            "this is the gradient of the first sample only: average over all samples",
        ),
        lambda want, per_sample, s, d: [p[0] for p in per_sample],
    ),
)


def _all_close(got: Sequence[Tensor], candidate: Sequence[Tensor]) -> bool:
    return all(_close(g, c) for g, c in zip(got, candidate))


def grad_hint(
    problem: GradProblem, got: Sequence[Tensor], want: Sequence[Tensor]
) -> str:
    """Name the likely bug when the student's gradients are a known distortion of the right ones."""
    if all(bool((g.abs() < 1e-12).all()) for g in got):
        return "the gradients are zero: is z connected to params? don't detach, don't use .sample() or torch.no_grad()"
    s, d = problem.num_samples, problem.dim
    bug = first_known_bug(got, GRAD_BUGS, _all_close, want, problem.per_sample(), s, d)
    if bug is not None:
        return bug.text(s=s, d=d)
    return "call rsample(*params, noise) with the noise you were given (draw nothing new) and average the gradient of f over the samples"


def compare_grads(
    problem: GradProblem, got: Sequence[Tensor], want: Sequence[Tensor], source: str
) -> None:
    """Fail with the worst coordinate and a hint unless the gradients agree to ~1e-8."""
    scale = [(g.abs().mean(0) + 1.0) for g in problem.per_sample()]
    for name, g, w, sc in zip(problem.param_names, got, want, scale):
        tol = 1e-8 * w.abs() + 1e-10 * sc
        err = (g - w).abs() - tol
        if not torch.isfinite(g).all() or (err > 0).any():
            d = int(
                torch.argmax(
                    torch.where(torch.isfinite(g), err, torch.full_like(err, math.inf))
                )
            )
            got_g, want_g = show_pair(float(g[d]), float(w[d]))
            raise Failure(
                f"the gradient for {name}[{d}] is {got_g}, but {source} is {want_g}: "
                + grad_hint(problem, got, want)
            )


@check(
    "reparam_grad",
    "z = mu + sigma sinh(eps), f = sum((z - k)^2): equals (1/S) sum_s 2(z_s - k) dz_s/dparam",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems(samplers=("sinh_normal",), integrands=("quadratic",)))
def gaussian_quadratic_closed_form(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "any sampler and parameter count (Weibull scale, logistic loc/scale): matches per-sample closed forms",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems(samplers=("weibull", "logistic")))
def other_samplers_closed_form(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "a parameter rsample does not use gets a zero gradient tensor, not None",
    points=0.25,
)
@settings(SAMPLER_SETTINGS, max_examples=5)
@given(problem=grad_problems(samplers=("shift",)))
def unused_parameter_zero_gradient(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "params and noise unmodified, no .grad or requires_grad left on params, same result when called twice",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems())
def no_side_effects(subject: Subject, problem: GradProblem) -> None:
    args = (problem.f(), problem.rsample(), problem.tensors(), problem.noise())
    names = problem.param_names
    for requires_grad in (False, True):
        out = subject.call(reparam_grad_probe, *args, 2, requires_grad)
        kind = "leaf params that require grad" if requires_grad else "plain tensors"
        expect_no_side_effects(
            "reparam_grad",
            out,
            (*names, "noise"),
            mutated="it must only compute gradients (no optimizer step, no in-place ops on the inputs)",
            grad_left=f"params given as {kind}: use torch.autograd.grad, or differentiate copies "
            "(p.detach().requires_grad_()) so the caller's params stay clean",
            flag_changed="the caller's tensors: differentiate copies, p.detach().requires_grad_()",
        )
        expect_no_graph(
            "reparam_grad",
            out["graph"],
            [f"the gradient for {n}" for n in names],
            inputs=f"params as {kind}",
        )
        for name, first, second in zip(names, out["grads"], present(out["again"], "")):
            expect(
                _close(first, second, rtol=1e-12, atol=1e-14),
                f"calling reparam_grad twice gave different gradients for {name} "
                f"({' then '.join(show_pair(float(first[0]), float(second[0])))}): gradients "
                "accumulate in .grad, or new noise is drawn; use the noise you are given",
            )


# --------------------------------------------------------------------------------------
# Compositions with several noise draws per sample: gamma_rsample, student_t_rsample.
# Noise is (S, k, D) and samples are (S, D), so these tasks get their own problems, probe
# and properties; the judge still knows only closed forms (the Erlang CDF, the pivot of a
# location-scale family) and invariants (additivity, scale invariance), never the answer's code.
# --------------------------------------------------------------------------------------

__all__ += [
    "COMPOSED_PARAMS",
    "ComposedProblem",
    "composed_problems",
    "composed_probe",
    "diagnose_composed",
]

#: task -> (parameter names and where they are drawn, noise name)
COMPOSED_PARAMS: dict[str, tuple[tuple[tuple[str, Range], ...], str]] = {
    "gamma_rsample": ((("rate", _positive()),), "u"),
    "student_t_rsample": ((("loc", LOC3), ("scale", _positive())), "eps"),
}


@dataclass(frozen=True)
class ComposedProblem:
    """Parameters (one value per dimension), noise sizes ``S x k x D`` and a seed."""

    task: str
    params: tuple[tuple[float, ...], ...]
    num_samples: int
    columns: int  # k for the Gamma shape, nu + 1 for Student's t
    seed: int

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in COMPOSED_PARAMS[self.task][0])

    @property
    def noise_name(self) -> str:
        return COMPOSED_PARAMS[self.task][1]

    @property
    def dim(self) -> int:
        return len(self.params[0])

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(torch.tensor(p, dtype=DTYPE) for p in self.params)

    def _generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed + salt) % 2**63)

    def noise(self, salt: int = 0) -> Tensor:
        """``(S, k, D)``: u in [0.001, 0.999] (tails have their own check) or eps ~ N(0, 1)."""
        shape = (self.num_samples, self.columns, self.dim)
        if self.noise_name == "u":
            return 1e-3 + (1 - 2e-3) * torch.rand(
                shape, generator=self._generator(salt), dtype=DTYPE
            )
        return torch.randn(shape, generator=self._generator(salt), dtype=DTYPE)

    def weights(self, salt: int = 2) -> Tensor:
        """Random positive cotangents in [0.5, 1.5], ``(S, D)``."""
        return 0.5 + torch.rand(
            (self.num_samples, self.dim), generator=self._generator(salt), dtype=DTYPE
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        values = ", ".join(
            f"{n}={_fmt(p)}" for n, p in zip(self.param_names, self.params)
        )
        return (
            f"{self.task}({values}, {self.noise_name}: {self.num_samples}x{self.columns}x{self.dim} "
            f"(S x k x D), seed={self.seed})"
        )


_COMPOSED_SIZES = distinct_sizes(3, 2, 6)


@st.composite
def composed_problems(draw: st.DrawFn, task: str) -> ComposedProblem:
    """S, k, D pairwise distinct (an axis mix-up changes the shape or the value); k >= 2 for
    the Gamma (k = 1 hides mean-vs-sum) and nu = k - 1 >= 2 for Student's t (nu = 1 hides it)."""
    num_samples, columns, dim = draw(
        _COMPOSED_SIZES.filter(
            lambda s: s[1] >= (3 if task == "student_t_rsample" else 2)
        )
    )
    seed = draw(_SEEDS)
    rng = np.random.default_rng(seed)
    params = tuple(r.draw(rng, dim) for _, r in COMPOSED_PARAMS[task][0])
    return ComposedProblem(task, params, num_samples, columns, seed)


def composed_probe(
    student: Student,
    name: str,
    params: tuple[Tensor, ...],
    noise: Tensor,
    weights: Tensor | None = None,
) -> SampleOutput:
    r"""Call ``student.<name>(*params, noise)`` (noise ``(S, k, D)``) with the params as fresh leaves.

    With ``weights`` (``(S, D)``), also return per-sample derivatives
    :math:`\partial z_{sd}/\partial\lambda_d`, one backward pass per sample row, as in
    :func:`rsample_probe`.

    Returns:
        The samples and the side effects on ``(*params, noise)`` (:class:`SampleOutput`).
    """
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    noise_arg = noise.detach().clone()
    want_shape = (noise.shape[0], noise.shape[2])
    z = getattr(student, name)(*leaves, noise_arg)
    if not isinstance(z, torch.Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(z).__name__}, expected a torch.Tensor of shape {want_shape}",
        )
    out: SampleOutput = {
        "z": z.detach().clone(),
        "dtype": str(z.dtype).replace("torch.", ""),
        "requires_grad": bool(z.requires_grad),
        "derivs": None,
        **probes.side_effects([*params, noise], [*leaves, noise_arg]),
    }
    if weights is not None and z.requires_grad and tuple(z.shape) == want_shape:
        derivs = [torch.zeros(want_shape, dtype=DTYPE) for _ in leaves]
        for s in range(z.shape[0]):
            row = torch.autograd.grad(
                z[s],
                leaves,
                grad_outputs=weights[s].to(z.dtype),
                retain_graph=True,
                allow_unused=True,
            )
            for i, g in enumerate(row):
                if g is not None:
                    derivs[i][s] = g.detach().to(DTYPE) / weights[s]
        out["derivs"] = derivs
    return out


# Wrong formulas, as functions of (noise, *params), each with what it tells the student.
# Only the *wrong* formulas are written here, and the exponential's quantile is found by
# bisection on its CDF: the public checks never contain the answer.
def _unit_exponentials(u: Tensor) -> Tensor:
    """Unit-rate exponential quantiles of every entry of ``u``, by bisection on the CDF."""
    one = torch.ones((), dtype=u.dtype)
    return _bisect(_exp_cdf, (one,), u, torch.zeros_like(u), torch.full_like(u, 50.0))


def _t_ratio(eps: Tensor, chi: Tensor) -> Tensor:
    return eps[:, 0] / chi


_GAMMA_SUSPECTS: Catalogue = (
    _suspect(
        "gamma_rsample/gamma_rsample_mean_instead_of_sum",
        lambda u, rate: _unit_exponentials(u).mean(1) / rate,
        "you averaged the k exponentials: Gamma(k, rate) is their sum (sum over axis 1, don't take the mean)",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_law_equivalent_log_u",
        lambda u, rate: _unit_exponentials(1 - u).sum(1) / rate,
        "you used u_j where the exponential's inverse CDF has 1 - u_j: same law, but the SPEC fixes each "
        "exponential as F^-1(u_j), a different function of the noise",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_multiplies_by_rate",
        lambda u, rate: _unit_exponentials(u).sum(1) * rate,
        "you multiplied by rate: rate is an inverse scale (mean k / rate), so divide by it",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_first_column_only",
        lambda u, rate: _unit_exponentials(u)[:, 0] / rate,
        "only the first exponential is used: Gamma(k, rate) is the sum of all k of them (u[:, j] for j < k)",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_log_one_plus_u_changes_law",
        lambda u, rate: torch.log1p(u).sum(1) / rate,
        "you wrote log(1 + u): that is not the exponential's inverse CDF (and this changes the law)",
    ),
)

_T_SUSPECTS: Catalogue = (
    _suspect(
        "student_t_rsample/student_t_rsample_divides_by_sum_not_mean",
        lambda e, loc, scale: (
            loc + scale * _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).sum(1)))
        ),
        "you divided by the root of the sum of squares: the chi-squared must be divided by nu, "
        "t = eps_0 / sqrt(sum_j eps_j^2 / nu) (a mean of squares, not a sum)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_missing_sqrt",
        lambda e, loc, scale: loc + scale * _t_ratio(e, (e[:, 1:] ** 2).mean(1)),
        "the square root is missing: t = eps_0 / sqrt(V / nu), not eps_0 / (V / nu)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_wrong_dof_includes_eps0",
        lambda e, loc, scale: loc + scale * _t_ratio(e, torch.sqrt((e**2).mean(1))),
        "eps_0 is inside your chi-squared too: the numerator's normal must be independent of the "
        "denominator, so use eps[:, 1:] (nu = k - 1 degrees of freedom)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_wrong_dof_divides_by_columns",
        lambda e, loc, scale: (
            loc + scale * _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).sum(1) / e.shape[1]))
        ),
        "wrong degrees of freedom: nu = eps.shape[1] - 1 (eps_0 is the numerator), divide the sum of "
        "squares by nu, not by eps.shape[1]",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_gaussian_only",
        lambda e, loc, scale: loc + scale * e[:, 0],
        "that is the normal sample: divide eps_0 by sqrt((1/nu) sum_j eps_j^2) to get Student's t",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_divides_by_scale",
        lambda e, loc, scale: (
            loc + _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).mean(1))) / scale
        ),
        _DIVIDED,
    ),
)


def diagnose_composed(
    task: str, z: Tensor, noise: Tensor, params: Sequence[Tensor]
) -> str:
    """A hint naming the bug when ``z`` matches a known wrong formula, else a generic hint."""
    if not torch.isfinite(z).all():
        return "z has NaN or infinite entries: is a log taken of a negative number or of 0, or a square root of one?"
    suspects = _GAMMA_SUSPECTS if task == "gamma_rsample" else _T_SUSPECTS
    if task == "gamma_rsample" and noise.shape[1] == 1:
        # With k = 1 a mean is the sum and the first column is all of them: not a diagnosis.
        suspects = tuple(x for i, x in enumerate(suspects) if i not in (0, 3))
    bug = first_known_bug(z, suspects, _finite_close, noise, *params)
    if bug is not None:
        return bug.hint
    if task == "gamma_rsample":
        return "z should be the sum over j of the exponential samples F^-1(u[:, j]) with rate `rate`"
    return "z = loc + scale * t with t = eps[:, 0] / sqrt(sum_{j>=1} eps[:, j]^2 / nu), nu = eps.shape[1] - 1"


def _composed_z(out: SampleOutput, noise: Tensor, task: str) -> Tensor:
    z = out["z"]
    want = (noise.shape[0], noise.shape[2])
    expect(
        tuple(z.shape) == want,
        f"{task} returned shape {tuple(z.shape)} for noise of shape {tuple(noise.shape)} (S x k x D): return "
        f"one sample per row and column, shape {want}; combine the k draws along axis 1",
    )
    expect(
        out["dtype"] == "float64",
        f"{task} returned {out['dtype']} for float64 inputs: don't convert (no .float(), no numpy round trip)",
    )
    bad = ~torch.isfinite(z)
    if bad.any():
        s, d = (int(i) for i in torch.nonzero(bad)[0])
        raise Failure(
            f"z is {float(z[s, d])} at sample {s}, column {d}: a log of a negative number or of 0, "
            "or a division by 0? check the signs inside the logs"
        )
    return z.to(DTYPE)


def _first_bad(err: Tensor) -> tuple[int, int]:
    s, d = _worst(err)
    return int(s), int(d)


def _erlang_cdf(z: Tensor, rate: Tensor, k: int) -> Tensor:
    r"""Gamma CDF for an integer shape: :math:`1 - e^{-x}\sum_{m<k} x^m/m!`, :math:`x = \lambda z`."""
    x = rate * z
    terms = sum(x**m / math.factorial(m) for m in range(k))
    return 1.0 - torch.exp(-x) * terms


_GAMMA_TAIL_U = (1e-12, 1e-6, 1 - 1e-6, 1 - 1e-12)


@check(
    "gamma_rsample",
    "one exponential (k = 1) inverts its CDF: 1 - exp(-rate z) = u, also in the far tails",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_single_exponential_inverts_cdf(
    subject: Subject, problem: ComposedProblem
) -> None:
    (rate,) = problem.tensors()
    bulk = problem.noise()[:, :1]
    tails = torch.tensor(_GAMMA_TAIL_U, dtype=DTYPE)[:, None, None].expand(
        len(_GAMMA_TAIL_U), 1, problem.dim
    )
    for noise, tail in ((bulk, False), (tails.clone(), True)):
        z = _composed_z(
            subject.call(composed_probe, "gamma_rsample", (rate,), noise),
            noise,
            "gamma_rsample",
        )
        u = noise[:, 0]
        low = u < 0.5
        with torch.no_grad():
            got = torch.where(low, _exp_cdf(z, rate), _exp_sf(z, rate))
        want = torch.where(low, u, 1.0 - u)
        # Bulk: F(z) = u to 1e-10 (float64 rounding of a log is ~1e-16 relative). Tails: the
        # tail probability within 0.1% (-log(1 - u) with u = 1e-12 loses ~1e-4 relative: allowed).
        err = (got - want).abs() / want if tail else (got - want).abs()
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        tol = 1e-3 if tail else 1e-10 / 0.5
        if (err > tol).any():
            s, d = _first_bad(err)
            what = "F(z)" if bool(low[s, d]) else "1 - F(z)"
            hint = diagnose_composed("gamma_rsample", z, noise, (rate,))
            if hint.startswith("z should") and (tail or float(err.max()) < 1e-5):
                hint = (
                    "the sample is not accurate in the tail"
                    if tail
                    else "z is slightly off"
                ) + ": don't clamp u or z, don't add a small constant inside a log"
            raise Failure(
                f"with k = 1 (u of shape {tuple(noise.shape)}), at u={show_noise(float(u[s, d]))} (sample {s}, column {d}) "
                f"z is {float(z[s, d]):.6g}, so {what} = {' instead of '.join(show_pair(float(got[s, d]), float(want[s, d])))}: {hint}"
            )


@check(
    "gamma_rsample",
    "composition: independent parts add up, z(u) = z(u[:, :1]) + z(u[:, 1:])",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_parts_add_up(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    whole = _composed_z(
        subject.call(composed_probe, "gamma_rsample", params, noise),
        noise,
        "gamma_rsample",
    )
    parts = [noise[:, :1].clone(), noise[:, 1:].clone()]
    first, rest = (
        _composed_z(
            subject.call(composed_probe, "gamma_rsample", params, p), p, "gamma_rsample"
        )
        for p in parts
    )
    built = first + rest
    # Sums of k <= 6 positive terms: agreement to 1e-12 relative is rounding only.
    if not _close(whole, built, rtol=1e-12, atol=1e-14):
        s, d = _first_bad((whole - built).abs() / (1 + built.abs()))
        raise Failure(
            f"at sample {s}, column {d}: z with all k = {problem.columns} columns of u is {float(whole[s, d]):.8g}, but "
            f"z from column 0 alone plus z from the other {problem.columns - 1} is {float(built[s, d]):.8g}. A Gamma(k) "
            "sample is a sum of k independent exponentials, so its parts must add up: "
            + diagnose_composed("gamma_rsample", whole, noise, params)
        )


@check(
    "gamma_rsample",
    "pathwise derivative in the rate agrees with the one computed from the CDF at fixed noise",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_implicit_gradient(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    out = subject.call(
        composed_probe, "gamma_rsample", params, noise, problem.weights()
    )
    z = _composed_z(out, noise, "gamma_rsample")
    expect(
        out["requires_grad"] and out["derivs"] is not None,
        "the samples of gamma_rsample are not differentiable in rate: did you detach, use .sample(), "
        "torch.no_grad() or numpy? Build z from rate with torch operations",
    )
    zleaf = z.detach().clone().requires_grad_(True)
    rate = params[0].expand_as(z).clone().requires_grad_(True)
    cdf = _erlang_cdf(zleaf, rate, problem.columns)
    dz, drate = torch.autograd.grad(cdf.sum(), [zleaf, rate])
    want = -drate / dz  # the Erlang CDF in closed form, differentiated by autograd
    got = out["derivs"][0]
    # Both sides are O(z / rate) computed in float64 (the identity's autograd has no
    # cancellation): 1e-7 relative is rounding with a wide margin.
    err = (got - want).abs() - (1e-7 * want.abs() + 1e-10)
    if (err > 0).any():
        s, d = _first_bad(err)
        if bool((got.abs() < 1e-12).all()):
            hint = "z does not depend on rate through autograd: did you detach rate or use .item()?"
        elif _close(got, -want):
            hint = "the derivative has the wrong sign"
        else:
            hint = (
                "rate is an inverse scale: each exponential is (something of u) / rate"
            )
        got_d, want_d = show_pair(float(got[s, d]), float(want[s, d]))
        raise Failure(
            f"dz/drate at sample {s}, column {d} is {got_d}, but -∂F/∂rate / q gives {want_d} at your z "
            f"(F the Gamma CDF with integer shape k = {problem.columns}): {hint}"
        )


@check(
    "gamma_rsample",
    "rate is an inverse scale: z(rate, u) = z(1, u) / rate",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_inverse_scale(subject: Subject, problem: ComposedProblem) -> None:
    (rate,), noise = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "gamma_rsample", (rate,), noise),
        noise,
        "gamma_rsample",
    )
    one = torch.ones_like(rate)
    z1 = _composed_z(
        subject.call(composed_probe, "gamma_rsample", (one,), noise),
        noise,
        "gamma_rsample",
    )
    if not _close(z, z1 / rate, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - z1 / rate).abs() / (1 + z.abs()))
        raise Failure(
            f"at sample {s}, column {d} z(rate={float(rate[d]):.3g}) is {float(z[s, d]):.6g} but z(rate=1) / rate is "
            f"{float(z1[s, d] / rate[d]):.6g}: rate must enter once, as a division of the whole sum"
            + (" (you multiplied by it)" if _close(z, z1 * rate) else "")
        )


@check("gamma_rsample", "z increases with every u[:, j]", points=0.125)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_monotone(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "gamma_rsample", params, noise),
        noise,
        "gamma_rsample",
    )
    for j in range(problem.columns):
        higher = noise.clone()
        higher[:, j] = noise[:, j] + 0.5 * (1 - noise[:, j])
        z2 = _composed_z(
            subject.call(composed_probe, "gamma_rsample", params, higher),
            higher,
            "gamma_rsample",
        )
        if (z2 <= z).any():
            s, d = _first_bad((z - z2).to(DTYPE))
            raise Failure(
                f"raising u[{s}, {j}, {d}] from {float(noise[s, j, d]):.3g} to {float(higher[s, j, d]):.3g} moved z from "
                f"{float(z[s, d]):.6g} to {float(z2[s, d]):.6g}: each exponential F^-1(u_j) increases with u_j. "
                "Did you use u instead of 1 - u, or drop a sign?"
            )


@check(
    "gamma_rsample", "does not modify its inputs or leave .grad on them", points=0.125
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_no_side_effects(subject: Subject, problem: ComposedProblem) -> None:
    out = subject.call(
        composed_probe, "gamma_rsample", problem.tensors(), problem.noise()
    )
    _no_composed_side_effects(out, "gamma_rsample", ("rate", "u"))


_SAMPLER_BUILDS_Z = "a sampler only builds z; don't call .backward() inside it"


def _no_composed_side_effects(
    out: SampleOutput, task: str, inputs: tuple[str, ...]
) -> None:
    expect_no_side_effects(
        task,
        out,
        inputs,
        mutated="e.g. u.clamp_(...), eps.pow_(2): work on new tensors",
        grad_left=_SAMPLER_BUILDS_Z,
    )


def _t_standard(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return (z - loc) / scale


@check(
    "student_t_rsample",
    "standardised samples give back eps_0: (z - loc)/scale * sqrt(sum_{j>=1} eps_j^2 / nu) = eps_0",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_pivot(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, eps),
        eps,
        "student_t_rsample",
    )
    nu = problem.columns - 1
    with torch.no_grad():
        back = _t_standard(z, *params) * torch.sqrt((eps[:, 1:] ** 2).sum(1) / nu)
    # back is eps_0 up to float64 rounding of a few operations: 1e-9 (1 + |eps_0|).
    err = (back - eps[:, 0]).abs() - 1e-9 * (1 + eps[:, 0].abs())
    if (err > 0).any():
        s, d = _first_bad(err)
        got_b, want_b = show_pair(float(back[s, d]), float(eps[s, 0, d]))
        raise Failure(
            f"at sample {s}, column {d} (nu = {nu}), your z gives (z - loc)/scale * sqrt(sum_j eps_j^2 / nu) = {got_b} "
            f"instead of eps_0 = {want_b}. "
            + diagnose_composed("student_t_rsample", z, eps, params)
        )


@check(
    "student_t_rsample",
    "a ratio of normals: scaling all the noise, z(c * eps) = z(eps), changes nothing",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_scale_invariant(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, eps),
        eps,
        "student_t_rsample",
    )
    scaled = 2.5 * eps
    z2 = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, scaled),
        scaled,
        "student_t_rsample",
    )
    if not _close(z, z2, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - z2).abs() / (1 + z.abs()))
        raise Failure(
            f"multiplying every eps by 2.5 moved z[{s}, {d}] from {float(z[s, d]):.6g} to {float(z2[s, d]):.6g}: t is a "
            "normal divided by the root of a mean of squared normals, so a common factor cancels. Is the square "
            "root missing, or is eps_0 not divided by anything?"
        )


@check(
    "student_t_rsample",
    "pathwise derivatives satisfy the implicit-gradient identity of a location-scale family: dz/dloc = 1, dz/dscale = (z - loc)/scale",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_implicit_gradient(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    out = subject.call(
        composed_probe, "student_t_rsample", params, eps, problem.weights()
    )
    z = _composed_z(out, eps, "student_t_rsample")
    expect(
        out["requires_grad"] and out["derivs"] is not None,
        "the samples of student_t_rsample are not differentiable in loc and scale: did you detach, use "
        ".sample(), torch.no_grad() or numpy?",
    )
    # F(z; loc, scale) = F_nu((z - loc)/scale): -∂λF/∂zF = -∂λP/∂zP with P the standardised z.
    zleaf = z.detach().clone().requires_grad_(True)
    leaves = [p.detach().expand_as(z).clone().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(_t_standard(zleaf, *leaves).sum(), [zleaf, *leaves])
    for name, got, g in zip(("loc", "scale"), out["derivs"], grads[1:]):
        want = -g / grads[0]
        err = (got - want).abs() - (1e-7 * want.abs() + 1e-10)
        if (err > 0).any():
            s, d = _first_bad(err)
            if bool((got.abs() < 1e-12).all()):
                hint = f"z does not depend on {name} through autograd: did you detach it or use .item()?"
            elif _close(got, -want):
                hint = "the derivative has the wrong sign"
            else:
                hint = "z = loc + scale * t, with t computed from eps alone"
            got_d, want_d = show_pair(float(got[s, d]), float(want[s, d]))
            raise Failure(
                f"dz/d{name} at sample {s}, column {d} is {got_d}, but the identity gives {want_d} at your z: {hint}"
            )


@check(
    "student_t_rsample",
    "location-scale structure: z(loc, scale, eps) = loc + scale * z(0, 1, eps)",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_structure(subject: Subject, problem: ComposedProblem) -> None:
    (loc, scale), eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", (loc, scale), eps),
        eps,
        "student_t_rsample",
    )
    standard = (torch.zeros_like(loc), torch.ones_like(scale))
    z0 = _composed_z(
        subject.call(composed_probe, "student_t_rsample", standard, eps),
        eps,
        "student_t_rsample",
    )
    built = loc + scale * z0
    if not _close(z, built, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - built).abs() / (1 + built.abs()))
        raise Failure(
            f"at sample {s}, column {d} z is {float(z[s, d]):.6g} but loc + scale * z(0, 1, eps) is {float(built[s, d]):.6g}: "
            + diagnose_composed("student_t_rsample", z, eps, (loc, scale))
        )


@check(
    "student_t_rsample",
    "does not modify its inputs or leave .grad on them",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_no_side_effects(subject: Subject, problem: ComposedProblem) -> None:
    out = subject.call(
        composed_probe, "student_t_rsample", problem.tensors(), problem.noise()
    )
    _no_composed_side_effects(out, "student_t_rsample", ("loc", "scale", "eps"))


# =========================================================================== gamma_implicit_rsample
# Implicit reparameterization of the Gamma in its (non-integer) shape. The grader passes the
# standard Gamma samples z0 in and reads the student's per-sample derivatives. The public
# checks state what the derivative must *do* (keep the CDF level F(z; shape) fixed), never how
# to compute it.

#: Shapes away from 1 and 2 (log Gamma(1) = log Gamma(2) = 0 hides a missing normaliser) and
#: from integers; rates away from 1 (hides z0 * rate against z0 / rate).
IMPLICIT_SHAPES = (0.35, 0.8, 1.6, 2.7, 5.5)
IMPLICIT_RATES = (0.5, 1.7, 3.0)


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


@dataclass(frozen=True)
class ImplicitGammaCase:
    """``S`` standard Gamma samples per coordinate at CDF levels in [0.02, 0.98], from ``seed``."""

    S: int
    shapes: tuple[float, ...]
    rates: tuple[float, ...]
    seed: int

    def arrays(self) -> tuple[Tensor, Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        shape = torch.tensor(self.shapes, dtype=DTYPE)
        rate = torch.tensor(self.rates, dtype=DTYPE)
        # moderate quantiles: the tails' densities underflow, which tests float64, not the idea
        u = 0.02 + 0.96 * torch.rand(
            self.S, len(self.shapes), generator=generator, dtype=DTYPE
        )
        return shape, rate, _gamma_quantile(shape, u)


def implicit_gamma_cases() -> st.SearchStrategy[ImplicitGammaCase]:
    """S in 2..5, D = 2 or 3 coordinates with distinct shapes (a broadcasting slip shows)."""

    def build(S: int, D: int, seed: int, data: Any) -> ImplicitGammaCase:
        return ImplicitGammaCase(S, data[0][:D], data[1][:D], seed)

    return st.builds(
        build,
        st.integers(2, 5),
        st.integers(2, 3),
        seeds(),
        st.tuples(
            st.permutations(IMPLICIT_SHAPES).map(tuple),
            st.lists(st.sampled_from(IMPLICIT_RATES), min_size=3, max_size=3).map(
                tuple
            ),
        ),
    )


class ImplicitGammaOutput(probes.SideEffects):
    """What :func:`gamma_implicit_probe` brings back (side effects on ``(shape, rate, z0)``).

    ``d_shape``/``d_rate`` hold the per-sample derivatives dz_sd / dshape_d and dz_sd / drate_d,
    shape ``(S, D)`` (z_sd depends on coordinate d's parameters only); None when ``z`` carries
    no graph to that parameter.
    """

    value: Tensor
    d_shape: Tensor | None
    d_rate: Tensor | None


def gamma_implicit_probe(
    student: Student, shape: Tensor, rate: Tensor, z0: Tensor
) -> ImplicitGammaOutput:
    """Call ``student.gamma_implicit_rsample`` on leaves and read per-sample derivatives."""
    shape_leaf = shape.detach().clone().requires_grad_(True)
    rate_leaf = rate.detach().clone().requires_grad_(True)
    args = (shape_leaf, rate_leaf, z0)
    before = probes.snapshot(args)
    value = student.gamma_implicit_rsample(*args)
    if not isinstance(value, Tensor) or tuple(value.shape) != tuple(z0.shape):
        raise StudentError(
            "bad_result",
            f"gamma_implicit_rsample returned {type(value).__name__} "
            f"{tuple(getattr(value, 'shape', ()))}; expected a tensor shaped like z0 "
            f"{tuple(z0.shape)}",
        )
    effects = probes.side_effects(before, args)
    per_param: list[Tensor | None] = []
    for leaf in (shape_leaf, rate_leaf):
        if not value.requires_grad:
            per_param.append(None)
            continue
        rows = []
        for s in range(value.shape[0]):
            (g,) = torch.autograd.grad(
                value[s].sum(), leaf, retain_graph=True, allow_unused=True
            )
            rows.append(torch.zeros_like(leaf) if g is None else g)
        per_param.append(torch.stack(rows).detach())
    return {
        "value": value.detach(),
        "d_shape": per_param[0],
        "d_rate": per_param[1],
        **effects,
    }


def run_implicit(
    subject: Subject, case: ImplicitGammaCase
) -> tuple[Tensor, Tensor, Tensor]:
    """The student's samples, dz/dshape and dz/drate per sample, after the shared checks."""
    shape, rate, z0 = case.arrays()
    out = subject.call(gamma_implicit_probe, shape, rate, z0)
    expect_no_side_effects(
        "gamma_implicit_rsample",
        out,
        ["shape", "rate", "z0"],
        mutated="z0 is the caller's noise: compute new tensors (no z0 /= rate)",
        grad_left="return the samples; the caller differentiates them",
    )
    d_shape, d_rate = out["d_shape"], out["d_rate"]
    if d_shape is None or d_rate is None:
        raise Failure(
            f"the samples carry no gradient to shape and rate ({case}): build them from the "
            "parameters you were given, without detaching them"
        )
    return out["value"], d_shape, d_rate


@check(
    "gamma_implicit_rsample",
    "returns z0 / rate with the scale derivative -z / rate",
    points=1,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_value_and_rate(subject: Subject, case: ImplicitGammaCase) -> None:
    _, rate, z0 = case.arrays()
    value, _, d_rate = run_implicit(subject, case)
    # both are one float64 division: 1e-12 relative is round-off with room to spare
    if not torch.allclose(value, z0 / rate, rtol=1e-12, atol=0.0):
        raise Failure(
            f"samples differ from z0 / rate on {case}: z0 ~ Gamma(shape, 1), and the rate "
            "is an inverse scale (Gamma(shape, rate) has mean shape / rate)"
        )
    want = -(z0 / rate) / rate
    if not torch.allclose(d_rate, want, rtol=1e-9, atol=1e-12):
        raise Failure(
            f"dz/drate is {_fmt(d_rate[0])} for the first sample, expected "
            f"{_fmt(want[0])} (-z / rate) on {case}: the rate should enter as a plain division"
        )


#: Relative step in the shape for the CDF-level check below.
IMPLICIT_STEP = 1e-4
#: Moving (shape, z) by (+-h, +-h dz/dshape) changes F by 2h (dF/dz dz/dshape + dF/dshape) +
#: O(h^3): relative to 2h |dF/dz dz/dshape| a correct derivative leaves ~h^2 ~ 1e-8 plus
#: gammainc's round-off (~1e-15) / (2h q |g|) < 1e-9 at the quantiles used; a derivative computed
#: by any finite difference with relative step 1e-7..1e-3 is within 1e-6. A wrong formula
#: (sign, no density, a wrong normaliser, no gradient) leaves residuals of order 1.
IMPLICIT_RTOL = 1e-5


@check(
    "gamma_implicit_rsample",
    "moving the shape by h and z by h dz/dshape keeps the CDF level F(z; shape) fixed",
    points=1.5,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_keeps_cdf_level(subject: Subject, case: ImplicitGammaCase) -> None:
    shape, rate, z0 = case.arrays()
    _, d_shape, _ = run_implicit(subject, case)
    dz0 = d_shape * rate  # derivative of the standard sample z0 = rate * z
    h = IMPLICIT_STEP * torch.clamp(shape, min=1.0)
    moved = torch.special.gammainc(shape + h, z0 + h * dz0) - torch.special.gammainc(
        shape - h, z0 - h * dz0
    )
    density = torch.exp(
        (shape - 1) * torch.log(z0) - z0 - torch.lgamma(shape)
    )  # the scale of a unit change: 2h q |g|, floored at 2h q
    scale = 2 * h * density * torch.clamp(dz0.abs(), min=1.0)
    residual = (moved.abs() / scale).nan_to_num(nan=float("inf"))
    worst = int(torch.argmax(residual.reshape(-1)))
    if float(residual.reshape(-1)[worst]) > IMPLICIT_RTOL:
        s, d = divmod(worst, z0.shape[1])
        raise Failure(
            f"sample {s}, coordinate {d} (shape {float(shape[d]):.3g}, z0 = {float(z0[s, d]):.4g}) "
            f"on {case}: your dz/dshape = {float(d_shape[s, d]):.4g} does not keep "
            f"u = F(z0; shape) fixed (the CDF moved by {float(moved[s, d]):.3g} for a step of "
            f"{float(h[d]):.1g}). Differentiate u = F(z(shape); shape) in the shape, as in "
            "Question 1 (b)"
        )
