"""Generic probes: public functions that run next to the student's code and return plain data.

Each takes the :class:`~autograder.subject.Student` first. Assignment-specific probes live
in the public ``autograder.checks.<module>``; never in ``autograder.hidden`` (the sandboxed
worker cannot import it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from autograder.subject import Student, StudentError

__all__ = ["changed", "invoke", "vjp"]


def _snapshot(values: Sequence[Any]) -> list[Any]:
    return [
        copy.deepcopy(v) if isinstance(v, (torch.Tensor, np.ndarray)) else None
        for v in values
    ]


def changed(before: Any, after: Any) -> bool:
    """True when a tensor or array argument differs from its snapshot (shape or any value)."""
    if isinstance(after, torch.Tensor):
        return before.shape != after.shape or not torch.equal(
            before.detach(), after.detach()
        )
    if isinstance(after, np.ndarray):
        return before.shape != after.shape or not np.array_equal(
            before, after, equal_nan=True
        )
    return False


def invoke(student: Student, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call ``student.<name>(*args, **kwargs)`` and report side effects on the arguments.

    Returns:
        ``{"value": result, "mutated": [indices of modified args], "grad_left": [indices of
        tensor args that now carry .grad]}``.
    """
    target = getattr(student, name)
    before = _snapshot(args)
    value = target(*args, **kwargs)
    mutated = [
        i
        for i, (b, a) in enumerate(zip(before, args))
        if b is not None and changed(b, a)
    ]
    grad_left = [
        i
        for i, a in enumerate(args)
        if isinstance(a, torch.Tensor) and a.grad is not None
    ]
    return {"value": value, "mutated": mutated, "grad_left": grad_left}


def vjp(
    student: Student,
    name: str,
    args: tuple[Any, ...],
    wrt: tuple[int, ...],
    cotangent: torch.Tensor | None = None,
    output_index: int | None = None,
) -> dict[str, Any]:
    r"""Call ``student.<name>(*args)`` with ``args[i]`` (for ``i`` in ``wrt``) as fresh leaves and
    return the output and the vector-Jacobian products :math:`v^\top \partial y / \partial a_i`.

    Args:
        student: The submission.
        name: The function to call.
        args: Positional arguments.
        wrt: Indices of the tensor arguments to differentiate with respect to.
        cotangent: :math:`v`, shaped like the output; defaults to ones (the gradient of the sum).
        output_index: When the function returns a tuple, which element to differentiate.

    Returns:
        ``{"value": output, "grads": [grad per wrt index, zeros where unused]}``; raises a
        :class:`StudentError` when the output is not connected to the inputs at all.
    """
    call_args = list(args)
    for i in wrt:
        call_args[i] = call_args[i].detach().clone().requires_grad_(True)
    value = getattr(student, name)(*call_args)
    output = value[output_index] if output_index is not None else value
    if not isinstance(output, torch.Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(output).__name__}, expected a torch.Tensor",
        )
    if not output.requires_grad:
        raise StudentError(
            "bad_result",
            f"{name}'s output is not differentiable with respect to its parameters: did you detach, "
            "use .sample() instead of a differentiable path, or convert to numpy?",
        )
    v = torch.ones_like(output) if cotangent is None else cotangent.to(output.dtype)
    if v.shape != output.shape:
        raise StudentError(
            "bad_result",
            f"{name} returned shape {tuple(output.shape)}, expected {tuple(v.shape)}",
        )
    leaves = [call_args[i] for i in wrt]
    grads = torch.autograd.grad(output, leaves, grad_outputs=v, allow_unused=True)
    return {
        "value": value,
        "grads": [
            torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)
        ],
    }
