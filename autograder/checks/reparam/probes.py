"""What runs in the student's process for ``03_reparam``: the probes, their outputs, and the
integrands ``f(z) -> (S,)`` and samplers ``rsample(*params, noise)`` handed to
``reparam_grad`` (module-level classes: they are pickled into the student's process)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from autograder import probes
from autograder.compare import (
    as_numpy,
)
from autograder.subject import Student, StudentError

DTYPE = torch.float64


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
