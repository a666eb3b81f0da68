"""Comparisons whose failure messages tell a student what to look at."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autograder.core import Failure

__all__ = ["as_numpy", "assert_close", "assert_shape"]


def as_numpy(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a :class:`Failure` naming ``what``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Failure(f"{what} should be numbers, got {type(value).__name__}") from None
    return array


def assert_shape(value: Any, shape: tuple[int, ...], what: str, hint: str = "") -> None:
    """Fail unless ``value`` has exactly ``shape``."""
    actual = tuple(getattr(value, "shape", ()))
    if actual != tuple(shape):
        message = f"{what} has shape {actual}, expected {tuple(shape)}"
        raise Failure(message + (f": {hint}" if hint else ""))


def assert_close(
    actual: Any,
    expected: Any,
    what: str,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    hint: str = "",
) -> None:
    """Fail with the worst entry (index, got, expected) unless ``actual ≈ expected``.

    NaN or infinity where the expected value is finite gets its own message.
    """
    got = as_numpy(actual, what)
    want = as_numpy(expected, what)
    if got.shape != want.shape:
        raise Failure(
            f"{what} has shape {got.shape}, expected {want.shape}"
            + (f": {hint}" if hint else "")
        )
    finite = np.isfinite(want)
    bad_finite = finite & ~np.isfinite(got)
    if bad_finite.any():
        index = tuple(int(i) for i in np.argwhere(bad_finite)[0])
        message = f"{what} is {got[index]} at index {index} where {want[index]:.6g} was expected"
        raise Failure(
            message + (f": {hint}" if hint else ": look for overflow, log(0) or 0/0")
        )
    error = np.where(finite, np.abs(got - want) - (atol + rtol * np.abs(want)), 0.0)
    if (error > 0).any() or (~finite & (got != want)).any():
        flat = (
            int(np.argmax(error))
            if (error > 0).any()
            else int(np.argmax(~finite & (got != want)))
        )
        index = (
            tuple(int(i) for i in np.unravel_index(flat, want.shape))
            if want.shape
            else ()
        )
        location = f" at index {index}" if index else ""
        message = f"{what} is wrong{location}: got {got[index]:.6g}, expected {want[index]:.6g}"
        raise Failure(message + (f". {hint}" if hint else ""))
