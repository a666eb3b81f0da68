"""Autograd plumbing shared by the reference estimators (not a graded task)."""

from __future__ import annotations

import torch
from torch import Tensor


def fresh_leaves(params: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Copies of ``params`` that track gradients, so the caller's tensors stay untouched."""
    return tuple(p.detach().clone().requires_grad_(True) for p in params)


def mean_grads(
    leaves: tuple[Tensor, ...],
    num_samples: int,
    weighted: tuple[Tensor, Tensor] | None = None,
    summed: Tensor | None = None,
) -> tuple[Tensor, ...]:
    r"""Gradient of :math:`\frac1S \sum_s (w_s a_s + b_s)` with respect to ``leaves``.

    ``weighted`` is ``(a, w)`` with ``w`` a constant, ``summed`` is ``b``; either may be
    None, and so may any part that does not depend on the leaves (zeros for the leaves
    nothing depends on). The weights enter as the backward pass's incoming gradient and the
    sum's backward is a broadcast, so no ``(S,)``-sized surrogate is built and no
    ``(S,)``-sized division is done: the :math:`1/S` is applied to the parameter-sized
    gradients instead (the same value up to float round-off of one division).
    """
    outputs: list[Tensor] = []
    incoming: list[Tensor | None] = []
    if weighted is not None and weighted[0].requires_grad:
        outputs.append(weighted[0])
        incoming.append(weighted[1].to(weighted[0].dtype))
    if summed is not None and summed.requires_grad:
        outputs.append(summed.sum())
        incoming.append(None)
    if not outputs:
        return tuple(torch.zeros_like(p) for p in leaves)
    grads = torch.autograd.grad(outputs, leaves, incoming, allow_unused=True)
    return tuple(
        torch.zeros_like(p) if g is None else g / num_samples
        for p, g in zip(leaves, grads)
    )
