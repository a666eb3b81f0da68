"""Device selection: CUDA, then Apple MPS, then CPU; ``COURSE_DEVICE`` overrides."""

from __future__ import annotations

import os

import torch

__all__ = ["get_device"]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to train on.

    Args:
        device: An explicit choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...). When ``None``,
            the ``COURSE_DEVICE`` environment variable decides, else the best available.

    Returns:
        A :class:`torch.device`.

    Raises:
        ValueError: if the requested device does not exist on this machine.
    """
    choice = device if device is not None else os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(choice)
    except RuntimeError as error:
        raise ValueError(f"unknown device {choice!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available here")
    return resolved
