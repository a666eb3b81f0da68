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
import zipfile
from typing import Any

import numpy as np
import torch

__all__ = [
    "TransportError",
    "check_archive",
    "decode",
    "encode",
    "pickle_args",
    "unpickle_args",
]

_ARRAY_TAG = "__ndarray__"
#: Largest result :func:`decode` reads: all of its archive's records together.
MAX_DECODED_BYTES = 512 << 20
#: Most archive records (one per tensor, plus a few of torch's own).
MAX_RECORDS = 10_000
#: Most containers, scalars and tensors in one result, and the deepest nesting.
MAX_NODES, MAX_DEPTH = 1_000_000, 64
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


def _check_tensor(tensor: torch.Tensor) -> None:
    """A tensor as :func:`encode` makes one: a dense strided CPU tensor that owns exactly its
    storage (no zero or overlapping strides that a later copy would blow up)."""
    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        raise TransportError("a tensor that is not a dense CPU tensor")
    if tensor.storage_offset() != 0:
        raise TransportError("a tensor that is a view into a larger storage")
    expected = tensor.numel() * tensor.element_size()
    if tensor.untyped_storage().nbytes() != expected:
        raise TransportError("a tensor whose storage does not match its shape")
    # Dense and non-overlapping: sorted by stride, each stride is the product of the sizes of
    # the dimensions before it (a zero or repeated stride would alias elements).
    dims = sorted(
        (stride, size)
        for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
        if size != 1
    )
    step = 1
    for stride, size in dims:
        if size == 0:
            return
        if stride != step:
            raise TransportError("a tensor with zero or overlapping strides")
        step *= size


def _restore(value: Any, budget: list[int] | None = None, depth: int = 0) -> Any:
    """Arrays back from their tags; every node counted, so a result that reuses one object
    many times (``x = [x, x]`` a hundred times over) cannot expand without bound."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise TransportError("a result with too many or too deeply nested values")
    if isinstance(value, torch.Tensor):
        _check_tensor(value)
        return value
    if isinstance(value, tuple):
        if (
            len(value) == 2
            and value[0] == _ARRAY_TAG
            and isinstance(value[1], torch.Tensor)
        ):
            _check_tensor(value[1])
            return value[1].numpy()
        return tuple(_restore(v, budget, depth + 1) for v in value)
    if isinstance(value, list):
        return [_restore(v, budget, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v, budget, depth + 1) for k, v in value.items()}
    return value


def check_archive(payload: bytes, limit: int = MAX_DECODED_BYTES) -> None:
    """Refuse an archive a well-behaved worker would not send, before anything is inflated.

    :func:`encode` writes ``torch.save``'s zip with stored (uncompressed) records, so every
    record's size is at most the payload's. A deflate-compressed record may inflate a thousand
    times over (a few MB become GBs), so only stored records are read, their total is capped
    at ``limit`` bytes, and so is their number.

    Raises:
        TransportError: the payload is not such an archive.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise TransportError(
            f"the result could not be read back: {type(error).__name__}"
        ) from None
    if len(records) > MAX_RECORDS:
        raise TransportError("the result has too many records")
    total = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise TransportError("the result holds compressed records")
        if record.file_size != record.compress_size:
            raise TransportError("the result's records announce inconsistent sizes")
        total += record.file_size
    if total > limit or total > len(payload):
        raise TransportError(
            f"the result is larger than {limit >> 20} MB once read back"
        )


def encode(value: Any) -> bytes:
    """Serialise a probe's result (tensors, arrays, numbers, strings, containers)."""
    buffer = io.BytesIO()
    torch.save(_plain(value, "the result"), buffer)
    return buffer.getvalue()


def decode(payload: bytes, limit: int = MAX_DECODED_BYTES) -> Any:
    """Inverse of :func:`encode`, safe on untrusted bytes.

    The archive is checked first (:func:`check_archive`: stored records only, at most
    ``limit`` bytes), then loaded with ``weights_only`` (no arbitrary objects), then every
    tensor must own exactly its storage with dense strides and the whole value must have at
    most :data:`MAX_NODES` nodes: what the judge holds is bounded by about ``limit`` bytes
    plus the payload, whatever the worker sends.

    Raises:
        TransportError: a malformed or hostile payload.
    """
    check_archive(payload, limit)
    try:
        loaded = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # malformed or hostile payload
        raise TransportError(
            f"the result could not be read back: {type(error).__name__}"
        ) from error
    try:
        return _restore(loaded)
    except RecursionError:
        raise TransportError("a result nested too deeply") from None


class _GuardedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_FORBIDDEN_PREFIXES):
            raise TransportError(
                f"{module}.{name} may not be sent to student code: probes and the callables "
                "they take must live in public modules (autograder.probes, autograder.checks, "
                "autograder.problems, course_lib helpers)"
            )
        return super().find_class(module, name)


#: Dtypes whose tensors travel as raw bytes in a probe call (every dtype a check sends).
_RAW_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
    )
}


def _raw_tensor(
    dtype: str, shape: tuple[int, ...], data: bytes, requires_grad: bool
) -> torch.Tensor:
    """A tensor back from :class:`_ArgsPickler`'s raw form (a fresh, contiguous copy)."""
    kind = _RAW_DTYPES[dtype]
    if data:
        # A bytearray: torch.frombuffer warns (on stderr) about read-only buffers.
        flat = torch.frombuffer(bytearray(data), dtype=kind)
    else:
        flat = torch.empty(0, dtype=kind)
    tensor = flat.reshape(shape)
    return tensor.requires_grad_() if requires_grad else tensor


class _ArgsPickler(pickle.Pickler):
    """Pickles plain CPU tensors as dtype, shape and raw bytes.

    torch's own tensor pickling goes through its storage serialiser (about 0.1 ms per small
    tensor on each side, a third of a probe call's transport cost). The raw form keeps what a
    probe can observe of an argument: values, dtype, shape, ``requires_grad``; the tensor
    arrives contiguous and owning its memory, as a copy (so, as before, no view shares memory
    with the judge's tensor). Anything else (a subclass such as ``nn.Parameter``, attributes
    set on the tensor, hooks, sparse or quantized tensors) is pickled by torch as before.
    """

    def reducer_override(self, obj: Any) -> Any:
        if (
            type(obj) is not torch.Tensor
            or obj.layout != torch.strided
            or obj.device.type != "cpu"
            or obj.is_quantized
            or str(obj.dtype).removeprefix("torch.") not in _RAW_DTYPES
            or vars(obj)
            or obj._backward_hooks
        ):
            return NotImplemented
        plain = obj.detach().resolve_conj().resolve_neg().contiguous()
        data = plain.reshape(-1).view(torch.uint8).numpy().tobytes()
        return _raw_tensor, (
            str(obj.dtype).removeprefix("torch."),
            tuple(obj.shape),
            data,
            obj.requires_grad,
        )


def pickle_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a probe call (judge -> student side). The judge is trusted; this only copies."""
    buffer = io.BytesIO()
    _ArgsPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((args, kwargs))
    return buffer.getvalue()


def unpickle_args(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle a probe call, refusing anything from hidden or reference modules."""
    args, kwargs = _GuardedUnpickler(io.BytesIO(payload)).load()
    return args, kwargs
