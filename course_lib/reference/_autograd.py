"""Autograd plumbing shared by the reference estimators (not a graded task)."""

from __future__ import annotations

import torch
from torch import Tensor


def fresh_leaves(params: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Copies of ``params`` that track gradients, so the caller's tensors stay untouched."""
    return tuple(p.detach().clone().requires_grad_(True) for p in params)


def grads_or_zeros(output: Tensor, leaves: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """:math:`\\partial` ``output`` / ``leaves``, with zeros for leaves it does not depend on."""
    grads = torch.autograd.grad(output, leaves, allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))
