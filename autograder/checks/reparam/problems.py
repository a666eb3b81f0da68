"""Problems of ``03_reparam``: the families (one per sampler task), parameter ranges,
problems and their strategies.

A :class:`Family` holds what the judge knows about one sampler task: its pivot and tails (from
:mod:`.closed_forms`), how it is built from its standard member, where its parameters are drawn
(:class:`Range`, away from bug-hiding values), and its known wrong formulas (``suspects``,
:func:`_suspect`: each names its corpus mutant). Problems are sizes plus a seed; their reprs
rebuild every tensor."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torch import Tensor

from autograder.checks.reparam.closed_forms import (
    Fn,
    _bisect,
    _cauchy_cdf,
    _cauchy_sf,
    _exp_cdf,
    _exp_sf,
    _gamma_quantile,
    _gauss_pivot,
    _gumbel_cdf,
    _gumbel_sf,
    _laplace_cdf,
    _laplace_sf,
    _lognormal_pivot,
)
from autograder.checks.reparam.probes import (
    DTYPE,
    Bump,
    Cosine,
    LogisticSampler,
    Quadratic,
    ShiftSampler,
    SinhNormalSampler,
    WeibullSampler,
    _fmt,
)
from autograder.compare import (
    Catalogue,
    KnownBug,
)
from autograder.strategies import distinct_sizes, seeds


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


_TAIL_U = (1e-12, 1e-6, 1 - 1e-6, 1 - 1e-12)


_TAIL_EPS = (-30.0, -8.0, 8.0, 30.0)


def _tail_noise(family: Family, dim: int) -> Tensor:
    values = _TAIL_U if family.uniform else _TAIL_EPS
    return torch.tensor(values, dtype=DTYPE)[:, None].expand(len(values), dim).clone()


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


_GAMMA_TAIL_U = (1e-12, 1e-6, 1 - 1e-6, 1 - 1e-12)


#: Shapes away from 1 and 2 (log Gamma(1) = log Gamma(2) = 0 hides a missing normaliser) and
#: from integers; rates away from 1 (hides z0 * rate against z0 / rate).
IMPLICIT_SHAPES = (0.35, 0.8, 1.6, 2.7, 5.5)


IMPLICIT_RATES = (0.5, 1.7, 3.0)


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
