"""Problems of ``02_score``: cases built from their family, sizes and seed, and the tabulated ones.

A :class:`Case` prints as ``Case('gaussian', S=5, D=3, seed=7)`` (the smallest failing input a
student reads) and rebuilds every tensor exactly (:meth:`Case.build`). Parameters stay away from
values that hide bugs; ``S != D``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor
from torch.distributions import (
    Distribution,
)

from autograder import probes
from autograder.checks.score.probes import (
    BernoulliFamily,
    CategoricalFamily,
    CosineCost,
    GaussianFamily,
    LinearCombination,
    MultivariateGaussianFamily,
    ParamDependentCost,
    PoissonFamily,
    QuadraticCost,
    TableCost,
    TanhLogitCost,
)
from autograder.strategies import seeds


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
    with probes.seeded(seed):
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


def stat_case(family: str, seed: int) -> Case:
    """A 2-d Gaussian with a cosine cost (resampled until the seed gives one), or 3 Bernoulli bits."""
    if family == "bernoulli":
        return Case("bernoulli", S=0, D=3, seed=seed)
    for attempt in range(64):
        case = Case("gaussian", S=0, D=2, seed=(seed + attempt) % 2**32)
        if isinstance(case.build().f, CosineCost):
            return case
    raise RuntimeError("no cosine case")  # pragma: no cover - probability 2**-64


PUBLIC_SHAPE_FAMILIES = (
    "gaussian",
    "gaussian_matrix",
    "gaussian_f_theta",
    "bernoulli",
    "categorical",
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
