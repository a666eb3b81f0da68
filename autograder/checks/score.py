r"""Public checks for ``02_score``: ``gaussian_score``, ``score_function_grad`` and
``score_function_grad_loo``.

Tabulated answers, autograd and invariants only (students can run these; no function here
computes ``gaussian_score``'s answer by its formula: issue 19).

Deterministic tier (the grader passes ``z``, so every call is exact in float64):

* ``gaussian_score`` against the right scores tabulated for :data:`TABULATED_SCORES`
  (``autograder/checks/score_answers.py``, from the reference), and on any problem against
  autograd of ``Normal.log_prob``;
* the estimators against :math:`\frac1S\sum_s f(z_s)\nabla\log q(z_s) + \nabla f(z_s)` with the
  scores of the Gaussian (autograd of ``Normal.log_prob``, per sample), the
  Bernoulli (:math:`z - \operatorname{sigmoid}(\ell)`) and the categorical
  (:math:`\operatorname{onehot}(z) - \operatorname{softmax}(\ell)`);
* exactness by enumeration: when ``z`` holds every point :math:`x` of a discrete support
  :math:`m_x` times and the integrand is the table :math:`\tilde f(x) = f(x)\, q(x)\, S/m_x`
  (``q`` frozen at the current parameters, so :math:`\tilde f` does not depend on them), the
  estimate :math:`\frac1S \sum_s \tilde f(z_s)\nabla\log q(z_s) = \sum_x q(x) f(x) \nabla\log q(x)`
  is the exact gradient of :math:`\sum_x q_\lambda(x) f(x)` (computed here by autograd of the
  exact expectation, not from the estimator's formula);
* linearity in ``f`` on fixed samples, and, for the leave-one-out estimator, invariance under
  :math:`f \to f + c` (the baseline absorbs constants; the plain estimate moves by
  :math:`c\,\overline{\nabla \log q}`).

Statistical tier (only where the student draws its own samples, ``z=None``): unbiasedness
against closed forms with the *known* per-sample variance (Gauss–Hermite quadrature for the
Gaussian, enumeration for the Bernoulli), ``n >= 100 * skewness**2`` and a Bonferroni-corrected
two-sided z-test; each property states its false-failure probability ``alpha``.

Problems print as their family, sizes and seed (``Case('gaussian', S=5, D=3, seed=7)``): that is
the smallest failing input a student reads, and it rebuilds every tensor exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial.hermite_e import hermegauss
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    Poisson,
)

from autograder import probes, stats, tables
from autograder.compare import (
    Catalogue,
    KnownBug,
    all_known_bugs,
    as_numpy,
    assert_close,
    expect_no_graph,
    expect_no_side_effects,
    first_known_bug,
    hint_for,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING, STATISTICAL
from autograder.strategies import seeds
from autograder.subject import Student, StudentError, Subject

__all__ = [
    "BernoulliFamily",
    "Case",
    "CategoricalFamily",
    "CosineCost",
    "DetachedCost",
    "GaussianFamily",
    "LinearCombination",
    "MultivariateGaussianFamily",
    "ParamDependentCost",
    "PoissonFamily",
    "QuadraticCost",
    "TableCost",
    "TanhLogitCost",
    "estimator_probe",
    "gaussian_score_probe",
    "cases",
    "estimator_law",
    "gaussian_score_cases",
    "repeat_estimator_probe",
    "stat_case",
]

#: Float64 estimators on given samples: round-off of these S-term averages is about 1e-13
#: relative, so 1e-6 admits any algebraic form (torch.distributions, a loop, a surrogate);
#: the known wrong variants differ by factors such as 1/S, -1, 1/D or by whole terms.
TIGHT = {"rtol": 1e-6}
#: Statistical properties run a fixed, small number of examples (their alpha is a union bound).
STAT_EXAMPLES = 3
STAT = settings(STATISTICAL, max_examples=STAT_EXAMPLES)
#: Deterministic properties: one exact comparison per example, so 20 examples (12 when an
#: example makes several calls) already see every family and size; keeps the suite near 10 s.
SOME = settings(GRADING, max_examples=20)
FEW = settings(GRADING, max_examples=12)
#: Draws per unbiasedness test (raised to 100·skew² when the estimator is skewed). Over 200
#: seeds the smallest |bias|/sd of a "score and f on different samples" bug is 0.148, i.e.
#: 9.4 standard errors at 4,000 draws against a threshold of 5.5: caught with probability
#: > 1 - 1e-4 on the worst seed. A per-sample Python loop still runs in a few seconds.
STAT_DRAWS = 4_000


# =========================================================================== families
# Every callable handed to student code is an instance of a module-level class here
# (picklable, a short repr); families ignore parameters they do not use, so an integrand
# may have parameters of its own.


class GaussianFamily:
    r""":math:`q = \mathcal N(\mu, \operatorname{diag}(e^{\log\sigma})^2)` from ``(mu, log_sigma)``.

    ``independent=False`` gives ``Normal`` with batch shape ``mu.shape`` (``log_prob`` must be
    summed over it); ``True`` wraps it in ``Independent`` (``log_prob`` is already ``(S,)``).
    """

    def __init__(self, independent: bool = False) -> None:
        self.independent = independent

    def __call__(self, mu: Tensor, log_sigma: Tensor, *unused: Tensor) -> Distribution:
        q = Normal(mu, torch.exp(log_sigma))
        return Independent(q, mu.dim()) if self.independent else q

    def __repr__(self) -> str:
        return (
            f"GaussianFamily(independent={self.independent})"
            if self.independent
            else "GaussianFamily()"
        )


class MultivariateGaussianFamily:
    r""":math:`\mathcal N(\mu, LL^\top)` with :math:`L` lower triangular from ``raw``: strictly lower
    part as is, diagonal :math:`e^{\mathrm{diag}(raw)}` (the upper part is unused: its gradient is 0)."""

    def __call__(self, mu: Tensor, raw: Tensor, *unused: Tensor) -> Distribution:
        tril = torch.tril(raw, diagonal=-1) + torch.diag_embed(
            torch.exp(torch.diagonal(raw))
        )
        return MultivariateNormal(mu, scale_tril=tril)

    def __repr__(self) -> str:
        return "MultivariateGaussianFamily()"


class BernoulliFamily:
    """Independent Bernoulli coordinates with ``logits`` (batch shape ``logits.shape``; no rsample)."""

    def __call__(self, logits: Tensor, *unused: Tensor) -> Distribution:
        return Bernoulli(logits=logits)

    def __repr__(self) -> str:
        return "BernoulliFamily()"


class CategoricalFamily:
    """One categorical variable over ``len(logits)`` classes (samples are integer class indices)."""

    def __call__(self, logits: Tensor, *unused: Tensor) -> Distribution:
        return Categorical(logits=logits)

    def __repr__(self) -> str:
        return "CategoricalFamily()"


class PoissonFamily:
    """Independent Poisson coordinates with rate ``exp(log_rate)`` (no rsample)."""

    def __call__(self, log_rate: Tensor, *unused: Tensor) -> Distribution:
        return Poisson(torch.exp(log_rate))

    def __repr__(self) -> str:
        return "PoissonFamily()"


# =========================================================================== integrands


def _flat(z: Tensor) -> Tensor:
    """``(S, ...)`` -> ``(S, -1)`` float64, so a cost sums over every axis but the sample axis."""
    return z.reshape(z.shape[0], -1).to(torch.float64)


class QuadraticCost:
    r""":math:`f(z) = \sum_j (z_j - k_j)^2`; independent of the parameters."""

    def __init__(self, k: Tensor) -> None:
        self.k = k

    def __call__(self, z: Tensor, *params: Tensor) -> Tensor:
        return ((_flat(z) - self.k.reshape(-1)) ** 2).sum(dim=1)

    def __repr__(self) -> str:
        return "QuadraticCost(k)"


class CosineCost:
    r""":math:`f(z) = c + \sum_j a_j \cos(k_j z_j)`: bounded (light-tailed score terms)."""

    def __init__(self, k: Tensor, amplitude: Tensor, offset: float = 0.0) -> None:
        self.k, self.amplitude, self.offset = k, amplitude, float(offset)

    def __call__(self, z: Tensor, *params: Tensor) -> Tensor:
        return self.offset + (
            self.amplitude.reshape(-1) * torch.cos(self.k.reshape(-1) * _flat(z))
        ).sum(dim=1)

    def expectation_grads(self, mu: Tensor, log_sigma: Tensor) -> tuple[Tensor, Tensor]:
        r"""Exact :math:`\nabla_\mu, \nabla_{\log\sigma}` of :math:`E_{\mathcal N(\mu,\sigma^2)} f`:
        :math:`-a k \sin(k\mu) e^{-k^2\sigma^2/2}` and :math:`-a k^2 \sigma^2 \cos(k\mu) e^{-k^2\sigma^2/2}`."""
        sigma = torch.exp(log_sigma)
        damp = torch.exp(-0.5 * (self.k * sigma) ** 2)
        d_mu = -self.amplitude * self.k * torch.sin(self.k * mu) * damp
        d_log_sigma = (
            -self.amplitude * (self.k * sigma) ** 2 * torch.cos(self.k * mu) * damp
        )
        return d_mu, d_log_sigma

    def __repr__(self) -> str:
        return (
            f"CosineCost(k, a, offset={self.offset:g})"
            if self.offset
            else "CosineCost(k, a)"
        )


class ParamDependentCost:
    r""":math:`f_\lambda(z) = \sum_j (z_j-\mu_j)^2 e^{-\log\sigma_j} + w_0 \sum_j \cos z_j + w_1^2`
    for ``params = (mu, log_sigma, w)``: its own gradient :math:`\nabla_\lambda f` must be added."""

    def __call__(
        self, z: Tensor, mu: Tensor, log_sigma: Tensor, w: Tensor, *unused: Tensor
    ) -> Tensor:
        zf = _flat(z)
        centred = zf - mu.reshape(-1)
        quadratic = (centred**2 * torch.exp(-log_sigma.reshape(-1))).sum(dim=1)
        return quadratic + w[0] * torch.cos(zf).sum(dim=1) + w[1] ** 2

    def grads(
        self, z: Tensor, mu: Tensor, log_sigma: Tensor, w: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample :math:`\\nabla f` in closed form, each ``(S, *param.shape)``."""
        centred = z - mu
        inv_sigma = torch.exp(-log_sigma)
        d_w = torch.stack(
            [torch.cos(_flat(z)).sum(dim=1), (2 * w[1]).expand(z.shape[0])], dim=1
        )
        return -2 * centred * inv_sigma, -(centred**2) * inv_sigma, d_w

    def __repr__(self) -> str:
        return "ParamDependentCost()"


class TanhLogitCost:
    r"""A discrete integrand that depends on the logits: :math:`\sum_j z_j \tanh \ell_j` (Bernoulli)
    or :math:`\tanh \ell_z` (categorical)."""

    def __call__(self, z: Tensor, logits: Tensor, *unused: Tensor) -> Tensor:
        if z.dtype in (torch.int64, torch.int32):
            return torch.tanh(logits)[z.long()]
        return (_flat(z) * torch.tanh(logits).reshape(-1)).sum(dim=1)

    def __repr__(self) -> str:
        return "TanhLogitCost()"


class DetachedCost:
    """``f`` with its gradient cut: the estimate without the :math:`\\nabla f` term (diagnosis only)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, z: Tensor, *params: Tensor) -> Tensor:
        return self.base(z, *params).detach()

    def __repr__(self) -> str:
        return f"DetachedCost({self.base!r})"


class TableCost:
    r""":math:`f(z) = \text{values}[\iota(z)]` on a discrete support: :math:`\iota(z) = z` for a
    categorical sample, :math:`\sum_j 2^j z_j` for a vector of bits; independent of the parameters."""

    def __init__(self, values: Tensor, binary: bool) -> None:
        self.values, self.binary = values, binary

    def __call__(self, z: Tensor, *params: Tensor) -> Tensor:
        if self.binary:
            bits = _flat(z).round().long()
            index = (bits * (2 ** torch.arange(bits.shape[1]))).sum(dim=1)
        else:
            index = z.long()
        return self.values[index]

    def __repr__(self) -> str:
        return f"TableCost({self.values.numel()} values)"


class LinearCombination:
    r""":math:`f = c + \sum_i a_i f_i` (linearity and shift-invariance checks)."""

    def __init__(
        self, terms: Sequence[Any], coefs: Sequence[float], offset: float = 0.0
    ) -> None:
        self.terms, self.coefs, self.offset = (
            tuple(terms),
            tuple(float(c) for c in coefs),
            float(offset),
        )

    def __call__(self, z: Tensor, *params: Tensor) -> Tensor:
        total = sum(c * term(z, *params) for c, term in zip(self.coefs, self.terms))
        return total + self.offset

    def __repr__(self) -> str:
        parts = " + ".join(f"{c:.3g}·{t!r}" for c, t in zip(self.coefs, self.terms))
        return parts + (f" + {self.offset:.3g}" if self.offset else "")


# =========================================================================== problems


def _signed(
    gen: torch.Generator, shape: tuple[int, ...], low: float, high: float
) -> Tensor:
    """Magnitudes uniform in ``[low, high]`` with random signs: never near 0."""
    magnitude = low + (high - low) * torch.rand(
        shape, generator=gen, dtype=torch.float64
    )
    sign = torch.where(
        torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0
    )
    return magnitude * sign.to(torch.float64)


def _draw(q: Distribution, num_samples: int, seed: int) -> Tensor:
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: fork_rng(devices=[]) restores no CUDA state, and
        # torch.manual_seed would also (lazily, with a stack trace each call) seed CUDA.
        torch.default_generator.manual_seed(seed)
        return q.sample((num_samples,))


FAMILIES = {
    "gaussian": ("mu", "log_sigma"),
    "gaussian_matrix": ("mu", "log_sigma"),
    "gaussian_independent": ("mu", "log_sigma"),
    "gaussian_f_theta": ("mu", "log_sigma", "w"),
    "mvn": ("mu", "raw_scale_tril"),
    "bernoulli": ("logits",),
    "bernoulli_f_theta": ("logits",),
    "categorical": ("logits",),
    "categorical_f_theta": ("logits",),
    "poisson": ("log_rate",),
}


@dataclass(frozen=True)
class Built:
    """Everything one call needs: the family, the integrand, the parameters and the samples."""

    make_q: Any
    f: Any
    params: tuple[Tensor, ...]
    z: Tensor
    names: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """A problem: ``S`` samples of a ``family`` of size ``D``, every tensor rebuilt from ``seed``.

    Parameters stay away from values that hide bugs: :math:`|\\mu| \\ge 0.2`,
    :math:`|\\log\\sigma| \\ge 0.15` (never :math:`\\sigma = 1`), logits away from 0, and
    ``S != D`` (a transposed axis cannot keep the right shape, a sum cannot pass for a mean).
    """

    family: str
    S: int
    D: int
    seed: int

    def __repr__(self) -> str:
        return f"Case({self.family!r}, S={self.S}, D={self.D}, seed={self.seed})"

    def build(self, offset: float = 0.0) -> Built:
        """The family, integrand (plus ``offset``), parameters and samples of this case."""
        gen = torch.Generator().manual_seed(self.seed)
        D, family = self.D, self.family
        if family.startswith("gaussian") or family == "mvn":
            shape = (2, D) if family == "gaussian_matrix" else (D,)
            mu = _signed(gen, shape, 0.2, 1.5)
            if family == "mvn":
                raw = 0.4 * torch.randn((D, D), generator=gen, dtype=torch.float64)
                raw = raw + torch.diag(
                    _signed(gen, (D,), 0.15, 0.6) - torch.diagonal(raw)
                )
                params: tuple[Tensor, ...] = (mu, raw)
                make_q: Any = MultivariateGaussianFamily()
            else:
                params = (mu, _signed(gen, shape, 0.15, 0.8))
                make_q = GaussianFamily(independent=family == "gaussian_independent")
            if family == "gaussian_f_theta":
                params = (*params, _signed(gen, (2,), 0.3, 1.5))
                f: Any = ParamDependentCost()
            elif torch.rand((), generator=gen) < 0.5:
                f = QuadraticCost(_signed(gen, shape, 0.3, 2.0))
            else:
                f = CosineCost(
                    _signed(gen, shape, 0.5, 1.5), _signed(gen, shape, 0.5, 2.0)
                )
        elif family.startswith(("bernoulli", "categorical")):
            params = (_signed(gen, (D,), 0.2, 1.5),)
            binary = family.startswith("bernoulli")
            make_q = BernoulliFamily() if binary else CategoricalFamily()
            size = 2**D if binary else D
            if family.endswith("f_theta"):
                f = TanhLogitCost()
            else:
                f = TableCost(_signed(gen, (size,), 0.5, 3.0), binary=binary)
        elif family == "poisson":
            params = (_signed(gen, (D,), 0.1, 1.0),)
            make_q = PoissonFamily()
            f = CosineCost(_signed(gen, (D,), 0.5, 1.5), _signed(gen, (D,), 0.5, 2.0))
        else:
            raise ValueError(f"unknown family {family!r}")
        if offset and isinstance(f, CosineCost):
            f = CosineCost(f.k, f.amplitude, f.offset + offset)
        elif offset and isinstance(f, TableCost):
            f = TableCost(f.values + offset, f.binary)
        elif offset:
            f = LinearCombination((f,), (1.0,), offset)
        # A seed of its own: a submission that ignores the given z and draws with the seed the
        # probe hands it must not get these very samples back.
        z = _draw(make_q(*params), self.S, (self.seed * 2654435761 + 12345) % 2**32)
        return Built(make_q, f, params, z, FAMILIES[family])


def cases(
    families: Sequence[str],
    sizes: tuple[int, int] = (2, 9),
    dims: tuple[int, int] = (2, 5),
) -> st.SearchStrategy[Case]:
    """Cases of the given families with ``S != D`` (never ``S = 1``); a check that runs several
    families on the same sizes and seed draws the placeholder family ``"every"``."""

    @st.composite
    def build(draw: Any) -> Case:
        family = draw(st.sampled_from(tuple(families)))
        S = draw(st.integers(*sizes))
        D = draw(st.integers(*dims).filter(lambda d: d != S))
        return Case(family, S, D, draw(seeds()))

    return build()


@dataclass(frozen=True)
class GaussianScoreCase:
    """``z`` of shape ``(S, D)`` around :math:`\\mathcal N(\\mu, \\sigma^2)`, rebuilt from ``seed``;
    ``spread`` widens the samples and the scales (the hidden tier's extreme inputs)."""

    S: int
    D: int
    seed: int
    spread: float = 1.0

    def __repr__(self) -> str:
        extra = f", spread={self.spread:g}" if self.spread != 1.0 else ""
        return f"GaussianScoreCase(S={self.S}, D={self.D}, seed={self.seed}{extra})"

    def arrays(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, mu, log_sigma)`` in float64."""
        gen = torch.Generator().manual_seed(self.seed)
        mu = _signed(gen, (self.D,), 0.2, 1.5 * self.spread)
        log_sigma = _signed(gen, (self.D,), 0.15, 0.8 * self.spread)
        eps = self.spread * torch.randn(
            (self.S, self.D), generator=gen, dtype=torch.float64
        )
        return torch.addcmul(mu, torch.exp(log_sigma), eps), mu, log_sigma


#: The problems whose right scores ship with the public checks
#: (``autograder/checks/score_answers.py``, written by ``scripts/tabulate_answers.py``): the
#: closed-form property draws from these, the hidden tier and the autograd property from any.
TABULATED_SCORES: tuple[GaussianScoreCase, ...] = tuple(
    GaussianScoreCase(S, D, seed)
    for S, D, seed in (
        (2, 3, 0),
        (3, 2, 1),
        (4, 3, 2),
        (5, 2, 3),
        (2, 6, 4),
        (6, 4, 5),
        (7, 5, 6),
        (8, 3, 7),
        (9, 6, 8),
        (3, 5, 9),
        (5, 4, 10),
        (9, 2, 11),
        (4, 6, 12),
        (8, 5, 13),
        (6, 2, 14),
        (7, 3, 15),
        (2, 4, 16),
        (5, 6, 17),
        (9, 4, 18),
        (3, 6, 19),
    )
)
SCORE_FIELDS = ("d_mu", "d_log_sigma")


def score_key(case: GaussianScoreCase, field: str) -> str:
    """Where ``case``'s ``field`` sits in the table of right scores."""
    return f"{case.S}/{case.D}/{case.seed}/{case.spread:g}/{field}"


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


def gaussian_score_cases(
    sizes: tuple[int, int] = (2, 9),
    dims: tuple[int, int] = (2, 6),
    spreads: Sequence[float] = (1.0,),
    distinct: bool = True,
) -> st.SearchStrategy[GaussianScoreCase]:
    """Gaussian-score problems, with ``S != D`` unless ``distinct`` is False (edge shapes)."""

    @st.composite
    def build(draw: Any) -> GaussianScoreCase:
        S = draw(st.integers(*sizes))
        D = draw(st.integers(*dims).filter(lambda d: d != S or not distinct))
        return GaussianScoreCase(
            S, D, draw(seeds()), draw(st.sampled_from(tuple(spreads)))
        )

    return build()


# =========================================================================== probes
# Module-level functions in a public module: they run next to the student's code.


def _is_torch_frame(error: BaseException) -> bool:
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "torch" in last.replace("\\", "/").split("/")


def _run_student(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        if _is_torch_frame(error):
            detail = f" ({error})" if str(error) else ""
            raise StudentError(
                "raised",
                f"called a method this distribution does not implement{detail}: use only q.sample() and "
                "q.log_prob(); Bernoulli, Categorical and Poisson have no rsample",
            ) from None
        raise


def _gradients(name: str, value: Any, params: tuple[Tensor, ...]) -> list[Tensor]:
    if isinstance(value, Tensor) or not isinstance(value, (tuple, list)):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(value).__name__}; expected a tuple with one gradient tensor per "
            f"parameter ({len(params)} here)",
        )
    if len(value) != len(params):
        raise StudentError(
            "bad_result",
            f"{name} returned {len(value)} gradients for {len(params)} parameters: one per parameter",
        )
    for i, g in enumerate(value):
        if g is None:
            raise StudentError(
                "bad_result",
                f"{name} returned None for parameter {i}: return zeros where the estimate does not depend "
                "on a parameter (torch.autograd.grad(..., allow_unused=True) gives None there)",
            )
        if not isinstance(g, Tensor):
            raise StudentError(
                "bad_result",
                f"{name} returned a {type(g).__name__} for parameter {i}, not a tensor",
            )
    return [g.detach() for g in value]


class ScoresOutput(probes.SideEffects):
    """What :func:`gaussian_score_probe` brings back (side effects on ``(z, mu, log_sigma)``)."""

    value: tuple[Tensor, Tensor]
    #: Positions of the two scores that still hold an autograd graph.
    graph: list[int]


class EstimateOutput(probes.SideEffects):
    """What :func:`estimator_probe` brings back (side effects on ``(*params, z)``)."""

    grads: list[Tensor]
    #: Positions of the returned gradients that still hold an autograd graph.
    graph: list[int]


def gaussian_score_probe(
    student: Student,
    z: Tensor,
    mu: Tensor,
    log_sigma: Tensor,
    requires_grad: bool = False,
) -> ScoresOutput:
    """Call ``student.gaussian_score`` and report its result and side effects on ``(z, mu, log_sigma)``."""
    mu, log_sigma = (
        t.detach().clone().requires_grad_(requires_grad) for t in (mu, log_sigma)
    )
    args = (z, mu, log_sigma)
    before = probes.snapshot(args)
    value = student.gaussian_score(*args)
    if (
        isinstance(value, Tensor)
        or not isinstance(value, (tuple, list))
        or len(value) != 2
    ):
        raise StudentError(
            "bad_result",
            f"gaussian_score returned a {type(value).__name__}; expected a tuple (d_mu, d_log_sigma)",
        )
    if not all(isinstance(v, Tensor) for v in value):
        raise StudentError(
            "bad_result", "gaussian_score must return two tensors (d_mu, d_log_sigma)"
        )
    return {
        "value": (value[0].detach(), value[1].detach()),
        "graph": probes.graph_held(list(value)),
        **probes.side_effects(before, args),
    }


def estimator_probe(
    student: Student,
    name: str,
    f: Any,
    make_q: Any,
    params: tuple[Tensor, ...],
    num_samples: int,
    z: Tensor | None = None,
    seed: int = 0,
    requires_grad: bool = True,
) -> EstimateOutput:
    """Call ``student.<name>(f, make_q, params, num_samples, z=z)`` under a seeded, forked RNG.

    Returns:
        The gradients and the side effects on ``(*params, z)`` (:class:`EstimateOutput`).
    """
    leaves = tuple(p.detach().clone().requires_grad_(requires_grad) for p in params)
    before = probes.snapshot([*leaves, z])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        value = _run_student(
            getattr(student, name), f, make_q, leaves, num_samples, z=z
        )
    grads = _gradients(name, value, leaves)
    return {
        "grads": grads,
        "graph": probes.graph_held(list(value)),
        **probes.side_effects(
            before,
            [*leaves, z],
            requires_grad=[*(requires_grad for _ in leaves), None],
        ),
    }


def repeat_estimator_probe(
    student: Student,
    name: str,
    f: Any,
    make_q: Any,
    params: tuple[Tensor, ...],
    num_samples: int,
    reps: int,
    seed: int,
) -> list[Tensor]:
    """``reps`` independent estimates with ``z=None`` (one seeded RNG stream); each ``(reps, *param.shape)``."""
    leaves = tuple(p.detach().clone().requires_grad_(True) for p in params)
    fn = getattr(student, name)
    runs = []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for _ in range(reps):
            runs.append(
                _gradients(
                    name,
                    _run_student(fn, f, make_q, leaves, num_samples, z=None),
                    leaves,
                )
            )
    return [
        torch.stack([run[i].to(torch.float64) for run in runs])
        for i in range(len(leaves))
    ]


# =========================================================================== closed forms


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


#: The (S, D, seed) of the fixed problems on which the public checks compare an estimator on
#: given samples against the exact estimate tabulated from the reference
#: (``autograder/checks/score_answers.py``), for every family of :data:`ESTIMATE_FAMILIES`;
#: S != D (a transposed axis shows) and S >= 3 (a sum over samples, S times too large, is
#: then told apart from a term counted twice).
TABULATED_ESTIMATES: tuple[tuple[int, int, int], ...] = (
    (4, 2, 0),
    (3, 2, 1),
    (4, 3, 2),
    (5, 2, 3),
    (6, 4, 4),
    (7, 3, 5),
    (8, 5, 6),
    (9, 2, 7),
    (3, 5, 8),
    (5, 4, 9),
)
ESTIMATE_FAMILIES = (
    "gaussian",
    "gaussian_matrix",
    "gaussian_f_theta",
    "bernoulli",
    "categorical",
)


def tabulated_cases(families: Sequence[str]) -> st.SearchStrategy[Case]:
    """The cases of :data:`TABULATED_ESTIMATES` in ``families`` (``"every"``: the sizes and
    seed only, for a check that runs every family on them)."""
    return st.sampled_from(
        [Case(f, S, D, seed) for f in families for S, D, seed in TABULATED_ESTIMATES]
    )


def estimate_key(case: Case, loo: bool, what: str) -> str:
    """Where ``what`` (``scale``, ``grads/<i>``, ``parts/<name>/<i>``) of ``case``'s exact
    estimate sits in the table."""
    return f"estimate/{case.family}/{case.S}/{case.D}/{case.seed}/{int(loo)}/{what}"


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


# =========================================================================== diagnosis


def _part(key: str) -> Callable[[dict[str, list[Tensor]]], list[Tensor]]:
    """The known wrong estimate ``key`` among those the tabulated estimate holds (:func:`tabulated_estimate`)."""
    return lambda parts: parts[key]


NO_GRAD_F_HINT = (
    "it equals the score term alone: f depends on the parameters here, so add the "
    "average of grad_lambda f(z_s) (keep f attached to the graph for that term)"
)
_UNDETACHED_F = (
    "it has an extra term log q(z_s)·grad f(z_s): detach f inside the score term "
    "(f.detach() * log_q), and add grad f through a separate f.mean()"
)

#: Known wrong estimates of ``score_function_grad`` on given samples.
SFG_PART_BUGS: Catalogue = (
    (
        KnownBug("score_function_grad/sfg_missing_grad_f_term", NO_GRAD_F_HINT),
        _part("no_grad_f"),
    ),
    (
        KnownBug("score_function_grad/sfg_does_not_detach_f", _UNDETACHED_F),
        _part("undetached_f"),
    ),
)

#: Known wrong estimates of ``score_function_grad_loo`` on given samples.
LOO_PART_BUGS: Catalogue = (
    (
        KnownBug(
            "score_function_grad_loo/loo_no_baseline",
            "it equals the plain estimator: subtract the leave-one-out baseline "
            "b_s = (sum_j f_j - f_s)/(S-1) from f_s in the score term",
        ),
        _part("no_baseline"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_in_sample_mean_baseline",
            "it uses the mean over all samples, f_s included, as the baseline: that baseline "
            "depends on z_s, so it does not cancel in expectation; leave sample s out, "
            "b_s = (sum_j f_j - f_s)/(S-1)",
        ),
        _part("in_sample_mean"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_baseline_not_detached",
            "the baseline is not detached: b_s must be a constant in the surrogate "
            "(compute it from f.detach())",
        ),
        _part("undetached_baseline"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_adds_baseline",
            "the baseline is added to f_s: it must be subtracted, (f_s - b_s)",
        ),
        _part("baseline_added"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_centred_form_scales_grad_f_too",
            "the factor S/(S-1) of the centred form belongs to the score term only, "
            "not to the grad f term",
        ),
        _part("centred_scales_grad_f"),
    ),
    (
        KnownBug("score_function_grad_loo/loo_missing_grad_f_term", NO_GRAD_F_HINT),
        _part("no_grad_f"),
    ),
    (
        KnownBug("score_function_grad_loo/loo_does_not_detach_f", _UNDETACHED_F),
        _part("undetached_f"),
    ),
)


def _fit_ratio(got: np.ndarray, want: np.ndarray) -> float | None:
    """The scalar ``r`` with ``got == r * want`` (to 1e-6), if there is one."""
    denom = float(np.sum(want * want))
    if denom == 0.0:
        return None
    r = float(np.sum(got * want)) / denom
    residual = float(np.max(np.abs(got - r * want))) if got.size else 0.0
    return (
        r
        if residual <= 1e-6 * (1.0 + float(np.max(np.abs(want)))) * max(1.0, abs(r))
        else None
    )


#: Known wrong gradients that are a fixed multiple of the right one: the factor, from the
#: number of samples ``S`` and of dimensions ``D``.
RATIO_BUGS: Catalogue = (
    (
        KnownBug(
            "score_function_grad/sfg_sums_over_samples",
            "the gradient is off by a factor of {S} = num_samples: did you sum over samples instead of averaging?",
        ),
        lambda S, D: float(S),
    ),
    (
        KnownBug(
            "score_function_grad/sfg_averages_twice",
            "the gradient is 1/{S} of the right one: did you divide by num_samples twice (a mean, then / S again)? "
            "Average the products f(z_s)·log q(z_s) once",
        ),
        lambda S, D: 1.0 / S,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_sign_flipped",
            "the gradient has the wrong sign: the estimator is +f(z)·grad log q(z) (no minus; this is not a loss to minimise)",
        ),
        lambda S, D: -1.0,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_averages_log_prob_over_dims",
            "the gradient is 1/{D} of the right one: did you average log q over the dimensions instead of summing?",
        ),
        lambda S, D: 1.0 / D,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_backward_twice",
            "the gradient is twice the right one: is a term counted twice (rsample plus the score term?)",
        ),
        lambda S, D: 2.0,
    ),
    (
        # The size of this bias is a written question of 02: name the bug, not the factor.
        KnownBug(
            "score_function_grad_loo/loo_in_sample_mean_baseline",
            "the gradient is a fixed fraction of the right one: is the baseline the mean over all "
            "samples, f_s included? Leave sample s out",
        ),
        lambda S, D: (S - 1) / S,
    ),
)


def _same_factor(r: float, value: float) -> bool:
    return abs(r - value) <= 1e-6 * max(1.0, abs(value))


def ratio_hint(got: list[np.ndarray], want: list[np.ndarray], S: int, D: int) -> str:
    """A hint when the whole gradient is a known multiple of the right one.

    Several bugs can give the same factor (1/S and (S-1)/S when S = 2, 1/S and 1/D when
    S = D): the hint then names each of them rather than the first.
    """
    flat_got = np.concatenate([g.ravel() for g in got])
    flat_want = np.concatenate([w.ravel() for w in want])
    if np.all(np.abs(flat_got) <= 1e-12 * (1 + np.abs(flat_want).max())):
        return (
            "every gradient is 0: is log q computed under torch.no_grad(), from detached parameters, "
            "or from a distribution built before the parameters required grad?"
        )
    r = _fit_ratio(flat_got, flat_want)
    if r is None:
        return ""
    bugs = all_known_bugs(r, RATIO_BUGS, _same_factor, S, D)
    if bugs:
        return " Or: ".join(bug.text(S=S, D=D) for bug in bugs)
    return f"the gradient is {r:.4g} times the right one"


def parts_close(got: list[np.ndarray], candidate: list[Tensor]) -> bool:
    cand = [c.numpy() for c in candidate]
    return all(g.shape == c.shape for g, c in zip(got, cand)) and all(
        np.allclose(g, c, rtol=1e-6, atol=1e-9 * (1 + np.abs(c).max()))
        for g, c in zip(got, cand)
    )


def part_hint(
    got: list[np.ndarray], parts: dict[str, list[Tensor]], catalogue: Catalogue
) -> str:
    """A hint when the result equals a known wrong variant of the estimator."""
    return hint_for(got, catalogue, parts_close, parts)


def expect_untouched(out: probes.SideEffects, name: str, names: Sequence[str]) -> None:
    """Fail when a call modified, flagged or left ``.grad`` on the caller's ``(*params, z)``."""
    expect_no_side_effects(
        name,
        out,
        (*names, "z"),
        mutated="work on copies, never change your inputs in place",
        grad_left=_COPIES,
        flag_changed=_COPIES,
    )


_COPIES = (
    "work on copies, p.detach().clone().requires_grad_(True), and use torch.autograd.grad "
    "instead of .backward()"
)


def compare_gradients(
    grads: list[Tensor],
    expected: Expected,
    built: Built,
    case: Case,
    name: str,
    hint: str,
    part_bugs: Catalogue = (),
) -> None:
    """Fail with the most specific hint when ``grads`` differ from the exact estimate."""
    for g, p, pname in zip(grads, built.params, built.names):
        if tuple(g.shape) != tuple(p.shape):
            raise Failure(
                f"the gradient for {pname} has shape {tuple(g.shape)}, expected {tuple(p.shape)} (shaped like "
                f"the parameter): did you forget to average over the samples, or sum over the wrong axis?"
            )
    got = [as_numpy(g, "gradient") for g in grads]
    want = [w.numpy() for w in expected.grads]
    atol = 1e-9 * (1.0 + expected.scale)
    if all(np.allclose(g, w, rtol=TIGHT["rtol"], atol=atol) for g, w in zip(got, want)):
        return
    specific = (
        part_hint(got, expected.parts, part_bugs)
        or ratio_hint(got, want, case.S, case.D)
        or hint
    )
    for g_np, w_np, pname in zip(got, want, built.names):
        assert_close(
            g_np,
            w_np,
            f"{name}'s gradient for {pname} on {case!r}",
            rtol=TIGHT["rtol"],
            atol=atol,
            hint=specific,
        )


# =========================================================================== laws (statistical tier)


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


def stat_case(family: str, seed: int) -> Case:
    """A 2-d Gaussian with a cosine cost (resampled until the seed gives one), or 3 Bernoulli bits."""
    if family == "bernoulli":
        return Case("bernoulli", S=0, D=3, seed=seed)
    for attempt in range(64):
        case = Case("gaussian", S=0, D=2, seed=(seed + attempt) % 2**32)
        if isinstance(case.build().f, CosineCost):
            return case
    raise RuntimeError("no cosine case")  # pragma: no cover - probability 2**-64


# =========================================================================== checks: gaussian_score

#: Known wrong scores, from the standardised noise ``e``, ``sigma`` and ``log_sigma``.
SCORE_BUGS: Catalogue = (
    (
        KnownBug(
            "gaussian_score/gaussian_score_sign_flipped_mu",
            "d_mu has the wrong sign: grad_mu log q = (z - mu)/sigma², not (mu - z)/sigma²",
        ),
        lambda e, s, ls: (-e / s, e**2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_divides_by_sigma_once",
            "d_mu is (z - mu)/sigma: divide by sigma², the variance",
        ),
        lambda e, s, ls: (e, e**2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_variance_as_scale",
            "exp(log_sigma) is the standard deviation; you used its square as if it were",
        ),
        lambda e, s, ls: (e / s**3, (e / s) ** 2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_forgets_minus_one",
            "d_log_sigma is missing the -1: grad_{log sigma} log q = ((z - mu)/sigma)² - 1",
        ),
        lambda e, s, ls: (e / s, e**2),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_wrt_sigma_not_log_sigma",
            "d_log_sigma is the gradient with respect to sigma, not log sigma: multiply by sigma (chain rule)",
        ),
        lambda e, s, ls: (e / s, (e**2 - 1) / s),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_swaps_outputs",
            "you returned (d_log_sigma, d_mu): the order is (d_mu, d_log_sigma)",
        ),
        lambda e, s, ls: (e**2 - 1, e / s),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_log_sigma_as_sigma",
            "you used log_sigma as if it were sigma: sigma = exp(log_sigma)",
        ),
        lambda e, s, ls: (e * s / ls**2, (e * s / ls) ** 2 - 1),
    ),
)


def _scores_close(got: tuple[np.ndarray, ...], candidate: tuple[Tensor, ...]) -> bool:
    return all(
        g.shape == c.shape and np.allclose(g, c.numpy(), rtol=1e-6, atol=1e-9)
        for g, c in zip(got, candidate)
    )


def _score_hint(
    got: tuple[np.ndarray, ...], z: Tensor, mu: Tensor, log_sigma: Tensor
) -> str:
    sigma = torch.exp(log_sigma)
    eps = (z - mu) / sigma
    bug = first_known_bug(got, SCORE_BUGS, _scores_close, eps, sigma, log_sigma)
    if bug is not None:
        return bug.text()
    return "per sample s and dimension d: d_mu = (z - mu)/sigma², d_log_sigma = ((z - mu)/sigma)² - 1, sigma = exp(log_sigma)"


def compare_scores(
    value: tuple[Tensor, ...],
    want: tuple[Tensor, Tensor],
    z: Tensor,
    mu: Tensor,
    log_sigma: Tensor,
) -> None:
    """Shapes first, then values, with the most specific hint."""
    S, D = z.shape
    for v, what in zip(value, ("d_mu", "d_log_sigma")):
        if tuple(v.shape) != (S, D):
            raise Failure(
                f"{what} has shape {tuple(v.shape)}, expected (S, D) = ({S}, {D}): one score per sample and "
                "dimension; do not average over samples or squeeze axes"
            )
    got = tuple(as_numpy(v, "score") for v in value)
    if all(np.allclose(g, w.numpy(), rtol=1e-6, atol=1e-9) for g, w in zip(got, want)):
        return
    hint = _score_hint(got, z, mu, log_sigma)
    for g, w, what in zip(got, want, ("d_mu", "d_log_sigma")):
        assert_close(g, w, what, rtol=1e-6, atol=1e-9, hint=hint)


@check(
    "gaussian_score",
    "matches (z - mu)/sigma^2 and ((z - mu)/sigma)^2 - 1 per sample",
    points=1,
)
@settings(SOME)
@given(case=st.sampled_from(TABULATED_SCORES))
def gaussian_score_closed_form(subject: Subject, case: GaussianScoreCase) -> None:
    z, mu, log_sigma = case.arrays()
    out = subject.call(gaussian_score_probe, z, mu, log_sigma)
    compare_scores(out["value"], tabulated_scores(case), z, mu, log_sigma)


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


@check(
    "gaussian_score",
    "agrees with autograd of Normal.log_prob and leaves its inputs untouched",
    points=1,
)
@settings(SOME)
@given(case=gaussian_score_cases(), requires_grad=st.booleans())
def gaussian_score_autograd(
    subject: Subject, case: GaussianScoreCase, requires_grad: bool
) -> None:
    z, mu, log_sigma = case.arrays()
    out = subject.call(gaussian_score_probe, z, mu, log_sigma, requires_grad)
    expect_no_side_effects(
        "gaussian_score",
        out,
        ("z", "mu", "log_sigma"),
        mutated="(z -= mu?): compute new tensors instead",
        grad_left="compute the score by hand, no .backward()",
    )
    if not requires_grad:
        # From plain inputs a graph can only be one the function built itself (autograd with
        # create_graph=True). From leaves that require grad, a by-hand score that stays
        # differentiable in mu is allowed: it is a function of mu, not a leaked surrogate.
        expect_no_graph(
            "gaussian_score",
            out["graph"],
            ("d_mu", "d_log_sigma"),
            inputs="plain tensors",
            advice="compute the score by hand, (z - mu) / sigma^2 and ((z - mu) / sigma)^2 - 1, "
            "without autograd",
        )
    compare_scores(
        out["value"], _autograd_scores(_normal, z, mu, log_sigma), z, mu, log_sigma
    )


# =========================================================================== checks: estimators

PUBLIC_SHAPE_FAMILIES = (
    "gaussian",
    "gaussian_matrix",
    "gaussian_f_theta",
    "bernoulli",
    "categorical",
)


def _side_effects_and_shapes(
    subject: Subject, name: str, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    built = case.build()
    z = None if own_samples else built.z
    out = subject.call(
        estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        case.S,
        z,
        case.seed,
        requires_grad,
    )
    expect_untouched(out, name, built.names)
    expect_no_graph(
        name,
        out["graph"],
        [f"the gradient for {n}" for n in built.names],
        inputs="params as leaves that require grad"
        if requires_grad
        else "params as plain tensors",
    )
    for g, p, pname in zip(out["grads"], built.params, built.names):
        expect(
            tuple(g.shape) == tuple(p.shape),
            f"the gradient for {pname} has shape {tuple(g.shape)}; it must be shaped like the parameter, {tuple(p.shape)}",
        )
        expect(
            bool(torch.isfinite(g).all()),
            f"the gradient for {pname} contains NaN or infinity",
        )


@check(
    "score_function_grad",
    "returns one gradient per parameter, shaped like it, and leaves params untouched",
    points=0.5,
)
@settings(SOME)
@given(
    case=cases(PUBLIC_SHAPE_FAMILIES),
    requires_grad=st.booleans(),
    own_samples=st.booleans(),
)
def sfg_shapes_and_side_effects(
    subject: Subject, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    _side_effects_and_shapes(
        subject, "score_function_grad", case, requires_grad, own_samples
    )


@check(
    "score_function_grad_loo",
    "returns one gradient per parameter, shaped like it, and leaves params untouched",
    points=0.5,
)
@settings(SOME)
@given(
    case=cases(PUBLIC_SHAPE_FAMILIES),
    requires_grad=st.booleans(),
    own_samples=st.booleans(),
)
def loo_shapes_and_side_effects(
    subject: Subject, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    _side_effects_and_shapes(
        subject, "score_function_grad_loo", case, requires_grad, own_samples
    )


def _exact_on_given_samples(subject: Subject, name: str, case: Case, hint: str) -> None:
    built = case.build()
    loo = name.endswith("loo")
    out = subject.call(
        estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        case.S,
        built.z,
        case.seed,
    )
    compare_gradients(
        out["grads"],
        tabulated_estimate(case, loo),
        built,
        case,
        name,
        hint,
        LOO_PART_BUGS if loo else SFG_PART_BUGS,
    )


@check(
    "score_function_grad",
    "matches the average of f(z_s) grad log q(z_s) on given Gaussian samples",
    points=1,
)
@settings(SOME)
@given(case=tabulated_cases(("gaussian", "gaussian_matrix")))
def sfg_gaussian_closed_form(subject: Subject, case: Case) -> None:
    _exact_on_given_samples(
        subject,
        "score_function_grad",
        case,
        "with z given, use exactly those samples: (1/S) sum_s f(z_s) grad log q(z_s), with log q(z_s) summed "
        "over every axis but the sample axis",
    )


@check(
    "score_function_grad",
    "is exact on given samples when f depends on the parameters too",
    points=1,
)
@settings(SOME)
@given(case=tabulated_cases(("gaussian_f_theta",)))
def sfg_includes_grad_f(subject: Subject, case: Case) -> None:
    _exact_on_given_samples(
        subject,
        "score_function_grad",
        case,
        "the estimator is (1/S) sum_s [f(z_s) grad log q(z_s) + grad f(z_s)], f detached in the first term",
    )


@dataclass(frozen=True)
class EnumerationCase:
    """Every point of a discrete support, point ``x`` repeated ``m_x`` times (1-3), shuffled."""

    family: str
    D: int
    seed: int

    def __repr__(self) -> str:
        return f"EnumerationCase({self.family!r}, D={self.D}, seed={self.seed})"

    def build(self) -> tuple[Built, Tensor]:
        """The weighted table integrand, the samples, and the exact gradient of :math:`E_q f`."""
        gen = torch.Generator().manual_seed(self.seed)
        logits = _signed(gen, (self.D,), 0.2, 1.5)
        binary = self.family == "bernoulli"
        if binary:
            support = (
                (torch.arange(2**self.D)[:, None] >> torch.arange(self.D)) & 1
            ).to(torch.float64)
            make_q: Any = BernoulliFamily()
        else:
            support = torch.arange(self.D)
            make_q = CategoricalFamily()
        size = support.shape[0]
        f0 = _signed(gen, (size,), 0.5, 3.0)
        counts = torch.randint(1, 4, (size,), generator=gen)
        order = torch.randperm(int(counts.sum()), generator=gen)
        z = torch.repeat_interleave(support, counts, dim=0)[order]
        S = z.shape[0]

        def log_q(lg: Tensor) -> Tensor:
            lp = make_q(lg).log_prob(support)
            return lp.sum(dim=1) if binary else lp

        probs = torch.exp(log_q(logits))
        table = f0 * probs * S / counts.to(torch.float64)
        leaf = logits.clone().requires_grad_(True)
        (exact,) = torch.autograd.grad((torch.exp(log_q(leaf)) * f0).sum(), leaf)
        return Built(make_q, TableCost(table, binary), (logits,), z, ("logits",)), exact


@check(
    "score_function_grad",
    "is exact for Bernoulli and categorical q when z enumerates the support",
    points=1,
)
@settings(SOME)
@given(
    case=st.builds(
        EnumerationCase,
        st.sampled_from(("bernoulli", "categorical")),
        st.integers(2, 4),
        seeds(),
    )
)
def sfg_exact_by_enumeration(subject: Subject, case: EnumerationCase) -> None:
    built, exact = case.build()
    S = built.z.shape[0]
    out = subject.call(
        estimator_probe,
        "score_function_grad",
        built.f,
        built.make_q,
        built.params,
        S,
        built.z,
        case.seed,
    )
    (got,) = out["grads"]
    expect(
        tuple(got.shape) == tuple(exact.shape),
        f"the gradient for logits has shape {tuple(got.shape)}, expected {tuple(exact.shape)}",
    )
    hint = ratio_hint([as_numpy(got, "gradient")], [exact.numpy()], S, case.D) or (
        f"here z holds every point x of the support m_x times (S = {S}) and f(x) = f0(x) q(x) S / m_x, so "
        "(1/S) sum_s f(z_s) grad log q(z_s) is exactly grad sum_x q(x) f0(x): use log_prob (not prob), sum it "
        "over the coordinates of one sample, and average over the S samples"
    )
    assert_close(
        got,
        exact,
        "the gradient for logits",
        rtol=1e-6,
        atol=1e-9 * (1 + float(exact.abs().max())),
        hint=hint,
    )


@check("score_function_grad", "is linear in f on fixed samples", points=0.5)
@settings(FEW)
@given(
    case=cases(("gaussian_f_theta", "bernoulli", "categorical")),
    a=st.floats(-3, 3).filter(lambda a: abs(a) > 0.2 and abs(a - 1) > 0.2),
    b=st.floats(0.3, 3),
)
def sfg_linear_in_f(subject: Subject, case: Case, a: float, b: float) -> None:
    built = case.build()
    gen = torch.Generator().manual_seed(case.seed + 1)
    if case.family == "gaussian_f_theta":
        other: Any = CosineCost(
            _signed(gen, (case.D,), 0.5, 1.5), _signed(gen, (case.D,), 0.5, 2.0)
        )
    else:
        other = TableCost(
            _signed(gen, built.f.values.shape, 0.5, 3.0),
            binary=case.family == "bernoulli",
        )
    calls = [
        subject.call(
            estimator_probe,
            "score_function_grad",
            f,
            built.make_q,
            built.params,
            case.S,
            built.z,
            case.seed,
        )["grads"]
        for f in (built.f, other, LinearCombination((built.f, other), (a, b)))
    ]
    for g1, g2, g12, pname in zip(*calls, built.names):
        want = a * g1.to(torch.float64) + b * g2.to(torch.float64)
        scale = float((a * g1).abs().max() + (b * g2).abs().max())
        assert_close(
            g12,
            want,
            f"the gradient for {pname} with f = a·f1 + b·f2 (a={a:.3g}, b={b:.3g})",
            rtol=1e-6,
            atol=1e-9 * (1 + scale),
            hint="for fixed samples the estimate must be linear in f: do not normalise f (by its std, say), "
            "square it, or let it change which samples are used",
        )


@check(
    "score_function_grad_loo",
    "equals the plain estimate minus the leave-one-out baseline term on given samples",
    points=1,
)
@settings(FEW)
@given(sizes=tabulated_cases(("every",)))
def loo_closed_form(subject: Subject, sizes: Case) -> None:
    for family in ("gaussian", "gaussian_f_theta", "bernoulli", "categorical"):
        _exact_on_given_samples(
            subject,
            "score_function_grad_loo",
            replace(sizes, family=family),
            "with z given: (1/S) sum_s [(f_s - b_s) grad log q(z_s) + grad f(z_s)] with "
            "b_s = (sum_j f_j - f_s)/(S-1), f and b detached in the score term",
        )


@check(
    "score_function_grad_loo",
    "does not change when a constant is added to f (fixed samples)",
    points=0.5,
)
@settings(FEW)
@given(
    case=tabulated_cases(("gaussian", "gaussian_f_theta", "bernoulli", "categorical")),
    shift=st.floats(5, 50),
    negative=st.booleans(),
)
def loo_shift_invariant(
    subject: Subject, case: Case, shift: float, negative: bool
) -> None:
    c = -shift if negative else shift
    built = case.build()
    shifted = LinearCombination((built.f,), (1.0,), c)
    base, moved = (
        subject.call(
            estimator_probe,
            "score_function_grad_loo",
            f,
            built.make_q,
            built.params,
            case.S,
            built.z,
            case.seed,
        )["grads"]
        for f in (built.f, shifted)
    )
    expected = tabulated_estimate(case, loo=True)
    for g0, g1, pname in zip(base, moved, built.names):
        tol = 1e-9 * (1 + expected.scale + abs(c) * float(g0.abs().max() + 1))
        assert_close(
            g1,
            g0,
            f"the gradient for {pname} after f -> f + {c:.3g}",
            rtol=1e-6,
            atol=tol,
            hint="the leave-one-out baseline absorbs any constant: (f_s + c) - (b_s + c) = f_s - b_s. If it moved "
            "by c·mean grad log q, no baseline is subtracted; by c/S or c/(S-1), the baseline divides by the wrong count",
        )


#: Calls of the leave-one-out estimator with num_samples=2 in the small-sample test below.
#: With S = 2 a baseline that includes f_s shrinks the expected estimate by a fixed fraction;
#: on one Bernoulli bit that bias is at least 0.328 standard deviations of one call (60
#: seeds, median 0.43), so 1,000 calls put it 10.4 standard errors away against a threshold
#: of 5.5: missed with probability below 1e-6 on the worst seed seen.
SMALL_S_CALLS = 1_000


def _unbiased_with_two_samples(
    subject: Subject, name: str, seed: int, alpha: float, offset: float
) -> None:
    """Mean of many S = 2 estimates on one Bernoulli bit against the exact gradient.

    Each call's estimate is a scaled Bernoulli((z_1 - z_2)^2 = 1) variable, its variance the
    exact leave-one-out variance; the number of calls is at least 100 skew^2 (the CLT rule of
    :func:`autograder.stats.mean_close`), so the false-failure probability is at most ``alpha``.
    """
    case = Case("bernoulli", S=0, D=1, seed=seed)
    law = estimator_law(case, offset)
    built = case.build(offset)
    p = float(torch.sigmoid(built.params[0]).reshape(-1)[0])
    q = 2.0 * p * (1.0 - p)  # P(z_1 != z_2)
    skew = abs(1.0 - 2.0 * q) / math.sqrt(q * (1.0 - q))
    calls = max(SMALL_S_CALLS, math.ceil(100 * skew**2))
    runs = subject.call(
        repeat_estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        2,
        calls,
        seed,
    )
    got = np.concatenate([as_numpy(r, "gradient").mean(axis=0).ravel() for r in runs])
    expect(
        got.shape == law.truth.shape,
        f"{name} returned {got.size} gradient entries, expected {law.truth.size}",
    )
    stats.mean_close(
        got,
        law.truth,
        np.sqrt(loo_variance(law, 2)),
        calls,
        alpha=alpha,
        what=f"{name}'s estimate with num_samples=2 ({case!r}, z=None)",
        hint="with few samples a baseline must leave sample s out: b_s = (sum_j f_j - f_s)/(S-1) "
        "uses the other samples only, so it is independent of z_s",
    )


def _unbiased(
    subject: Subject, name: str, seed: int, alpha_per_call: float, offset: float
) -> None:
    loo = name.endswith("loo")
    if loo:
        _unbiased_with_two_samples(subject, name, seed, alpha_per_call, offset)
    for family in ("gaussian", "bernoulli"):
        case = stat_case(family, seed)
        law = estimator_law(case, offset)
        _, var, skew, _ = plain_moments(law)
        if loo:
            skew = np.maximum(skew, centred_moments(law)[2])
        n = max(STAT_DRAWS, math.ceil(100 * float(skew.max()) ** 2))
        std = np.sqrt(loo_variance(law, n) * n) if loo else np.sqrt(var)
        built = case.build(offset)
        out = subject.call(
            estimator_probe, name, built.f, built.make_q, built.params, n, None, seed
        )
        got = np.concatenate([as_numpy(g, "gradient").ravel() for g in out["grads"]])
        expect(
            got.shape == law.truth.shape,
            f"{name} returned {got.size} gradient entries, expected {law.truth.size}",
        )
        ratio = got / law.truth
        if np.all(np.abs(ratio - 2) < 0.25):
            hint = "it is about twice the exact gradient: with rsample, f(z) carries a pathwise gradient on top of the score term; draw with q.sample()"
        elif np.all(np.abs(got) < 0.2 * np.abs(law.truth)):
            hint = "it is close to 0: are f and log q evaluated on the same samples?"
        else:
            hint = (
                f"when z is None, draw num_samples = {n} independent samples once with q.sample((num_samples,)) "
                "(not one sample repeated), use the same samples for f and log q, and average over all of them"
            )
        stats.mean_close(
            got,
            law.truth,
            std,
            n,
            alpha=alpha_per_call,
            what=f"{name}'s estimate ({case!r}, z=None)",
            hint=hint,
        )


ALPHA = 1e-6


@check(
    "score_function_grad",
    "is unbiased when it draws its own samples",
    points=0.5,
    alpha=ALPHA,
)
@STAT
@given(seed=seeds())
def sfg_unbiased(subject: Subject, seed: int) -> None:
    """z-test at n >= 4,000 draws (n >= 100·skew²) with the exact per-sample variance, two families;
    false-failure probability <= ALPHA (Bonferroni over examples, families and coordinates)."""
    _unbiased(
        subject, "score_function_grad", seed, ALPHA / (STAT_EXAMPLES * 2), offset=0.0
    )


@check(
    "score_function_grad_loo",
    "is unbiased when it draws its own samples",
    points=0.5,
    alpha=ALPHA,
)
@STAT
@given(seed=seeds())
def loo_unbiased(subject: Subject, seed: int) -> None:
    """As for the plain estimator, with the exact leave-one-out variance and f shifted by 3,
    plus 1,000 calls with num_samples=2 (where a baseline that includes f_s is visibly
    biased); false-failure probability <= ALPHA (Bonferroni over examples and the 3 tests)."""
    _unbiased(
        subject,
        "score_function_grad_loo",
        seed,
        ALPHA / (STAT_EXAMPLES * 3),
        offset=3.0,
    )


# =========================================================================== checks: optimal_baseline
# The variance-minimising constant baseline per parameter coordinate. The grader passes the
# values f(z_s) and the per-sample scores in, so every call is exact in float64. The public
# checks state what the baseline *is* (the minimiser of the sample variance objective), never
# a formula for it.


@dataclass(frozen=True)
class BaselineCase:
    """``S`` values of ``f`` and per-sample scores of parameters shaped ``shapes``, from ``seed``."""

    S: int
    shapes: tuple[tuple[int, ...], ...]
    offset: float
    seed: int

    def arrays(self) -> tuple[Tensor, tuple[Tensor, ...]]:
        generator = torch.Generator().manual_seed(self.seed)
        scores = tuple(
            torch.randn(self.S, *shape, generator=generator, dtype=torch.float64)
            for shape in self.shapes
        )
        # f correlated with the squared scores of the first parameter (as a real integrand
        # is), so the weighted and the plain mean of f differ by far more than round-off
        first = scores[0].reshape(self.S, -1)
        noise = torch.randn(self.S, generator=generator, dtype=torch.float64)
        f_values = self.offset + 2.0 * first.square().mean(dim=1) + noise
        return f_values, scores


def baseline_cases() -> st.SearchStrategy[BaselineCase]:
    """S >= 3 samples (S = 1 makes every weighting equal), one or two parameters with at least
    two coordinates each (so pooling over coordinates is visible), offsets away from 0."""
    shapes = st.sampled_from([(2,), (3,), (2, 2)])
    return st.builds(
        BaselineCase,
        S=st.integers(3, 9),
        shapes=st.lists(shapes, min_size=1, max_size=2).map(tuple),
        offset=st.sampled_from([-4.0, 1.5, 10.0]),
        seed=seeds(),
    )


class BaselineOutput(probes.SideEffects):
    """What :func:`optimal_baseline_probe` brings back (side effects on ``(f_values, *scores)``)."""

    value: list[Tensor]


def optimal_baseline_probe(
    student: Student, f_values: Tensor, scores: tuple[Tensor, ...]
) -> BaselineOutput:
    """Call ``student.optimal_baseline`` and report its baselines and side effects."""
    args = (f_values, *scores)
    before = probes.snapshot(args)
    value = student.optimal_baseline(f_values, tuple(scores))
    if isinstance(value, Tensor) or not isinstance(value, (tuple, list)):
        raise StudentError(
            "bad_result",
            f"optimal_baseline returned a {type(value).__name__}; expected a tuple with one "
            f"baseline tensor per parameter ({len(scores)} here)",
        )
    if len(value) != len(scores) or not all(isinstance(v, Tensor) for v in value):
        raise StudentError(
            "bad_result",
            f"optimal_baseline must return {len(scores)} tensors, one per entry of scores",
        )
    return {
        "value": [v.detach().to(torch.float64) for v in value],
        **probes.side_effects(before, args),
    }


def expect_baseline_shapes(
    out: BaselineOutput, f_values: Tensor, scores: tuple[Tensor, ...]
) -> None:
    """One baseline per parameter, shaped like it; the inputs untouched."""
    names = ["f_values", *(f"scores[{i}]" for i in range(len(scores)))]
    expect_no_side_effects(
        "optimal_baseline",
        out,
        names,
        mutated="work on copies (no in-place square or subtraction on the inputs)",
    )
    for index, (b, score) in enumerate(zip(out["value"], scores)):
        if tuple(b.shape) != tuple(score.shape[1:]):
            raise Failure(
                f"baseline {index} has shape {tuple(b.shape)}, expected the parameter's shape "
                f"{tuple(score.shape[1:])}: one baseline per coordinate, no sample axis"
            )


@check(
    "optimal_baseline",
    "one baseline per parameter coordinate, inputs untouched",
    points=0.5,
)
@settings(FEW)
@given(case=baseline_cases())
def baseline_shapes_and_side_effects(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    out = subject.call(optimal_baseline_probe, f_values, scores)
    expect_baseline_shapes(out, f_values, scores)


#: The first-order condition in float64: each residual is an S-term sum (S <= 9) of products of
#: order |f| s^2, so round-off is below 1e-14 of the scale sum_s (|f_s| + |b|) s^2; 1e-9 admits
#: any algebraic form, while a wrong weighting leaves residuals of order the scale itself.
STATIONARY_RTOL = 1e-9


@check(
    "optimal_baseline",
    "minimises the sample variance of (f - b) s_i for every coordinate i",
    points=1,
)
@settings(SOME)
@given(case=baseline_cases())
def baseline_is_stationary(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    out = subject.call(optimal_baseline_probe, f_values, scores)
    expect_baseline_shapes(out, f_values, scores)
    for index, (b, score) in enumerate(zip(out["value"], scores)):
        # coordinates flattened: column i holds s_i(z_s) for every sample s
        squared = score.reshape(case.S, -1) ** 2
        centred = f_values[:, None] - b.reshape(1, -1)
        # d/db of (1/S) sum_s (f_s - b)^2 s_is^2 is -(2/S) sum_s (f_s - b) s_is^2
        residual = (centred * squared).sum(dim=0)
        scale = ((f_values.abs()[:, None] + b.abs().reshape(1, -1)) * squared).sum(
            dim=0
        )
        worst = int(torch.argmax((residual.abs() / scale).reshape(-1)))
        ratio = float((residual.abs() / scale).reshape(-1)[worst])
        if not math.isfinite(ratio) or ratio > STATIONARY_RTOL:
            got = float(b.reshape(-1)[worst])
            raise Failure(
                f"baseline {index}, coordinate {worst}: b = {got:.6g} does not minimise the "
                f"sample variance of (f - b) s_i on {case}: the derivative in b is "
                f"{-2 * float(residual.reshape(-1)[worst]) / case.S:.3g}, not 0. Differentiate "
                "Var[(f - b) s_i] in b (E[s_i] = 0 simplifies one term)"
            )
