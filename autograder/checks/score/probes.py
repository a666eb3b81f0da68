"""What runs in the student's process for ``02_score``: the probes, their outputs, and every
callable handed to student code.

Families (``make_q``) and integrands (``f``) are instances of module-level classes here
(picklable, a short repr); families ignore parameters they do not use, so an integrand may have
parameters of its own. Student code that draws its own samples runs under
:func:`autograder.probes.seeded`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
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

from autograder import probes
from autograder.subject import Student, StudentError


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
    with probes.seeded(seed):
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
    with probes.seeded(seed):
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
