r"""Public checks for ``05_vae``: the VAE's closed forms, its modules, and its training loop.

Functions are checked against independent closed forms (students can run these):
``torch.distributions.kl_divergence`` for :math:`\mathrm{KL}(q \,\|\, \mathcal{N}(0, I))`,
``binary_cross_entropy_with_logits`` for the Bernoulli log-likelihood, and the derivatives
of both (Kingma & Welling 2014, appendices B and C). The functions are dimension-agnostic, so
the checks use small, pairwise distinct sizes (batch != latent != pixels) that keep a
transposed or wrongly reduced axis from passing.

Students choose their own architectures, so the classes are checked by properties, never by
weights: sizes and argument order, float32 outputs, unconstrained outputs, per-image
independence, trainable parameters, and for :class:`VAE` consistency with its own encoder
and decoder (seen through forward hooks, so dropout or batch norm cannot break it).

``train_vae`` is graded on :class:`GradingVAE`, a small public model defined here, never on
the student's ``VAE``: the training task is then independent of the ``VAE`` task, and the
model can record what the loop feeds it (batch sizes, the noise behind every ``z``) and
whether gradients were zeroed between optimizer steps.

``iwae_bound`` is graded on :class:`ScoringVAE`, another small public model rebuilt from a
seed on both sides. With :math:`K = 1` the bound must equal the importance log-weight
:math:`\log p(x|z) + \log p(z) - \log q(z|x)` from ``torch.distributions``; with :math:`K > 1` it
must be the log-mean-exp of the student's own :math:`K = 1` values for the same draws (an
invariant, so no reference is needed), and stay finite in float32 when every weight underflows.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import chi2
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autograder import probes, tables
from autograder.compare import (
    Catalogue,
    KnownBug,
    assert_close,
    assert_shape,
    expect_no_side_effects,
    hint_for,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING, STATISTICAL
from autograder.strategies import seeds
from autograder.subject import Student, StudentError, Subject

__all__ = [
    "ElboBatch",
    "GradingVAE",
    "HELD",
    "IwaeProblem",
    "ScoringVAE",
    "LatentBatch",
    "ModuleProblem",
    "PixelBatch",
    "TrainConfig",
    "TABULATED",
    "answer_key",
    "tabulated",
    "devices_probe",
    "elbo_batches",
    "grading_images",
    "held_for",
    "iwae_problems",
    "iwae_probe",
    "log_weights_closed_form",
    "latent_batches",
    "module_probe",
    "module_problems",
    "noise_test",
    "run_train_vae",
    "pixel_batches",
    "train_probe",
    "vae_probe",
]

# ----------------------------------------------------------------------------------------
# Held helpers. The public checks hold no function that computes gaussian_kl,
# bernoulli_log_likelihood or negative_elbo from their inputs (issue 19): they compare against
# answers tabulated from the reference (checks/vae_answers.py, see TABULATED below).
# ----------------------------------------------------------------------------------------


#: The helpers a task is graded with, held correct, so a bug in a helper costs points only
#: on the helper's own task. The stand-ins hold no implementation: the judge computes their
#: values (:func:`autograder.probes.hold`). One property per task runs the student's helpers
#: as wired (README, "How grading decides").
HELD: dict[str, tuple[str, ...]] = {
    "negative_elbo": ("gaussian_kl", "bernoulli_log_likelihood"),
    "VAE": ("reparameterize",),
    "train_vae": (
        "negative_elbo",
        "gaussian_kl",
        "bernoulli_log_likelihood",
        "reparameterize",
    ),
    "iwae_bound": ("reparameterize", "gaussian_kl", "bernoulli_log_likelihood"),
}


def held_for(task: str) -> dict[str, Any]:
    """Stand-ins for ``task``'s helpers (judge side; none on a student's machine)."""
    return probes.hold(*HELD[task])


# ----------------------------------------------------------------------------------------
# Problems and strategies (short reprs: a problem prints as its sizes and seed)
# ----------------------------------------------------------------------------------------

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


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
class PixelBatch:
    """Images ``x`` in ``[0, 1]`` (grey levels, exact 0s and 1s) and ``logits``, ``(batch, pixels)``.

    With ``extreme`` the first two columns hold logits of +1e4 and -1e4 and the rest span
    magnitudes up to 1e4: a naive ``log(sigmoid(l))`` gives ``-inf`` there.
    """

    batch: int
    pixels: int
    seed: int
    dtype: str = "float64"
    extreme: bool = False

    def tensors(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.pixels)
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        snap = torch.rand(shape, generator=g, dtype=torch.float64) < 0.4
        x = torch.where(snap, x.round(), x)  # MNIST has many exact 0s (and some 1s)
        logits = 3.0 * torch.randn(shape, generator=g, dtype=torch.float64)
        if self.extreme:
            magnitude = 10.0 ** (
                4.0 * torch.rand(shape, generator=g, dtype=torch.float64)
            )
            logits = torch.sign(logits) * magnitude
            logits[:, 0], logits[:, 1] = 1e4, -1e4
        dtype = _DTYPES[self.dtype]
        return x.to(dtype), logits.to(dtype)


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


#: Tolerances in this module: float64 comparisons use rtol=1e-9, atol=1e-12. The closed forms
#: are stable sums of at most 40 terms, whose float64 round-off is about 1e-15 relative, so
#: any summation order or algebraic form passes while float32 (about 1e-7) fails. float32
#: comparisons state their own bound next to them.
FUNCTION_SETTINGS = settings(GRADING, max_examples=20)
MODULE_SETTINGS = settings(GRADING, max_examples=4)

# ----------------------------------------------------------------------------------------
# Probes for the functions
# ----------------------------------------------------------------------------------------


#: The arguments of the graded functions, by position (for side-effect feedback).
ARG_NAMES: dict[str, tuple[str, ...]] = {
    "reparameterize": ("mu", "logvar", "eps"),
    "gaussian_kl": ("mu", "logvar"),
    "bernoulli_log_likelihood": ("x", "logits"),
    "negative_elbo": ("x", "logits", "mu", "logvar"),
    "iwae_bound": ("model", "x", "eps"),
}


def expect_untouched(out: probes.SideEffects, name: str) -> None:
    expect_no_side_effects(
        name, out, ARG_NAMES[name], mutated="compute a new tensor instead"
    )


def _value(out: probes.Invoked, name: str) -> Tensor:
    value = out["value"]
    if not isinstance(value, Tensor):
        raise Failure(
            f"{name} returned a {type(value).__name__}, expected a torch.Tensor"
        )
    return value


@check(
    "reparameterize",
    "z = mu + exp(logvar / 2) * eps for the noise it is given",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=latent_batches())
def reparameterize_value(subject: Subject, problem: LatentBatch) -> None:
    mu, logvar, eps = problem.tensors()
    out = subject.call(probes.invoke_probe, "reparameterize", mu, logvar, eps)
    expect_untouched(out, "reparameterize")
    z = _value(out, "reparameterize")
    expected = mu + torch.exp(0.5 * logvar) * eps
    assert_close(
        z,
        expected,
        "z",
        rtol=1e-9,
        atol=1e-12,
        hint="the standard deviation is exp(logvar / 2), not exp(logvar); use the eps you are given",
    )


@check(
    "reparameterize",
    "derivatives: dz/dmu = 1 and dz/dlogvar = exp(logvar / 2) * eps / 2",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=latent_batches())
def reparameterize_gradient(subject: Subject, problem: LatentBatch) -> None:
    mu, logvar, eps = problem.tensors()
    v = torch.randn(
        mu.shape,
        generator=torch.Generator().manual_seed(problem.seed + 7),
        dtype=torch.float64,
    )
    out = subject.call(probes.vjp_probe, "reparameterize", (mu, logvar, eps), (0, 1), v)
    d_mu, d_logvar = out["grads"]
    assert_close(
        d_mu,
        v,
        "the gradient with respect to mu",
        rtol=1e-9,
        atol=1e-12,
        hint="z must depend on mu without detaching it",
    )
    # A hint only for what the gradient shows: all zero means z is cut off from logvar;
    # anything else is a formula bug (the value check names which).
    detached = bool((d_logvar == 0).all())
    assert_close(
        d_logvar,
        v * 0.5 * torch.exp(0.5 * logvar) * eps,
        "the gradient with respect to logvar",
        rtol=1e-9,
        atol=1e-12,
        hint="z must be a differentiable function of logvar (no .detach(), no numpy)"
        if detached
        else "dz/dlogvar = exp(logvar / 2) * eps / 2: the standard deviation is "
        "exp(logvar / 2), not exp(logvar)",
    )


#: Known wrong KLs, from ``mu``, ``logvar`` and the right (tabulated) ``kl`` per row (a
#: mutant in tests/corpus/vae.py for each).
KL_BUGS: Catalogue = (
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_sign_flipped",
            "it is -KL: KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) is never negative "
            "(the form -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) keeps the minus in front)",
        ),
        lambda mu, lv, kl: -kl,
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_missing_half",
            "it is twice the KL: the sum is multiplied by 1/2",
        ),
        lambda mu, lv, kl: 2 * kl,
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_mean_over_latent_dims",
            "it is the mean over the latent dimensions: the KL of a diagonal Gaussian is the sum "
            "over them (.sum(dim=-1), not .mean)",
        ),
        lambda mu, lv, kl: kl / mu.shape[-1],
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_missing_constant",
            "the -1 per latent dimension is missing: 0.5 * (mu^2 + exp(logvar) - 1 - logvar)",
        ),
        lambda mu, lv, kl: kl + 0.5 * mu.shape[-1],
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_std_as_variance",
            "the variance is exp(logvar), not exp(logvar / 2) (that is the standard deviation)",
        ),
        lambda mu, lv, kl: kl + 0.5 * (torch.exp(0.5 * lv) - torch.exp(lv)).sum(-1),
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_reversed_direction",
            "it is KL(N(0, I) || q), the other direction: the VAE needs KL(q || N(0, I))",
        ),
        lambda mu, lv, kl: (
            0.5 * ((1.0 + mu.square()) * torch.exp(-lv) - 1.0 + lv)
        ).sum(-1),
    ),
)


def _same_values(got: Tensor, candidate: Tensor) -> bool:
    """Whether ``got`` reproduces a known wrong formula's value (to float64 round-off)."""
    return candidate.shape == got.shape and bool(
        torch.allclose(got.to(candidate.dtype), candidate, rtol=1e-7, atol=1e-9)
    )


@check(
    "gaussian_kl",
    "equals KL(N(mu, exp(logvar)) || N(0, I)) from torch.distributions, summed over latent dims",
    points=1,
)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["kl"]))
def kl_value(subject: Subject, problem: LatentBatch) -> None:
    mu, logvar, _ = problem.tensors()
    out = subject.call(probes.invoke_probe, "gaussian_kl", mu, logvar)
    expect_untouched(out, "gaussian_kl")
    kl = _value(out, "gaussian_kl")
    assert_shape(
        kl,
        (problem.batch,),
        "gaussian_kl(mu, logvar)",
        "one KL per row: sum over the latent dimension (dim=-1) only",
    )
    want = tabulated("kl", problem)
    assert_close(
        kl,
        want,
        "KL",
        rtol=1e-9,
        atol=1e-12,
        hint=hint_for(kl, KL_BUGS, _same_values, mu, logvar, want)
        or "KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) over latent dims: check the sign, the 1/2 and the sum",
    )


@check(
    "gaussian_kl",
    "gradients: dKL/dmu = mu and dKL/dlogvar = (exp(logvar) - 1) / 2",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=latent_batches())
def kl_gradient(subject: Subject, problem: LatentBatch) -> None:
    mu, logvar, _ = problem.tensors()
    v = 1.0 + torch.rand(
        problem.batch,
        generator=torch.Generator().manual_seed(problem.seed),
        dtype=torch.float64,
    )
    out = subject.call(probes.vjp_probe, "gaussian_kl", (mu, logvar), (0, 1), v)
    d_mu, d_logvar = out["grads"]
    # "Detached" only when a gradient is entirely zero; otherwise the formula is off.
    cut = "gaussian_kl must stay differentiable (no .detach(), .item() or numpy)"
    assert_close(
        d_mu,
        v[:, None] * mu,
        "dKL/dmu",
        rtol=1e-9,
        atol=1e-12,
        hint=cut if bool((d_mu == 0).all()) else "the mu term of the KL is mu^2 / 2",
    )
    assert_close(
        d_logvar,
        v[:, None] * 0.5 * (logvar.exp() - 1.0),
        "dKL/dlogvar",
        rtol=1e-9,
        atol=1e-12,
        hint=cut
        if bool((d_logvar == 0).all())
        else "the logvar terms of the KL are (exp(logvar) - 1 - logvar) / 2: exp(logvar) is "
        "the variance (not the standard deviation)",
    )


@check(
    "gaussian_kl",
    "float32 in, float32 out, finite for logvar from -30 to 15",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["kl_wide"]))
def kl_float32_wide(subject: Subject, problem: LatentBatch) -> None:
    mu, logvar, _ = problem.tensors()
    kl = _value(
        subject.call(probes.invoke_probe, "gaussian_kl", mu, logvar), "gaussian_kl"
    )
    expect(
        kl.dtype == torch.float32,
        f"gaussian_kl returned {kl.dtype} for float32 inputs: keep the dtype you are given",
    )
    # Hints conditioned on what holds: a wrong shape is a reduction bug, not a numerics one.
    assert_shape(
        kl,
        (problem.batch,),
        "gaussian_kl(mu, logvar)",
        "one KL per row: sum over the latent dimension (dim=-1) only",
    )
    # float32 round-off: exp(logvar) up to e^15 = 3.3e6 carries a relative error of 6e-8,
    # and the z_dim <= 7 terms add as much each: under 1e-6 of the total, so rtol 2e-5.
    assert_close(
        kl,
        tabulated("kl_wide", problem),
        "KL",
        rtol=2e-5,
        atol=1e-4,
        hint="KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) over the latent dims, "
        "computed in the input's float32",
    )


@check(
    "bernoulli_log_likelihood",
    "equals torch.distributions.Bernoulli(logits).log_prob summed over pixels",
    points=1,
)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["likelihood"]))
def likelihood_value(subject: Subject, problem: PixelBatch) -> None:
    x, logits = problem.tensors()
    out = subject.call(probes.invoke_probe, "bernoulli_log_likelihood", x, logits)
    expect_untouched(out, "bernoulli_log_likelihood")
    value = _value(out, "bernoulli_log_likelihood")
    assert_shape(
        value,
        (problem.batch,),
        "bernoulli_log_likelihood(x, logits)",
        "one value per image: sum over pixels (dim=-1), not a mean, and not over the batch",
    )
    assert_close(
        value,
        tabulated("likelihood", problem),
        "the log-likelihood",
        rtol=1e-9,
        atol=1e-9,
        hint="sum_i x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i)); logits are not probabilities (no extra sigmoid)",
    )


@check("bernoulli_log_likelihood", "finite and exact for logits of +-1e4", points=0.5)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["likelihood_extreme"]))
def likelihood_extreme(subject: Subject, problem: PixelBatch) -> None:
    x, logits = problem.tensors()
    value = _value(
        subject.call(probes.invoke_probe, "bernoulli_log_likelihood", x, logits),
        "bernoulli_log_likelihood",
    )
    assert_close(
        value,
        tabulated("likelihood_extreme", problem),
        "the log-likelihood",
        rtol=1e-9,
        atol=1e-6,
        hint="log(sigmoid(l)) underflows for large |l| and clamping changes the value: use F.logsigmoid or softplus",
    )


@check(
    "bernoulli_log_likelihood",
    "gradient with respect to the logits is x - sigmoid(logits)",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=pixel_batches())
def likelihood_gradient(subject: Subject, problem: PixelBatch) -> None:
    x, logits = problem.tensors()
    v = 1.0 + torch.rand(
        problem.batch,
        generator=torch.Generator().manual_seed(problem.seed),
        dtype=torch.float64,
    )
    out = subject.call(
        probes.vjp_probe, "bernoulli_log_likelihood", (x, logits), (1,), v
    )
    assert_close(
        out["grads"][0],
        v[:, None] * (x - torch.sigmoid(logits)),
        "d log p / d logits",
        rtol=1e-9,
        atol=1e-12,
        hint="the log-likelihood must be a differentiable function of the logits",
    )


@check(
    "negative_elbo",
    "equals the batch mean of KL - log-likelihood (a scalar)",
    points=0.75,
)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["elbo"]))
def negative_elbo_value(subject: Subject, problem: ElboBatch) -> None:
    x, logits, mu, logvar = problem.tensors()
    out = subject.call(
        probes.invoke_held_probe,
        held_for("negative_elbo"),
        "negative_elbo",
        x,
        logits,
        mu,
        logvar,
    )
    expect_untouched(out, "negative_elbo")
    value = _value(out, "negative_elbo")
    assert_shape(
        value, (), "negative_elbo(...)", "return a scalar: the mean over the batch"
    )
    assert_close(
        value,
        tabulated("elbo", problem).mean(),
        "the negative ELBO",
        rtol=1e-9,
        atol=1e-9,
        hint="mean over the batch of (KL - log-likelihood), with the KL and the log-likelihood each summed per image",
    )


@check(
    "negative_elbo",
    "exact in float32 for confident logits (|logits| from 17 to 60)",
    points=0.25,
)
@FUNCTION_SETTINGS
@given(problem=st.sampled_from(TABULATED["elbo_confident"]))
def negative_elbo_confident_logits(subject: Subject, problem: ElboBatch) -> None:
    x, logits, mu, logvar = problem.tensors()
    value = _value(
        subject.call(
            probes.invoke_held_probe,
            held_for("negative_elbo"),
            "negative_elbo",
            x,
            logits,
            mu,
            logvar,
        ),
        "negative_elbo",
    )
    want = tabulated("elbo_confident", problem).mean()
    # float32 round-off: each of the <= 40 + 7 per-image terms carries a relative error of
    # about 6e-8 (softplus, exp), and summing them adds as much again per term: under 6e-6
    # of the total, so rtol 2e-5. A sigmoid that rounds to 1 costs at least 17 nats a pixel.
    assert_close(
        value,
        want,
        "the negative ELBO",
        rtol=2e-5,
        atol=1e-4,
        hint="in float32, sigmoid(l) is exactly 1.0 for l > 17, so log(1 - sigmoid(l)) breaks "
        "(binary_cross_entropy clamps it at -100): compute the likelihood from the logits, "
        "e.g. binary_cross_entropy_with_logits or bernoulli_log_likelihood",
    )


@check("negative_elbo", "gradients with respect to logits, mu and logvar", points=0.5)
@FUNCTION_SETTINGS
@given(problem=elbo_batches())
def negative_elbo_gradient(subject: Subject, problem: ElboBatch) -> None:
    x, logits, mu, logvar = problem.tensors()
    out = subject.call(
        probes.vjp_held_probe,
        held_for("negative_elbo"),
        "negative_elbo",
        (x, logits, mu, logvar),
        (1, 2, 3),
    )
    d_logits, d_mu, d_logvar = out["grads"]
    batch = problem.batch
    hint = "the loss must stay differentiable in all of its inputs and average (not sum) over the batch"
    assert_close(
        d_logits,
        (torch.sigmoid(logits) - x) / batch,
        "d loss / d logits",
        rtol=1e-9,
        atol=1e-12,
        hint=hint,
    )
    assert_close(d_mu, mu / batch, "d loss / d mu", rtol=1e-9, atol=1e-12, hint=hint)
    assert_close(
        d_logvar,
        0.5 * (logvar.exp() - 1.0) / batch,
        "d loss / d logvar",
        rtol=1e-9,
        atol=1e-12,
        hint=hint,
    )


# ----------------------------------------------------------------------------------------
# Probes for Encoder and Decoder
# ----------------------------------------------------------------------------------------


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run student code on a private copy of the global RNG, seeded by the grader."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _construct_probe(
    student: Student, name: str, args: Sequence[Any], kwargs: dict[str, Any], seed: int
) -> nn.Module:
    cls = getattr(student, name)
    with _seeded(seed):
        module = cls(*args, **kwargs)
    if not isinstance(module, nn.Module):
        raise StudentError(
            "bad_result",
            f"{name}(...) gave a {type(module).__name__}, expected a torch.nn.Module subclass",
        )
    return module


def _tensors(value: Any, count: int, what: str) -> tuple[Tensor, ...]:
    items = (value,) if count == 1 and isinstance(value, Tensor) else value
    if (
        not isinstance(items, (tuple, list))
        or len(items) != count
        or not all(isinstance(v, Tensor) for v in items)
    ):
        expected = "a tensor" if count == 1 else f"a tuple of {count} tensors"
        raise StudentError(
            "bad_result", f"{what} returned {type(value).__name__}, expected {expected}"
        )
    return tuple(items)


class ModuleOutput(TypedDict):
    """What :func:`module_probe` brings back about an ``Encoder`` or ``Decoder``."""

    #: The outputs in training mode, in eval mode, and in eval mode one row at a time.
    train: tuple[Tensor, ...]
    eval: tuple[Tensor, ...]
    rows: tuple[Tensor, ...]
    #: Trainable parameter entries, and how many parameters the outputs depend on.
    n_params: int
    reached: int


class VaeOutput(TypedDict, total=False):
    """What :func:`vae_probe` brings back: the outputs of ``forward`` (always), what the
    encoder returned and the decoder received and returned (when both hooks fired,
    ``hooked``), and with ``gradients`` how many parameters of each part the
    reconstruction reaches."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    hooked: bool
    enc_mu: Any
    enc_logvar: Any
    z: Any
    dec_logits: Any
    reached: dict[str, int]


class TrainOutput(TypedDict, total=False):
    """What :func:`train_probe` brings back (keys described there)."""

    history: list[float]
    changed: bool
    devices: list[str]
    data_unchanged: bool
    batches: list[int]
    seen: Any
    data_order: Any
    noise: Any
    audited_steps: int
    accumulation: Any
    frozen: float
    start: float
    end: float


class DevicesOutput(TypedDict):
    """:func:`devices_probe`: whether CUDA is there, and the device ``get_device(None)`` picks."""

    cuda: bool
    default: str


def module_probe(
    student: Student,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inputs: Tensor,
    seed: int,
    outputs: int,
) -> ModuleOutput:
    """Build ``name(*args, **kwargs)`` with a seeded init and describe how it maps ``inputs``.

    Returns the outputs in training mode (``"train"``), in eval mode for the whole batch
    (``"eval"``) and one row at a time (``"rows"``), the number of trainable parameters and
    how many of them the outputs depend on (non-zero gradient).
    """
    module = _construct_probe(student, name, args, kwargs, seed)
    what = f"{name}.forward"
    with _seeded(seed + 1):
        train_out = _tensors(module(inputs), outputs, what)
    params = [p for p in module.parameters() if p.requires_grad]
    total = sum(o.sum() for o in train_out)
    reached = 0
    if params and isinstance(total, Tensor) and total.requires_grad:
        grads = torch.autograd.grad(total, params, allow_unused=True)
        reached = sum(1 for g in grads if g is not None and bool(g.abs().sum() > 0))
    module.eval()
    with torch.no_grad(), _seeded(seed + 2):
        eval_out = _tensors(module(inputs), outputs, what)
        rows = [
            _tensors(module(inputs[i : i + 1]), outputs, what)
            for i in range(inputs.shape[0])
        ]
    row_out = tuple(torch.cat([r[k] for r in rows]) for k in range(outputs))
    return {
        "train": train_out,
        "eval": eval_out,
        "rows": row_out,
        "n_params": sum(p.numel() for p in params),
        "reached": reached,
    }


def _module_inputs(batch: int, dim: int, seed: int, images: bool) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if images:  # pixel intensities in [0, 1]
        return torch.rand(batch, dim, generator=g)
    return 1.5 * torch.randn(batch, dim, generator=g)


_ENCODER_SHAPE_HINT = "forward(x) returns (mu, logvar), each (batch, z_dim)"
_DECODER_SHAPE_HINT = "forward(z) returns logits of shape (batch, x_dim): flat images, not (batch, 1, 28, 28)"


def _expect_float32(outputs: Sequence[Tensor], what: str) -> None:
    for out in outputs:
        expect(
            out.dtype == torch.float32,
            f"{what} is {out.dtype}, expected torch.float32 (05_vae trains in float32: no .double())",
        )


@check(
    "Encoder",
    "Encoder() maps (B, 784) float32 images to mu and logvar of shape (B, 20)",
    points=0.5,
)
@MODULE_SETTINGS
@given(seed=seeds(), batch=st.integers(3, 9))
def encoder_defaults(subject: Subject, seed: int, batch: int) -> None:
    x = _module_inputs(batch, 784, seed, images=True)
    report = subject.call(module_probe, "Encoder", (), {}, x, seed, 2)
    mu, logvar = report["train"]
    assert_shape(mu, (batch, 20), "mu from Encoder()", _ENCODER_SHAPE_HINT)
    assert_shape(logvar, (batch, 20), "logvar from Encoder()", _ENCODER_SHAPE_HINT)
    _expect_float32((mu, logvar), "the output of Encoder()")


@check(
    "Encoder",
    "Encoder(x_dim, hidden_dim, z_dim) honours its sizes, by position and by keyword",
    points=0.25,
)
@MODULE_SETTINGS
@given(problem=module_problems())
def encoder_sizes(subject: Subject, problem: ModuleProblem) -> None:
    p = problem
    x = _module_inputs(p.batch, p.x_dim, p.seed, images=True)
    sizes = (p.x_dim, p.hidden_dim, p.z_dim)
    keywords = {"x_dim": p.x_dim, "hidden_dim": p.hidden_dim, "z_dim": p.z_dim}
    for args, kwargs, how in (
        ((*sizes,), {}, f"Encoder{sizes}"),
        ((), keywords, "Encoder(x_dim=..., hidden_dim=..., z_dim=...)"),
    ):
        mu, logvar = subject.call(module_probe, "Encoder", args, kwargs, x, p.seed, 2)[
            "train"
        ]
        assert_shape(
            mu,
            (p.batch, p.z_dim),
            f"mu from {how}",
            "the arguments are (x_dim, hidden_dim, z_dim), in that order",
        )
        assert_shape(
            logvar,
            (p.batch, p.z_dim),
            f"logvar from {how}",
            "the arguments are (x_dim, hidden_dim, z_dim), in that order",
        )


@check(
    "Decoder", "Decoder() maps (B, 20) float32 latents to (B, 784) logits", points=0.5
)
@MODULE_SETTINGS
@given(seed=seeds(), batch=st.integers(3, 9))
def decoder_defaults(subject: Subject, seed: int, batch: int) -> None:
    z = _module_inputs(batch, 20, seed, images=False)
    (logits,) = subject.call(module_probe, "Decoder", (), {}, z, seed, 1)["train"]
    assert_shape(logits, (batch, 784), "the output of Decoder()", _DECODER_SHAPE_HINT)
    _expect_float32((logits,), "the output of Decoder()")


@check(
    "Decoder",
    "Decoder(z_dim, hidden_dim, x_dim) honours its sizes, by position and by keyword",
    points=0.25,
)
@MODULE_SETTINGS
@given(problem=module_problems())
def decoder_sizes(subject: Subject, problem: ModuleProblem) -> None:
    p = problem
    z = _module_inputs(p.batch, p.z_dim, p.seed, images=False)
    sizes = (p.z_dim, p.hidden_dim, p.x_dim)
    keywords = {"z_dim": p.z_dim, "hidden_dim": p.hidden_dim, "x_dim": p.x_dim}
    for args, kwargs, how in (
        ((*sizes,), {}, f"Decoder{sizes}"),
        ((), keywords, "Decoder(z_dim=..., hidden_dim=..., x_dim=...)"),
    ):
        (logits,) = subject.call(module_probe, "Decoder", args, kwargs, z, p.seed, 1)[
            "train"
        ]
        assert_shape(
            logits,
            (p.batch, p.x_dim),
            f"the output of {how}",
            "the arguments are (z_dim, hidden_dim, x_dim), in that order",
        )


#: |f(a) + f(b) - 2 f((a + b) / 2)| / (max|f| + 1) for an affine network in float32 is
#: round-off, below 1e-6 (inner products of 784 terms, each rounded to 6e-8 relative); one
#: hidden ReLU layer at its default init gives at least 0.035 on these inputs (20 seeds, sizes
#: of the defaults and 30/12/3). 1e-4 sits 100x above the first and 350x below the second.
AFFINE_TOL = 1e-4


def _midpoint_gap(outputs: Sequence[Tensor], batch: int) -> float:
    """Largest relative gap of f(a) + f(b) - 2 f((a + b) / 2) over outputs stacked [a; b; mid]."""
    gaps = []
    for out in outputs:
        a, b, mid = out.double().split(batch)
        gaps.append(float((a + b - 2 * mid).abs().max() / (out.abs().max() + 1.0)))
    return max(gaps)


def _midpoint_inputs(batch: int, dim: int, seed: int, images: bool) -> Tensor:
    a = _module_inputs(batch, dim, seed, images)
    b = _module_inputs(batch, dim, seed + 1, images)
    return torch.cat([a, b, (a + b) / 2])


@check(
    "Encoder",
    "has a hidden nonlinearity (the notebook's ReLU): the encoder is not affine in x",
    points=0.25,
)
@MODULE_SETTINGS
@given(seed=seeds())
def encoder_nonlinear(subject: Subject, seed: int) -> None:
    x = _midpoint_inputs(8, 784, seed, images=True)
    report = subject.call(module_probe, "Encoder", (), {}, x, seed, 2)
    gap = _midpoint_gap(report["eval"], 8)
    expect(
        gap > AFFINE_TOL,
        f"Encoder() is affine in x (f(a) + f(b) = 2 f((a + b) / 2) to {gap:.1g}): put a ReLU "
        "after the hidden layer, x_dim -> hidden_dim -> ReLU -> the two heads",
    )


@check(
    "Decoder",
    "has a hidden nonlinearity (the notebook's ReLU): the decoder is not affine in z",
    points=0.25,
)
@MODULE_SETTINGS
@given(seed=seeds())
def decoder_nonlinear(subject: Subject, seed: int) -> None:
    z = _midpoint_inputs(8, 20, seed, images=False)
    report = subject.call(module_probe, "Decoder", (), {}, z, seed, 1)
    gap = _midpoint_gap(report["eval"], 8)
    expect(
        gap > AFFINE_TOL,
        f"Decoder() is affine in z (f(a) + f(b) = 2 f((a + b) / 2) to {gap:.1g}): put a ReLU "
        "after the hidden layer, z_dim -> hidden_dim -> ReLU -> x_dim logits",
    )


# ----------------------------------------------------------------------------------------
# VAE: consistency with its own encoder and decoder, seen through forward hooks
# ----------------------------------------------------------------------------------------


def _flatten_output(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def vae_probe(
    student: Student,
    args: tuple[int, ...],
    x: Tensor,
    eps: Tensor | None,
    seed: int,
    gradients: bool = False,
    noise_seed: int | None = None,
    held: Mapping[str, Any] | None = None,
) -> VaeOutput:
    """Build ``VAE(*args)`` with a seeded init and run ``forward(x, eps)`` (``forward(x)`` when eps is None).

    The forward pass runs on a private global RNG seeded by ``noise_seed`` (default ``seed + 1``).

    Forward hooks record what the VAE's own ``encoder`` returned and what its ``decoder``
    received and returned during that call. With ``gradients``, also how many encoder and
    decoder parameters the reconstruction term :math:`-\\log p(x|z)` reaches.
    """
    with probes.held_correct(student, "VAE", held or {}):
        return _unheld_vae_probe(student, args, x, eps, seed, gradients, noise_seed)


def _unheld_vae_probe(
    student: Student,
    args: tuple[int, ...],
    x: Tensor,
    eps: Tensor | None,
    seed: int,
    gradients: bool,
    noise_seed: int | None,
) -> VaeOutput:
    model = _construct_probe(student, "VAE", args, {}, seed)
    parts = {}
    for attribute in ("encoder", "decoder"):
        part = getattr(model, attribute, None)
        if not isinstance(part, nn.Module):
            raise StudentError(
                "bad_result",
                f"VAE{args} has no `{attribute}` submodule (found {type(part).__name__}): "
                f"store it as self.{attribute} = {attribute.capitalize()}(...)",
            )
        parts[attribute] = part
    seen: dict[str, list[Any]] = {"encoder": [], "decoder_in": [], "decoder_out": []}

    def on_encoder(module: nn.Module, inputs: Any, output: Any) -> None:
        seen["encoder"].append(_flatten_output(output))

    def on_decoder(module: nn.Module, inputs: Any, output: Any) -> None:
        seen["decoder_in"].append(inputs[0] if inputs else None)
        seen["decoder_out"].append(output)

    handles = [
        parts["encoder"].register_forward_hook(on_encoder),
        parts["decoder"].register_forward_hook(on_decoder),
    ]
    try:
        with _seeded(seed + 1 if noise_seed is None else noise_seed):
            result = model(x) if eps is None else model(x, eps)
    finally:
        for handle in handles:
            handle.remove()
    logits, mu, logvar = _tensors(result, 3, "VAE.forward")
    # A wrong order or size is the student's bug: say so here, before any check does
    # arithmetic on mismatched shapes (which would read as a grader error).
    batch, x_dim, z_dim = x.shape[0], args[0], args[-1]
    for got, want, label in (
        (logits, (batch, x_dim), "logits"),
        (mu, (batch, z_dim), "mu"),
        (logvar, (batch, z_dim), "logvar"),
    ):
        if tuple(got.shape) != want:
            raise StudentError(
                "bad_result",
                f"VAE{tuple(args)}.forward returned {label} (its "
                f"{('first', 'second', 'third')[('logits', 'mu', 'logvar').index(label)]} "
                f"output) with shape {tuple(got.shape)}, expected {want}: forward(x, eps) "
                "returns (logits, mu, logvar) in that order, with the arguments "
                "(x_dim, hidden_dim, z_dim)",
            )
    report: VaeOutput = {
        "logits": logits,
        "mu": mu,
        "logvar": logvar,
        "hooked": False,
    }
    if (
        seen["encoder"] and seen["decoder_in"]
    ):  # the first encoder call, the last decoder call
        enc = seen["encoder"][0]
        report["hooked"] = True
        report["enc_mu"] = enc[0] if len(enc) > 0 else None
        report["enc_logvar"] = enc[1] if len(enc) > 1 else None
        report["z"] = seen["decoder_in"][-1]
        report["dec_logits"] = seen["decoder_out"][-1]
    if gradients:
        target = x.to(logits.dtype)
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        counts = {}
        for attribute, part in parts.items():
            params = [p for p in part.parameters() if p.requires_grad]
            if not params or not recon.requires_grad:
                counts[attribute] = 0
                continue
            grads = torch.autograd.grad(
                recon, params, allow_unused=True, retain_graph=True
            )
            counts[attribute] = sum(
                1 for g in grads if g is not None and bool(g.abs().sum() > 0)
            )
        report["reached"] = counts
    return report


def _vae_inputs(batch: int, x_dim: int, z_dim: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, x_dim, generator=g), torch.randn(batch, z_dim, generator=g)


@check(
    "VAE",
    "VAE(x_dim, hidden_dim, z_dim) has encoder and decoder submodules and returns (logits, mu, logvar) of the right shapes",
    points=0.5,
)
@MODULE_SETTINGS
@given(problem=module_problems())
def vae_shapes(subject: Subject, problem: ModuleProblem) -> None:
    p = problem
    x, eps = _vae_inputs(p.batch, p.x_dim, p.z_dim, p.seed)
    report = subject.call(
        vae_probe,
        (p.x_dim, p.hidden_dim, p.z_dim),
        x,
        eps,
        p.seed,
        held=held_for("VAE"),
    )
    hint = "forward(x, eps) returns (logits, mu, logvar) in that order; the arguments are (x_dim, hidden_dim, z_dim)"
    assert_shape(report["logits"], (p.batch, p.x_dim), "logits", hint)
    assert_shape(report["mu"], (p.batch, p.z_dim), "mu", hint)
    assert_shape(report["logvar"], (p.batch, p.z_dim), "logvar", hint)
    _expect_float32(
        (report["logits"], report["mu"], report["logvar"]), "the output of VAE.forward"
    )


@check(
    "VAE",
    "forward(x, eps) returns encoder(x) and decoder(mu + exp(logvar / 2) * eps)",
    points=1,
)
@MODULE_SETTINGS
@given(problem=module_problems())
def vae_consistent(subject: Subject, problem: ModuleProblem) -> None:
    p = problem
    x, eps = _vae_inputs(p.batch, p.x_dim, p.z_dim, p.seed)
    report = subject.call(
        vae_probe,
        (p.x_dim, p.hidden_dim, p.z_dim),
        x,
        eps,
        p.seed,
        held=held_for("VAE"),
    )
    expect(
        report["hooked"],
        "VAE.forward should call self.encoder(x) and then self.decoder(z)",
    )
    mu, logvar = report["mu"], report["logvar"]
    tol = {"rtol": 1e-5, "atol": 1e-6}
    # An encoder returning one (B, 2 z_dim) tensor that forward splits is fine; a pair must be returned as is.
    if isinstance(report["enc_logvar"], Tensor) and report["enc_mu"].shape == mu.shape:
        assert_close(
            mu,
            report["enc_mu"],
            "the returned mu",
            **tol,
            hint="return the encoder's mu (the order is logits, mu, logvar)",
        )
        assert_close(
            logvar,
            report["enc_logvar"],
            "the returned logvar",
            **tol,
            hint="return the encoder's logvar (the order is logits, mu, logvar)",
        )
    expected_z = mu.double() + torch.exp(0.5 * logvar.double()) * eps.double()
    assert_close(
        report["z"],
        expected_z,
        "the z passed to the decoder",
        **tol,
        hint="z = mu + exp(logvar / 2) * eps with the eps you are given, and forward returns "
        "(logits, mu, logvar) in that order",
    )
    assert_close(
        report["logits"],
        report["dec_logits"],
        "the returned logits",
        **tol,
        hint="return the decoder's output as it is (logits, no sigmoid)",
    )


@check(
    "VAE",
    "forward(x) without eps draws fresh noise for every image and every call",
    points=0.5,
)
@MODULE_SETTINGS
@given(problem=module_problems())
def vae_draws_noise(subject: Subject, problem: ModuleProblem) -> None:
    p = problem
    x, _ = _vae_inputs(1, p.x_dim, p.z_dim, p.seed)
    x = x.expand(
        p.batch, p.x_dim
    ).contiguous()  # identical images: only the noise tells rows apart
    args = (p.x_dim, p.hidden_dim, p.z_dim)
    held = held_for("VAE")
    first = subject.call(vae_probe, args, x, None, p.seed, held=held)
    second = subject.call(
        vae_probe, args, x, None, p.seed, noise_seed=p.seed + 100, held=held
    )
    logits = first["logits"]
    spread = float((logits - logits[:1]).abs().max())
    expect(
        spread > 0,
        "forward(x) gave identical logits for identical images: draw eps with the shape of mu "
        "(torch.randn_like(mu)), one draw per image, and use it",
    )
    expect(
        not torch.equal(first["logits"], second["logits"]),
        "two calls of forward(x) gave the same logits: draw new noise on every call",
    )


# ----------------------------------------------------------------------------------------
# train_vae: a public model that records what the training loop does
# ----------------------------------------------------------------------------------------


def fingerprints(images: Tensor) -> Tensor:
    """One number per image (a fixed random projection in float64): tells images and their order apart."""
    weights = torch.linspace(1.0, 2.0, images.shape[-1], dtype=torch.float64) ** 3
    return images.double() @ weights


class _RecordingEncoder(nn.Module):
    def __init__(
        self, x_dim: int, hidden_dim: int, z_dim: int, logvar_bias: float
    ) -> None:
        super().__init__()
        self.inner = nn.Linear(x_dim, hidden_dim)
        self.heads = nn.Linear(hidden_dim, 2 * z_dim)
        if (
            logvar_bias != 0.0
        ):  # a nearly deterministic encoder: sigma = exp(logvar_bias / 2)
            with torch.no_grad():
                self.heads.weight[z_dim:].zero_()
                self.heads.bias[z_dim:].fill_(logvar_bias)
        self.calls: list[tuple[Tensor, Tensor]] = []
        self.seen: list[Tensor] = []  # per training step, a fingerprint of each image

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.heads(torch.tanh(self.inner(x))).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            self.calls.append((mu.detach().cpu(), logvar.detach().cpu()))
            self.seen.append(fingerprints(x.detach().cpu()))
        return mu, logvar


class _RecordingDecoder(nn.Module):
    def __init__(
        self,
        z_dim: int,
        hidden_dim: int,
        x_dim: int,
        encoder_calls: list[tuple[Tensor, Tensor]],
    ) -> None:
        super().__init__()
        self.inner = nn.Linear(z_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim, x_dim)
        self.encoder_calls = (
            encoder_calls  # the encoder's record, to pair each z with its (mu, logvar)
        )
        self.calls: list[tuple[Tensor, Tensor | None]] = []

    def forward(self, z: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            z_cpu = z.detach().cpu()
            match = next(
                (c for c in reversed(self.encoder_calls) if c[0].shape == z_cpu.shape),
                None,
            )
            eps = None
            if match is not None:
                mu, logvar = match
                eps = (z_cpu.double() - mu.double()) / torch.exp(0.5 * logvar.double())
            self.calls.append((z_cpu, eps))
        return self.readout(torch.tanh(self.inner(z)))


class GradingVAE(nn.Module):
    """The model ``train_vae`` is graded on: ``encoder``, ``decoder``, ``forward(x, eps=None)``.

    Same contract as the assignment's ``VAE``. While gradients are enabled its encoder and
    decoder remember what they saw, so the grader can tell the batch sizes of the training
    loop and recover the noise :math:`\\epsilon = (z - \\mu) / \\sigma` behind every ``z``.
    A negative ``logvar_bias`` makes the encoder nearly deterministic (``lr = 0`` checks).
    """

    def __init__(
        self,
        x_dim: int = 784,
        hidden_dim: int = 64,
        z_dim: int = 4,
        logvar_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = _RecordingEncoder(x_dim, hidden_dim, z_dim, logvar_bias)
        self.decoder = _RecordingDecoder(z_dim, hidden_dim, x_dim, self.encoder.calls)

    def forward(
        self, x: Tensor, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(torch.addcmul(mu, torch.exp(0.5 * logvar), eps)), mu, logvar

    def noise(self) -> list[Tensor]:
        """The noise behind each decoder call made with gradients on, ``(batch, z_dim)`` each."""
        return [eps for _, eps in self.decoder.calls if eps is not None]


#: The grader's data: the embedded MNIST subset (never the instructor's full MNIST, so the
#: calibrated thresholds hold everywhere), split like ``course_lib.data.mnist_split``.
_SPLIT_SEED, _N_IMAGES, _N_TEST = 0, 5000, 1000


@functools.lru_cache(maxsize=4)
def grading_images(part: str, count: int) -> np.ndarray:
    """The first ``count`` images of the train or test part, ``(count, 784)`` float32 in [0, 1].

    Reads the subset shipped with ``course_lib`` (``course_lib.data.MNIST_SUBSET``), never
    ``COURSE_MNIST_DIR``.
    """
    from course_lib.data import load_mnist_subset

    order = np.random.default_rng(_SPLIT_SEED).permutation(_N_IMAGES)
    rows = order[:_N_TEST] if part == "test" else order[_N_TEST:]
    if count > len(rows):
        raise ValueError(f"only {len(rows)} {part} images, asked for {count}")
    images, _ = load_mnist_subset()
    return np.ascontiguousarray(images[rows[:count]], dtype=np.float32) / np.float32(
        255.0
    )


@dataclass(frozen=True)
class TrainConfig:
    """One call of ``train_vae`` on a fresh :class:`GradingVAE` (its repr is what a student reads)."""

    n_train: int = 96
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    init_seed: int = 0
    global_seed: int = 1  # the global RNG's state before the call: a correct loop does not depend on it
    hidden_dim: int = 32
    z_dim: int = 3
    logvar_bias: float = 0.0
    numpy_input: bool = False
    device: str | None = "cpu"
    n_test: int = 0
    eval_seed: int = 0


def _history(value: Any, epochs: int) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise StudentError(
            "bad_result",
            f"train_vae returned a {type(value).__name__}, expected a list with one float per epoch",
        )
    history = []
    for item in value:
        if isinstance(item, Tensor):
            raise StudentError(
                "bad_result",
                "train_vae's list holds tensors: append loss.item() (a float), which also frees the graph",
            )
        if isinstance(item, bool) or not isinstance(
            item, (int, float, np.floating, np.integer)
        ):
            raise StudentError(
                "bad_result",
                f"train_vae's list holds a {type(item).__name__}, expected floats",
            )
        history.append(float(item))
    if len(history) != epochs:
        raise StudentError(
            "bad_result",
            f"train_vae returned {len(history)} values for {epochs} epochs: one mean negative ELBO per epoch",
        )
    return history


class _GradientAudit:
    """Compares each parameter's ``.grad`` at every optimizer step with the gradient computed since the last step.

    ``.grad`` may be a positive multiple of the fresh gradient (gradient clipping) but not the
    fresh gradient plus older ones (a missing ``zero_grad``). Only ``torch.optim`` optimizers
    are seen; a hand-written update is not audited.
    """

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fresh: dict[int, Tensor] = {}
        self.steps, self.worst = 0, 0.0
        self.handles = [
            p.register_hook(self._hook(i)) for i, p in enumerate(self.params)
        ]
        self.handles.append(register_optimizer_step_pre_hook(self._on_step))

    def _hook(self, index: int) -> Any:
        def record(grad: Tensor) -> None:
            previous = self.fresh.get(index)
            self.fresh[index] = (
                grad.detach().clone() if previous is None else previous + grad.detach()
            )

        return record

    def _on_step(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> None:
        ours = {id(p) for p in self.params}
        if not any(
            id(p) in ours for group in optimizer.param_groups for p in group["params"]
        ):
            return
        stored, fresh = [], []
        for i, p in enumerate(self.params):
            if p.grad is not None and i in self.fresh:
                stored.append(p.grad.detach().double().flatten().cpu())
                fresh.append(self.fresh[i].double().flatten().cpu())
        self.fresh.clear()
        if not fresh:
            return
        self.steps += 1
        g, f = torch.cat(stored), torch.cat(fresh)
        norm = float(f.norm())
        if norm == 0.0:
            return
        scale = float(g @ f) / norm**2
        residual = float((g - scale * f).norm()) / norm
        self.worst = max(self.worst, residual, scale - 1.0)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _mean_nelbo(model: GradingVAE, x: np.ndarray, eps: Tensor | None) -> float:
    with torch.no_grad():
        data = torch.from_numpy(x)
        mu, logvar = model.encoder(data)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        logits = model.decoder(z)
        # The model's negative ELBO by torch.distributions in float64, inline: nothing here
        # takes negative_elbo's inputs (issue 19); only a trained model's progress uses it.
        mu, logvar, logits = mu.double(), logvar.double(), logits.double()
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        pixels = torch.distributions.Bernoulli(logits=logits, validate_args=False)
        return float((kl - pixels.log_prob(data.double()).sum(-1)).mean())


def train_probe(
    student: Student, config: TrainConfig, held: dict[str, Any] | None = None
) -> TrainOutput:
    """:func:`_unheld_train_probe` with ``train_vae``'s helpers held correct (``held``)."""
    with probes.held_correct(student, "train_vae", held or {}):
        return _unheld_train_probe(student, config)


def _unheld_train_probe(student: Student, config: TrainConfig) -> TrainOutput:
    """Call ``train_vae`` on a fresh :class:`GradingVAE` and report what happened.

    Keys: ``history``; ``changed`` (parameters moved); ``devices`` of the parameters after
    training; ``data_unchanged``; ``batches`` (batch size of each training step); ``noise``
    (the noise behind each step's ``z``); ``audited_steps``/``accumulation`` (see
    :class:`_GradientAudit`); ``start``/``end`` (held-out negative ELBO before and after, with
    fixed noise, when ``n_test``); ``frozen`` (mean negative ELBO on the training images at
    ``z = mu``).
    """
    c = config
    images = grading_images("train", c.n_train)
    train_x: Any = images.copy() if c.numpy_input else torch.from_numpy(images.copy())
    test = grading_images("test", c.n_test) if c.n_test else None
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(c.init_seed)
        model = GradingVAE(784, c.hidden_dim, c.z_dim, c.logvar_bias)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        eps = None
        if test is not None:
            eps = torch.randn(
                len(test), c.z_dim, generator=torch.Generator().manual_seed(c.eval_seed)
            )
            start = _mean_nelbo(model, test, eps)
        frozen = _mean_nelbo(model, images, None)
        torch.manual_seed(c.global_seed)
        audit = _GradientAudit(model)
        try:
            value = student.train_vae(
                model,
                train_x,
                epochs=c.epochs,
                batch_size=c.batch_size,
                lr=c.lr,
                device=c.device,
                seed=c.seed,
            )
        finally:
            audit.close()
    history = _history(value, c.epochs)
    param_devices = sorted({str(p.device) for p in model.parameters()})
    model.to("cpu").eval()
    after = model.state_dict()
    changed = any(not torch.equal(before[k], after[k].detach()) for k in before)
    if c.numpy_input:
        data_unchanged = isinstance(train_x, np.ndarray) and np.array_equal(
            train_x, images
        )
    else:
        data_unchanged = isinstance(train_x, Tensor) and torch.equal(
            train_x.cpu(), torch.from_numpy(images)
        )
    report: TrainOutput = {
        "history": history,
        "changed": changed,
        "devices": param_devices,
        "data_unchanged": data_unchanged,
        "batches": [int(z.shape[0]) for z, _ in model.decoder.calls],
        "seen": model.encoder.seen,
        "data_order": fingerprints(torch.from_numpy(images)),
        "noise": model.noise(),
        "audited_steps": audit.steps,
        "accumulation": audit.worst,
        "frozen": frozen,
    }
    if test is not None:
        report["start"] = start
        report["end"] = _mean_nelbo(model, test, eps)
    return report


def devices_probe(student: Student) -> DevicesOutput:
    """Whether the student's side has CUDA, and the device ``train_vae(device=None)`` should pick there."""
    from course_lib.device import get_device

    return {"cuda": bool(torch.cuda.is_available()), "default": get_device(None).type}


def run_train_vae(
    subject: Subject, config: TrainConfig, wired: bool = False
) -> TrainOutput:
    """Train on a fresh :class:`GradingVAE`; the student's helpers held correct unless ``wired``."""
    held = None if wired else held_for("train_vae")
    report = subject.call(train_probe, config, held)
    return report


def noise_test(noise: Sequence[Tensor], alpha: float) -> str:
    """Why the recorded noise is not fresh N(0, 1) per image and step, or '' when it is.

    Deterministic part: rows of one step must differ, and consecutive steps must differ.
    Statistical part (``alpha`` split over two tests): |mean| < z sqrt(1/n), and the sum of
    squares inside the two-sided chi-square(n) interval. False-failure probability at most
    ``alpha`` for exact N(0, 1) draws (the recovered eps carries float32 rounding, far below
    these tolerances).
    """
    if not noise:
        return "no z reached the decoder while gradients were on"
    for step, eps in enumerate(noise):
        if eps.shape[0] > 1 and bool((eps - eps[:1]).abs().max() < 1e-6):
            return f"every image of training step {step} got the same noise: draw eps with the shape of mu (batch, z_dim)"
    for step in range(1, len(noise)):
        a, b = noise[step - 1], noise[step]
        if a.shape == b.shape and bool((a - b).abs().max() < 1e-6):
            return f"training steps {step - 1} and {step} used the same noise: draw new eps at every step"
    values = torch.cat([e.flatten() for e in noise]).double()
    n = values.numel()
    z = math.sqrt(2.0) * float(
        torch.erfinv(torch.tensor(1.0 - alpha / 2.0, dtype=torch.float64))
    )
    mean = float(values.mean())
    if abs(mean) * math.sqrt(n) > z:
        return f"the noise has mean {mean:.3f} over {n} draws, not 0: draw eps ~ N(0, 1) with torch.randn, not torch.rand"
    squares = float(values.square().sum())
    low, high = chi2.ppf(alpha / 4.0, n), chi2.isf(alpha / 4.0, n)
    if not low <= squares <= high:
        return f"the noise has mean square {squares / n:.3f} over {n} draws, not 1: eps should be standard normal"
    return ""


@check(
    "train_vae", "returns one float per epoch and trains the model in place", points=0.5
)
def train_returns_history(subject: Subject) -> None:
    config = TrainConfig(n_train=64, epochs=3)
    # The one train_vae property run with the student's own helpers, as they are wired.
    report = run_train_vae(subject, config, wired=True)
    history = report["history"]
    expect(
        all(math.isfinite(v) for v in history),
        f"train_vae returned {history}: the losses should be finite",
    )
    expect(
        report["changed"],
        "the model's parameters did not change: train the model you are given (optimizer.step())",
    )


@check(
    "train_vae",
    "lr = 0 leaves the model unchanged and reports its mean negative ELBO per image",
    points=1,
)
def train_lr_zero(subject: Subject) -> None:
    # 80 = 2 x 32 + 16: the partial last batch must count by its size (a weighted mean).
    config = TrainConfig(n_train=80, lr=0.0, logvar_bias=-20.0)
    report = run_train_vae(subject, config)
    expect(
        not report["changed"],
        "with lr=0 the parameters changed: pass lr to the optimizer",
    )
    for epoch, value in enumerate(report["history"]):
        assert_close(
            value,
            report["frozen"],
            f"the value for epoch {epoch}",
            rtol=1e-4,
            atol=1e-3,
            hint="report the mean over all the epoch's images of the negative ELBO (nats per "
            "image): weight each batch's mean by its size (the last batch is smaller); not an "
            "unweighted mean of batch means, a sum over batches, a per-pixel mean, or the last "
            "batch's loss",
        )


@check(
    "train_vae",
    "the same seed gives the same history whatever the global RNG state; another seed another",
    points=0.5,
)
def train_seeded(subject: Subject) -> None:
    base = TrainConfig(n_train=64, epochs=2, seed=11, global_seed=1)
    first = run_train_vae(subject, base)["history"]
    again = run_train_vae(
        subject, TrainConfig(n_train=64, epochs=2, seed=11, global_seed=2)
    )["history"]
    other = run_train_vae(
        subject, TrainConfig(n_train=64, epochs=2, seed=12, global_seed=1)
    )["history"]
    expect(
        np.allclose(first, again, rtol=1e-6, atol=0.0),
        f"seed=11 gave {first} and then {again}: draw all noise and shuffling from `seed` "
        "(torch.manual_seed(seed) or a torch.Generator), not from the global RNG as you found it",
    )
    expect(
        first != other,
        f"seeds 11 and 12 gave the same history {first}: use `seed`, do not fix your own",
    )


@check(
    "train_vae",
    "each step takes batch_size images (the last one the rest) and each epoch visits every image once, in a new random order",
    points=0.5,
)
def train_batches(subject: Subject) -> None:
    # 88 = 3 x 24 + 16: a partial last batch, which must be trained on, not dropped.
    config = TrainConfig(n_train=88, batch_size=24, epochs=2)
    report = run_train_vae(subject, config)
    batches = report["batches"]
    per_epoch = [24, 24, 24, 16]
    steps = config.epochs * len(per_epoch)
    expect(
        len(batches) == steps and sorted(batches) == sorted(per_epoch * config.epochs),
        f"with {config.n_train} images, batch_size={config.batch_size} and {config.epochs} "
        f"epochs the decoder should see {steps} batches, of sizes {per_epoch} in each epoch "
        f"(the last batch holds the {config.n_train % config.batch_size} images left over: "
        f"keep it); it saw {len(batches)} batches of sizes {batches}",
    )
    seen, data = report["seen"], report["data_order"]
    if len(seen) != steps:
        return  # the encoder was called another way: the sizes above are what we can check
    epochs = [
        torch.cat(seen[e * len(per_epoch) : (e + 1) * len(per_epoch)])
        for e in range(config.epochs)
    ]
    for e, order in enumerate(epochs):
        expect(
            order.shape == data.shape
            and torch.equal(order.sort().values, data.sort().values),
            f"epoch {e + 1} did not train on every image exactly once: index the data with a "
            "permutation of all its rows (torch.randperm(n)), without repeats",
        )
    # A uniformly random permutation of 88 images is the identity, or repeats the previous
    # epoch's, with probability 1/88! each: deterministic in practice.
    expect(
        not torch.equal(epochs[0], data),
        "epoch 1 visited the images in the order they were given: shuffle them every epoch "
        "(the order of a dataset is often not random, e.g. sorted by label)",
    )
    expect(
        not torch.equal(epochs[0], epochs[1]),
        "both epochs visited the images in the same order: draw a new permutation every epoch",
    )


#: Held-out negative ELBO (nats per image) that three epochs must reach. With the tanh grading
#: model the reference over 12 seeds reaches 211.8 +- 1.5 (max 213.2; the earlier ReLU model:
#: 214.9 +- 2.3 over 40 seeds, from 551 at initialisation); Adam, AdamW, RMSprop and SGD with
#: momentum all ended below 220, Adagrad near 260. See reports/calibration_vae.md.
TRAIN_CONFIG = TrainConfig(
    n_train=1024, epochs=3, batch_size=64, lr=3e-3, hidden_dim=64, z_dim=4, n_test=500
)
TRAIN_THRESHOLD = 280.0
TRAIN_ALPHA = 1e-6


@check(
    "train_vae",
    "three epochs on 1,024 MNIST digits lower the negative ELBO, every epoch and on held-out digits",
    points=1,
    alpha=TRAIN_ALPHA,
)
@settings(STATISTICAL, max_examples=1)
@given(seed=seeds())
def train_learns(subject: Subject, seed: int) -> None:
    """One training run from a seeded init; the held-out value uses fixed noise.

    False-failure probability: stated 1e-6. The reference's final value has mean 211.8 and
    standard deviation 1.5 over 12 seeds (ReLU model earlier: 214.9 +- 2.3 over 40); the
    threshold is over 28 standard deviations above it, and the smallest epoch decrease seen
    was 16 nats (about 8 standard deviations).
    """
    config = dataclasses.replace(
        TRAIN_CONFIG, seed=seed % 2**31, init_seed=(seed + 1) % 2**31
    )
    report = run_train_vae(subject, config)
    history = report["history"]
    expect(
        all(b < a for a, b in itertools.pairwise(history)),
        f"the negative ELBO per epoch was {[round(v, 1) for v in history]}: it should fall every epoch "
        "(minimise the negative ELBO, call optimizer.zero_grad() and optimizer.step() each batch)",
    )
    expect(
        report["end"] < TRAIN_THRESHOLD,
        f"after training, the held-out negative ELBO is {report['end']:.1f} nats (it started at "
        f"{report['start']:.1f}); a correct loop reaches well below {TRAIN_THRESHOLD:.0f}",
    )


# ----------------------------------------------------------------------------------------
# iwae_bound: a public model whose encoder and decoder the bound is computed with
# ----------------------------------------------------------------------------------------


class _ScoringEncoder(nn.Module):
    def __init__(self, x_dim: int, hidden_dim: int, z_dim: int) -> None:
        super().__init__()
        self.inner = nn.Linear(x_dim, hidden_dim)
        self.heads = nn.Linear(hidden_dim, 2 * z_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.heads(torch.tanh(self.inner(x))).chunk(2, dim=-1)
        return mu, logvar


class _ScoringDecoder(nn.Module):
    def __init__(self, z_dim: int, hidden_dim: int, x_dim: int, gain: float) -> None:
        super().__init__()
        self.inner = nn.Linear(z_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim, x_dim)
        self.gain = gain  # larger logits: log p(x|z) of hundreds or thousands of nats

    def forward(self, z: Tensor) -> Tensor:
        return self.gain * self.readout(torch.tanh(self.inner(z)))


class ScoringVAE(nn.Module):
    """The model ``iwae_bound`` is graded on: ``encoder(x) -> (mu, logvar)``, ``decoder(z) -> logits``.

    Built from a seed, so the grader rebuilds the same weights on its side. Its decoder
    accepts ``z`` of any leading shape (``(K * B, Z)`` or ``(K, B, Z)``), as ``nn.Linear`` does.
    """

    def __init__(
        self, x_dim: int, hidden_dim: int, z_dim: int, gain: float = 1.0
    ) -> None:
        super().__init__()
        self.encoder = _ScoringEncoder(x_dim, hidden_dim, z_dim)
        self.decoder = _ScoringDecoder(z_dim, hidden_dim, x_dim, gain)

    def forward(
        self, x: Tensor, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(mu + torch.exp(0.5 * logvar) * eps), mu, logvar


@dataclass(frozen=True)
class IwaeProblem:
    """A :class:`ScoringVAE`, images ``x`` ``(batch, x_dim)`` and noise ``eps`` ``(samples, batch, z_dim)``.

    Images are grey levels with exact 0s and 1s; the noise is standard normal.
    """

    batch: int
    x_dim: int
    z_dim: int
    samples: int
    seed: int
    dtype: str = "float64"
    hidden_dim: int = 16
    gain: float = 1.0

    def model(self) -> ScoringVAE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = ScoringVAE(self.x_dim, self.hidden_dim, self.z_dim, self.gain)
        return model.to(_DTYPES[self.dtype]).eval()

    def tensors(self) -> tuple[Tensor, Tensor]:
        x, _ = PixelBatch(self.batch, self.x_dim, self.seed + 1, self.dtype).tensors()
        g = torch.Generator().manual_seed(self.seed + 2)
        eps = torch.randn(
            self.samples, self.batch, self.z_dim, generator=g, dtype=torch.float64
        )
        return x, eps.to(_DTYPES[self.dtype])


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


def log_weights_closed_form(model: ScoringVAE, x: Tensor, eps: Tensor) -> Tensor:
    r"""``log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, sigma^2)`` for each draw, ``(K, B)``, in float64.

    Written with ``torch.distributions`` from the model's own encoder and decoder: the
    importance weights of Burda et al. (2016), eq. (8), one per draw and image.
    """
    with torch.no_grad():
        mu, logvar = model.encoder(x)
        mu, sigma = mu.double(), torch.exp(0.5 * logvar.double())
        z = mu + sigma * eps.double()  # (K, B, Z)
        logits = model.decoder(z.to(x.dtype)).double()
        pixels = torch.distributions.Bernoulli(logits=logits, validate_args=False)
        log_lik = pixels.log_prob(x.double().expand_as(logits)).sum(-1)
        prior = torch.distributions.Normal(0.0, 1.0)
        q = torch.distributions.Normal(mu, sigma)
        return log_lik + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


class IwaeOutput(probes.SideEffects):
    """What :func:`iwae_probe` brings back: the bound and the side effects on
    ``(model, x, eps)`` (the model counts as changed when any parameter's value changed)."""

    value: Tensor


def _parameter_values(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def iwae_probe(
    student: Student,
    problem: IwaeProblem,
    eps: Tensor | None = None,
    held: Mapping[str, Any] | None = None,
) -> IwaeOutput:
    """Call ``iwae_bound(model, x, eps)`` on the problem's model (its own noise unless ``eps``),
    with the helpers in ``held`` held correct."""
    model = problem.model()
    x, own_eps = problem.tensors()
    eps = own_eps if eps is None else eps
    before = probes.snapshot((_parameter_values(model), x, eps))
    with (
        _seeded(problem.seed + 3),
        probes.held_correct(student, "iwae_bound", held or {}),
    ):
        value = student.iwae_bound(model, x, eps)
    if not isinstance(value, Tensor):
        raise StudentError(
            "bad_result",
            f"iwae_bound returned a {type(value).__name__}, expected a torch.Tensor of shape (B,)",
        )
    effects = probes.side_effects(before, (_parameter_values(model), x, eps))
    return {"value": value.detach().cpu(), **effects}


def _bound(subject: Subject, problem: IwaeProblem, eps: Tensor | None = None) -> Tensor:
    # Held correct: the SPEC promises helpers for (B, 784) images only, and a bound may call
    # them on (K, B, 784); so no iwae_bound property runs the student's helpers as wired.
    out = subject.call(iwae_probe, problem, eps, held_for("iwae_bound"))
    expect_no_side_effects(
        "iwae_bound",
        out,
        ARG_NAMES["iwae_bound"],
        mutated="compute new tensors instead",
    )
    value: Tensor = out["value"]
    assert_shape(
        value,
        (problem.batch,),
        "the bound",
        "one bound per image: reduce over the K samples (axis 0 of eps), never over the batch",
    )
    return value


# Float64 models and data: the bounds are sums of ~10 pixel terms of order 1, so 1e-8 is
# rounding slack, many orders below the smallest bug's effect (log 2 for a missing -log K).
_IWAE_TOL = {"rtol": 1e-8, "atol": 1e-8}


@check(
    "iwae_bound",
    "returns one finite bound per image, shape (B,), and modifies nothing",
    points=0.5,
)
@FUNCTION_SETTINGS
@given(problem=iwae_problems())
def iwae_shape(subject: Subject, problem: IwaeProblem) -> None:
    value = _bound(subject, problem)
    expect(
        bool(torch.isfinite(value).all()),
        f"iwae_bound gave non-finite values {value.tolist()}",
    )


@check(
    "iwae_bound",
    "with K = 1 equals log p(x|z) + log p(z) - log q(z|x) at z = mu + exp(logvar / 2) * eps",
    points=1,
)
@FUNCTION_SETTINGS
@given(problem=iwae_problems(samples=(1, 1)))
@example(problem=IwaeProblem(3, 10, 2, 1, 0, gain=SATURATING_GAIN))
def iwae_single_sample(subject: Subject, problem: IwaeProblem) -> None:
    x, eps = problem.tensors()
    value = _bound(subject, problem)
    expected = log_weights_closed_form(problem.model(), x, eps)[0]
    hint = hint_for(value, IWAE_BUGS, _same_bound, problem.model(), x, eps) or (
        "each log-weight is log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), all three "
        "at the sampled z = mu + exp(logvar / 2) * eps (not at mu, and not the closed-form KL)"
    )
    assert_close(value, expected, "the bound with K = 1", **_IWAE_TOL, hint=hint)


def _clamped_log_weights(model: ScoringVAE, x: Tensor, eps: Tensor) -> Tensor:
    """Log-weights ``(K, B)`` with log p(x|z) from ``binary_cross_entropy(sigmoid(logits))``."""
    with torch.no_grad():
        mu, logvar = (t.double() for t in model.encoder(x))
        z = mu + (0.5 * logvar).exp() * eps.double()
        probs = torch.sigmoid(model.decoder(z.to(x.dtype)).double())
        bce = F.binary_cross_entropy(
            probs, x.double().expand_as(probs), reduction="none"
        )
        return (-bce.sum(-1) - 0.5 * z.pow(2).sum(-1)) + 0.5 * (
            eps.double().pow(2) + logvar
        ).sum(-1)


def _same_bound(got: Tensor, candidate: Tensor) -> bool:
    return got.shape == candidate.shape and torch.allclose(
        got.double(), candidate, rtol=_IWAE_TOL["rtol"], atol=_IWAE_TOL["atol"]
    )


#: Known wrong bounds with K = 1 (``wrong(model, x, eps)``).
IWAE_BUGS: Catalogue = (
    (
        KnownBug(
            "iwae_bound/iwae_bound_bce_of_sigmoid",
            "the decoder is confident here (logits in the hundreds): sigmoid(logits) rounds to exactly "
            "0 or 1 and binary_cross_entropy clamps each log at -100; compute log p(x|z) from the "
            "logits (binary_cross_entropy_with_logits, or your bernoulli_log_likelihood)",
        ),
        lambda model, x, eps: _clamped_log_weights(model, x, eps)[0],
    ),
)


@check(
    "iwae_bound",
    "equals log((1/K) sum_k exp(bound with K = 1 for eps[k])), pairing eps[k, b] with image b",
    points=1,
)
@FUNCTION_SETTINGS
@given(problem=iwae_problems())
@example(problem=IwaeProblem(3, 10, 2, 4, 0, gain=SATURATING_GAIN))
def iwae_log_mean_exp(subject: Subject, problem: IwaeProblem) -> None:
    _, eps = problem.tensors()
    value = _bound(subject, problem)
    singles = torch.stack([_bound(subject, problem, e[None]) for e in eps]).double()
    expected = torch.logsumexp(singles, dim=0) - math.log(problem.samples)
    assert_close(
        value,
        expected,
        f"the bound with K = {problem.samples}",
        **_IWAE_TOL,
        hint="average the weights, not the log-weights: log (1/K) sum_k exp(log w_k) = "
        "logsumexp over k minus log K; eps[k] is the k-th draw for the whole batch",
    )


@check(
    "iwae_bound",
    "finite and exact in float32 when every weight underflows (784 pixels, log w near -700)",
    points=0.5,
)
@settings(GRADING, max_examples=5)
@given(seed=seeds(), samples=st.integers(3, 8))
def iwae_underflow(subject: Subject, seed: int, samples: int) -> None:
    problem = IwaeProblem(2, 784, 5, samples, seed, "float32", gain=4.0)
    x, eps = problem.tensors()
    value = _bound(subject, problem)
    log_weights = log_weights_closed_form(problem.model(), x, eps)
    expected = torch.logsumexp(log_weights, dim=0) - math.log(samples)
    expect(
        bool(torch.isfinite(value).all()),
        f"the bound is {value.tolist()} where the log-weights are about "
        f"{float(log_weights.mean()):.0f}: exp of them underflows to 0, so never form the "
        "weights themselves; use torch.logsumexp",
    )
    # float32 sums of 784 pixel terms of up to ~20 nats: relative rounding ~1e-6 of |log w|
    # (~2000), so 0.05 nats of slack; the smallest bug (a missing -log K) moves it by 1.1.
    assert_close(
        value,
        expected,
        "the float32 bound",
        rtol=1e-5,
        atol=0.05,
        hint="logsumexp over the K samples minus log K, in the input dtype",
    )
