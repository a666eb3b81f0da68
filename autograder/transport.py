"""Moving values between the judge and the student's code without trusting the student.

Everything a probe returns goes through :func:`encode` and :func:`decode`: tensors are
detached, copied to the CPU and stripped of subclasses, arrays travel as tensors, and
:func:`decode` loads with ``torch.load(weights_only=True)``, which refuses arbitrary
objects. The same round trip runs in a notebook and in the sandboxed CI worker, so both
give the checks identical values.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import torch

__all__ = ["TransportError", "decode", "encode", "pickle_args", "unpickle_args"]

_ARRAY_TAG = "__ndarray__"
# Modules whose objects must never be sent to the student's side.
_FORBIDDEN_PREFIXES = ("autograder.hidden", "course_lib.reference", "__main__")


class TransportError(TypeError):
    """A value that cannot cross the boundary (an unsupported type)."""


def _plain(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, complex)):
        return value
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            value = value.to_dense()
        return value.detach().to("cpu").clone().as_subclass(torch.Tensor)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TransportError(f"{path} is an array of Python objects, not numbers")
        return (_ARRAY_TAG, torch.from_numpy(np.ascontiguousarray(value).copy()))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        items = [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TransportError(f"{path} is a dict with non-string keys")
        return {k: _plain(v, f"{path}[{k!r}]") for k, v in value.items()}
    raise TransportError(f"{path} is a {type(value).__name__}, which cannot be checked")


def _restore(value: Any) -> Any:
    if isinstance(value, tuple):
        if (
            len(value) == 2
            and value[0] == _ARRAY_TAG
            and isinstance(value[1], torch.Tensor)
        ):
            return value[1].numpy()
        return tuple(_restore(v) for v in value)
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


def encode(value: Any) -> bytes:
    """Serialise a probe's result (tensors, arrays, numbers, strings, containers)."""
    buffer = io.BytesIO()
    torch.save(_plain(value, "the result"), buffer)
    return buffer.getvalue()


def decode(payload: bytes) -> Any:
    """Inverse of :func:`encode`, safe on untrusted bytes (``weights_only`` loading)."""
    try:
        loaded = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # malformed or hostile payload
        raise TransportError(
            f"the result could not be read back: {type(error).__name__}"
        ) from error
    return _restore(loaded)


class _GuardedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_FORBIDDEN_PREFIXES):
            raise TransportError(
                f"{module}.{name} may not be sent to student code: probes and the callables "
                "they take must live in public modules (autograder.probes, autograder.checks, "
                "autograder.problems, course_lib helpers)"
            )
        return super().find_class(module, name)


def pickle_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a probe call (judge -> student side). The judge is trusted; this only copies."""
    return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


def unpickle_args(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle a probe call, refusing anything from hidden or reference modules."""
    args, kwargs = _GuardedUnpickler(io.BytesIO(payload)).load()
    return args, kwargs
