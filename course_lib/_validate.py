"""Input validation shared by the reference and the helpers: clear errors, never deep tracebacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """Return ``value`` as a float64 array with ``ndim`` dimensions, or raise naming ``name``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be an array of numbers, got {type(value).__name__}"
        ) from error
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_gmm(
    X: Any, weights: Any, means: Any, covs: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate GMM data and parameters; return float64 arrays ``(X, weights, means, covs)``."""
    X = as_float_array("X", X, 2)
    weights = as_float_array("weights", weights, 1)
    means = as_float_array("means", means, 2)
    covs = as_float_array("covs", covs, 3)
    n_components, dim = means.shape
    if X.shape[1] != dim:
        raise ValueError(f"X has {X.shape[1]} columns but means has dimension {dim}")
    if weights.shape != (n_components,):
        raise ValueError(
            f"weights must have shape ({n_components},), got {weights.shape}"
        )
    if covs.shape != (n_components, dim, dim):
        raise ValueError(
            f"covs must have shape ({n_components}, {dim}, {dim}), got {covs.shape}"
        )
    if np.any(weights <= 0) or abs(weights.sum() - 1.0) > 1e-8:
        raise ValueError(
            f"weights must be positive and sum to 1, got sum {weights.sum():.6g}"
        )
    return X, weights, means, covs


def check_tensor(name: str, value: Any) -> torch.Tensor:
    """Raise a clear TypeError unless ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_params(params: Any) -> tuple[torch.Tensor, ...]:
    """Validate a tuple of parameter tensors."""
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "params must be a tuple of tensors, e.g. (mu, log_sigma), not a single tensor"
        )
    params = tuple(params)
    if not params:
        raise ValueError("params is empty: pass at least one parameter tensor")
    for i, p in enumerate(params):
        check_tensor(f"params[{i}]", p)
        if not p.is_floating_point():
            raise TypeError(
                f"params[{i}] must be a floating-point tensor, got {p.dtype}"
            )
    return params


def per_sample(name: str, values: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Check that ``values`` has shape ``(num_samples,)``."""
    if not isinstance(values, torch.Tensor) or values.shape != (num_samples,):
        shape = (
            tuple(values.shape)
            if isinstance(values, torch.Tensor)
            else type(values).__name__
        )
        raise ValueError(
            f"{name} must return a tensor of shape ({num_samples},), got {shape}"
        )
    return values
