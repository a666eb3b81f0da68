"""Problems of ``05_vae``: latent and ELBO batches, module problems, the problems whose
answers are tabulated (:data:`TABULATED`), and their strategies. Small, pairwise distinct sizes
(batch != latent != pixels) keep a transposed or wrongly reduced axis from passing; a problem
prints as its sizes and seed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from autograder import tables
from autograder.checks.vae.probes import _DTYPES, IwaeProblem, PixelBatch
from autograder.strategies import seeds


@dataclass(frozen=True)
class LatentBatch:
    """``mu``, ``logvar`` and ``eps`` of shape ``(batch, z_dim)``, rebuilt from ``seed``.

    ``mu ~ 1.5 N(0, 1)``, ``logvar ~ U(low, high)`` (never all 0: sigma = 1 hides
    std/variance confusions), ``eps ~ N(0, 1)``.
    """

    batch: int
    z_dim: int
    seed: int
    dtype: str = "float64"
    low: float = -3.0
    high: float = 2.0

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.z_dim)
        mu = 1.5 * torch.randn(shape, generator=g, dtype=torch.float64)
        logvar = self.low + (self.high - self.low) * torch.rand(
            shape, generator=g, dtype=torch.float64
        )
        eps = torch.randn(shape, generator=g, dtype=torch.float64)
        dtype = _DTYPES[self.dtype]
        return mu.to(dtype), logvar.to(dtype), eps.to(dtype)


@dataclass(frozen=True)
class ElboBatch:
    """Everything ``negative_elbo`` takes: ``x``, ``logits`` ``(batch, pixels)``; ``mu``, ``logvar`` ``(batch, z_dim)``."""

    batch: int
    pixels: int
    z_dim: int
    seed: int
    dtype: str = "float64"
    confident: bool = False

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """With ``confident``, logits of magnitude 17 to 60, as a trained decoder gives
        background pixels (float32 ``sigmoid`` rounds to exactly 0 or 1 there)."""
        x, logits = PixelBatch(self.batch, self.pixels, self.seed, self.dtype).tensors()
        if self.confident:
            g = torch.Generator().manual_seed(self.seed + 2)
            size = 17.0 + 43.0 * torch.rand(
                logits.shape, generator=g, dtype=torch.float64
            )
            logits = (torch.sign(logits.double()) * size).to(logits.dtype)
        mu, logvar, _ = LatentBatch(
            self.batch, self.z_dim, self.seed + 1, self.dtype
        ).tensors()
        return x, logits, mu, logvar


def latent_batches(
    dtype: str = "float64", low: float = -3.0, high: float = 2.0
) -> st.SearchStrategy[LatentBatch]:
    """Batch and latent sizes distinct and at least 2 (a batch of 1 hides sum/mean bugs)."""
    return st.builds(
        LatentBatch,
        batch=st.integers(2, 7),
        z_dim=st.integers(2, 7),
        seed=seeds(),
        dtype=st.just(dtype),
        low=st.just(low),
        high=st.just(high),
    ).filter(lambda p: p.batch != p.z_dim)


def pixel_batches(
    dtype: str = "float64", extreme: bool = False
) -> st.SearchStrategy[PixelBatch]:
    """``pixels`` in 8..40 is never the batch size (2..7)."""
    return st.builds(
        PixelBatch,
        batch=st.integers(2, 7),
        pixels=st.integers(8, 40),
        seed=seeds(),
        dtype=st.just(dtype),
        extreme=st.just(extreme),
    )


def elbo_batches(
    dtype: str = "float64", confident: bool = False
) -> st.SearchStrategy[ElboBatch]:
    return st.builds(
        ElboBatch,
        confident=st.just(confident),
        batch=st.integers(2, 7),
        pixels=st.integers(8, 40),
        z_dim=st.integers(2, 7),
        seed=seeds(),
        dtype=st.just(dtype),
    ).filter(lambda p: p.batch != p.z_dim)


#: The problems whose right answers ship with the public checks
#: (``autograder/checks/vae_answers.py``, written by ``scripts/tabulate_answers.py`` from the
#: reference), by the property that draws them: the KL per row (``kl``, ``kl_wide``), the
#: log-likelihood per image (``likelihood``, ``likelihood_extreme``) and the negative ELBO per
#: image (``elbo``, ``elbo_confident``). The hidden tier draws from any problem.
TABULATED: dict[str, tuple[Any, ...]] = {
    "kl": tuple(
        LatentBatch(b, z, seed)
        for b, z, seed in (
            (2, 3, 0),
            (3, 2, 1),
            (4, 7, 2),
            (5, 3, 3),
            (6, 2, 4),
            (7, 5, 5),
            (2, 6, 6),
            (3, 4, 7),
            (4, 2, 8),
            (5, 7, 9),
            (6, 5, 10),
            (7, 3, 11),
            (3, 6, 12),
            (5, 2, 13),
        )
    ),
    "kl_wide": tuple(
        LatentBatch(b, z, seed, "float32", -30.0, 15.0)
        for b, z, seed in (
            (2, 5, 20),
            (3, 7, 21),
            (4, 3, 22),
            (5, 6, 23),
            (6, 2, 24),
            (7, 4, 25),
            (3, 2, 26),
            (5, 4, 27),
            (6, 7, 28),
            (2, 3, 29),
        )
    ),
    "likelihood": tuple(
        PixelBatch(b, p, seed)
        for b, p, seed in (
            (2, 8, 0),
            (3, 17, 1),
            (4, 40, 2),
            (5, 12, 3),
            (6, 29, 4),
            (7, 9, 5),
            (2, 33, 6),
            (3, 21, 7),
            (4, 10, 8),
            (5, 38, 9),
            (6, 14, 10),
            (7, 25, 11),
            (3, 11, 12),
        )
    ),
    "likelihood_extreme": tuple(
        PixelBatch(b, p, seed, extreme=True)
        for b, p, seed in (
            (2, 9, 30),
            (3, 23, 31),
            (4, 13, 32),
            (5, 40, 33),
            (6, 8, 34),
            (7, 19, 35),
            (4, 31, 36),
            (2, 15, 37),
        )
    ),
    "elbo": tuple(
        ElboBatch(b, p, z, seed)
        for b, p, z, seed in (
            (2, 8, 3, 0),
            (3, 17, 2, 1),
            (4, 40, 7, 2),
            (5, 12, 3, 3),
            (6, 29, 2, 4),
            (7, 9, 5, 5),
            (2, 33, 6, 6),
            (3, 21, 4, 7),
            (4, 10, 2, 8),
            (5, 38, 7, 9),
            (6, 14, 5, 10),
            (7, 25, 3, 11),
        )
    ),
    "elbo_confident": tuple(
        ElboBatch(b, p, z, seed, "float32", confident=True)
        for b, p, z, seed in (
            (2, 11, 4, 40),
            (3, 26, 5, 41),
            (4, 8, 6, 42),
            (5, 35, 2, 43),
            (6, 18, 7, 44),
            (7, 40, 3, 45),
            (3, 12, 6, 46),
            (5, 20, 4, 47),
        )
    ),
}


def answer_key(kind: str, problem: Any) -> str:
    """Where ``problem``'s right answer for the properties of ``kind`` sits in the table."""
    return "/".join((kind, *(str(v) for v in dataclasses.astuple(problem))))


def tabulated(kind: str, problem: Any) -> Tensor:
    """The tabulated right answer of ``problem`` (float64, one value per row or image).

    Raises:
        KeyError: ``problem`` is not in ``TABULATED[kind]`` (a public check drew it elsewhere).
    """
    table = tables.load("autograder.checks.vae_answers")
    key = answer_key(kind, problem)
    if key not in table:
        raise KeyError(f"no tabulated answer for {problem!r} ({kind})")
    return torch.from_numpy(table[key])


@dataclass(frozen=True)
class ModuleProblem:
    """Constructor sizes ``(x_dim, hidden_dim, z_dim)``, a batch size, and a seed for init and data."""

    x_dim: int
    hidden_dim: int
    z_dim: int
    batch: int
    seed: int


def module_problems() -> st.SearchStrategy[ModuleProblem]:
    """Sizes in disjoint ranges, so a swapped constructor argument changes some shape."""
    return st.builds(
        ModuleProblem,
        x_dim=st.integers(20, 60),
        hidden_dim=st.integers(10, 19),
        z_dim=st.integers(2, 4),
        batch=st.integers(5, 9),
        seed=seeds(),
    )


def _module_inputs(batch: int, dim: int, seed: int, images: bool) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if images:  # pixel intensities in [0, 1]
        return torch.rand(batch, dim, generator=g)
    return 1.5 * torch.randn(batch, dim, generator=g)


def _midpoint_inputs(batch: int, dim: int, seed: int, images: bool) -> Tensor:
    a = _module_inputs(batch, dim, seed, images)
    b = _module_inputs(batch, dim, seed + 1, images)
    return torch.cat([a, b, (a + b) / 2])


#: A decoder gain that saturates the Bernoulli: logits reach a few hundred (about 0.6 x the
#: gain), so sigmoid(l) rounds to exactly 1 (l > 37) or 0, and a log-likelihood written as
#: log(sigmoid(l)) or binary_cross_entropy(sigmoid(l), x) (which clamps each log at -100)
#: is wrong by tens to hundreds of nats there; the log-sigmoid forms stay exact.
SATURATING_GAIN = 400.0


def iwae_problems(
    dtype: str = "float64", samples: tuple[int, int] = (2, 6)
) -> st.SearchStrategy[IwaeProblem]:
    """Batch, pixels, latent size and K pairwise distinct; batch of 1 and K = 1 excluded.

    Half the decoders are ordinary (gain 1), half saturated (:data:`SATURATING_GAIN`).
    """
    return st.builds(
        IwaeProblem,
        batch=st.integers(2, 6),
        x_dim=st.integers(8, 12),
        z_dim=st.integers(2, 5),
        samples=st.integers(*samples),
        seed=seeds(),
        dtype=st.just(dtype),
        gain=st.sampled_from((1.0, SATURATING_GAIN)),
    ).filter(lambda p: len({p.batch, p.z_dim, p.samples}) == 3)
