"""Moving values between the judge and the student's code without trusting the student.

Everything a probe returns goes through :func:`encode` and :func:`decode`: tensors are
detached, copied to the CPU, stripped of subclasses and made contiguous, and travel as raw
bytes next to a JSON skeleton of the containers around them; :func:`decode` reads only JSON
and lengths (no pickle, no archive), so a hostile worker can make it refuse, never run code
or expand a payload. Probe calls go the other way (judge -> student, trusted) as a pickle
whose unpickler refuses hidden and reference modules. The same round trips run in a
notebook and in the sandboxed CI worker, so both give the checks identical values.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import struct
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from autograder.secrets import is_secret

__all__ = [
    "TransportError",
    "conforms",
    "decode",
    "encode",
    "pickle_args",
    "result_problem",
    "unpickle_args",
]

#: Largest result :func:`decode` reads: all of its tensors' bytes together.
MAX_DECODED_BYTES = 512 << 20
#: Most containers, scalars and tensors in one result, and the deepest nesting.
MAX_NODES, MAX_DEPTH = 1_000_000, 64

#: First bytes of every encoded result, then the skeleton's length (8 bytes, big-endian).
MAGIC = b"AGR2"
_LENGTH = struct.Struct(">Q")


class TransportError(TypeError):
    """A value that cannot cross the boundary (an unsupported type)."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


#: Dtypes a tensor may have on either side of the boundary (every dtype a check uses).
_RAW_DTYPES = {
    _dtype_name(dtype): dtype
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


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The values of a CPU tensor, contiguous, as raw bytes."""
    plain = tensor.detach().resolve_conj().resolve_neg().contiguous()
    return plain.reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_bytes(
    dtype: torch.dtype, shape: Sequence[int], data: bytes | memoryview
) -> torch.Tensor:
    """Inverse of :func:`_tensor_bytes`: a fresh tensor that owns a copy of ``data``."""
    if not len(data):
        return torch.empty(tuple(shape), dtype=dtype)
    # A bytearray copy: torch.frombuffer warns (on stderr) about read-only buffers.
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(tuple(shape))


class _Encoder:
    """Turns a probe's result into a JSON skeleton plus one blob of tensor bytes.

    Scalars (None, bool, int, float, str) are JSON values; everything else is a list whose
    first item says what it is: ``["L", ...]`` a list, ``["T", ...]`` a tuple,
    ``["D", key, value, ...]`` a dict with string keys, ``["C", re, im]`` a complex number,
    ``["t" | "a", dtype, shape, offset, nbytes]`` a tensor or a numpy array whose values are
    ``nbytes`` bytes of the blob from ``offset``.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def _tensor(self, tag: str, tensor: torch.Tensor, path: str) -> list[Any]:
        name = _dtype_name(tensor.dtype)
        if name not in _RAW_DTYPES:
            raise TransportError(
                f"{path} is a tensor of dtype {tensor.dtype}, which cannot be checked"
            )
        data = _tensor_bytes(tensor)
        self.chunks.append(data)
        self.size += len(data)
        return [tag, name, list(tensor.shape), self.size - len(data), len(data)]

    def skeleton(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, complex):
            return ["C", value.real, value.imag]
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                value = value.to_dense()
            return self._tensor("t", value.detach().to("cpu"), path)
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TransportError(
                    f"{path} is an array of Python objects, not numbers"
                )
            try:
                tensor = torch.from_numpy(np.ascontiguousarray(value))
            except TypeError:
                raise TransportError(
                    f"{path} is an array of {value.dtype}, not numbers"
                ) from None
            return self._tensor("a", tensor, path)
        if isinstance(value, np.generic):
            return self.skeleton(value.item(), path)
        if isinstance(value, (tuple, list)):
            items = [self.skeleton(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return ["T" if isinstance(value, tuple) else "L", *items]
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TransportError(f"{path} is a dict with non-string keys")
            out: list[Any] = ["D"]
            for k, v in value.items():
                out += [k, self.skeleton(v, f"{path}[{k!r}]")]
            return out
        raise TransportError(
            f"{path} is a {type(value).__name__}, which cannot be checked"
        )


def encode(value: Any) -> bytes:
    """Serialise a probe's result (tensors, arrays, numbers, strings, containers).

    No pickle and no archive: a JSON skeleton and the tensors' raw bytes (see
    :class:`_Encoder`), so :func:`decode` needs to trust nothing but JSON and lengths.
    Tensors are detached, moved to the CPU, stripped of subclasses and made contiguous.

    Raises:
        TransportError: a value of a type that cannot be checked.
    """
    encoder = _Encoder()
    try:
        skeleton = json.dumps(
            encoder.skeleton(value, "the result"), separators=(",", ":")
        )
    except RecursionError:
        raise TransportError("the result is nested too deeply") from None
    head = skeleton.encode()
    return b"".join((MAGIC, _LENGTH.pack(len(head)), head, *encoder.chunks))


class _Decoder:
    """Builds values back from a skeleton, checking every node against the blob."""

    def __init__(self, blob: memoryview) -> None:
        self.blob = blob
        self.nodes = MAX_NODES
        #: Where the next tensor's bytes must start: the blob is read once, front to back.
        self.cursor = 0

    def _tensor(self, node: list[Any]) -> torch.Tensor:
        if len(node) != 5:
            raise TransportError("a malformed tensor")
        _, name, shape, offset, nbytes = node
        dtype = _RAW_DTYPES.get(name) if isinstance(name, str) else None
        if (
            dtype is None
            or not isinstance(shape, list)
            or len(shape) > MAX_DEPTH
            or not all(type(n) is int and n >= 0 for n in shape)
            or type(offset) is not int
            or type(nbytes) is not int
            or nbytes < 0
            or offset + nbytes > len(self.blob)
        ):
            raise TransportError("a malformed tensor")
        if offset != self.cursor:
            # safetensors' rule: tensors tile the blob in order, with no gap and no overlap,
            # so the judge builds at most the blob's bytes however many tensors point at them.
            raise TransportError(
                "a tensor whose bytes overlap another's or leave a gap in the result"
            )
        numel = 1
        for n in shape:
            numel *= n
        if numel * dtype.itemsize != nbytes:
            raise TransportError("a tensor whose storage does not match its shape")
        self.cursor += nbytes
        return _from_bytes(dtype, shape, self.blob[offset : offset + nbytes])

    def value(self, node: Any, depth: int = 0) -> Any:
        self.nodes -= 1
        if self.nodes < 0 or depth > MAX_DEPTH:
            raise TransportError("a result with too many or too deeply nested values")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            raise TransportError("a malformed result")
        tag, items = node[0], node[1:]
        if tag == "L":
            return [self.value(v, depth + 1) for v in items]
        if tag == "T":
            return tuple(self.value(v, depth + 1) for v in items)
        if tag == "D":
            keys, values = items[0::2], items[1::2]
            if len(keys) != len(values) or not all(isinstance(k, str) for k in keys):
                raise TransportError("a malformed result")
            return {
                k: self.value(v, depth + 1) for k, v in zip(keys, values, strict=True)
            }
        if (
            tag == "C"
            and len(items) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
            )
        ):
            return complex(items[0], items[1])
        if tag == "t":
            return self._tensor(node)
        if tag == "a":
            return self._tensor(node).numpy()
        raise TransportError("a malformed result")


def decode(payload: bytes, limit: int = MAX_DECODED_BYTES) -> Any:
    """Inverse of :func:`encode`, safe on untrusted bytes.

    Only JSON and lengths are read: the skeleton must lie inside the payload, the tensors'
    bytes must tile the blob exactly (in the skeleton's order, contiguous, no overlap, no gap:
    safetensors' rule) and each match its dtype and shape, the blob be at most ``limit``
    bytes, and the value have at most :data:`MAX_NODES` nodes nested at most
    :data:`MAX_DEPTH` deep. Nothing refers back to anything else, so the tensors the judge
    builds hold exactly the blob's bytes: no payload can expand.

    Raises:
        TransportError: a malformed or hostile payload.
    """
    view = memoryview(payload)
    start = len(MAGIC) + _LENGTH.size
    if len(view) < start or bytes(view[: len(MAGIC)]) != MAGIC:
        raise TransportError("the result could not be read back: not an encoded result")
    (head_len,) = _LENGTH.unpack(view[len(MAGIC) : start])
    if head_len > len(view) - start:
        raise TransportError("the result could not be read back: it is truncated")
    blob = view[start + head_len :]
    if len(blob) > limit:
        raise TransportError(
            f"the result is larger than {limit >> 20} MB once read back"
        )
    try:
        skeleton = json.loads(bytes(view[start : start + head_len]))
        decoder = _Decoder(blob)
        value = decoder.value(skeleton)
        if decoder.cursor != len(blob):
            raise TransportError("a result with bytes that belong to no tensor")
        return value
    except RecursionError:
        raise TransportError("a result nested too deeply") from None
    except ValueError as error:  # bad JSON (UnicodeDecodeError is one), a huge integer
        raise TransportError(
            f"the result could not be read back: {type(error).__name__}"
        ) from None


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def conforms(value: Any, annotation: Any, path: str = "the result") -> str | None:
    """Why ``value`` does not have the type ``annotation`` (None when it does), deeply.

    Knows what probes return: ``Any``, ``None``, unions, ``TypedDict`` (a dict with the
    required keys, each key it has of its declared type), ``list[X]``, ``tuple[X, ...]``,
    ``tuple[X, Y]``, ``dict[K, V]``, ``Literal``, and classes (a ``float`` may be an ``int``,
    a ``complex`` any number). An annotation it cannot read accepts everything.
    """
    if annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else f"{path} is a {_kind(value)}, not None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        problems = [conforms(value, arm, path) for arm in args]
        return None if None in problems else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"{path} is {value!r}, not one of {args}"
    if typing.is_typeddict(annotation):
        if not isinstance(value, dict):
            return f"{path} is a {_kind(value)}, not a dict"
        fields = _type_hints(annotation)
        if fields is None:  # an annotation the judge cannot resolve checks nothing
            return None
        for key in sorted(annotation.__required_keys__ - set(value)):
            return f"{path} has no {key!r}"
        for key, item in value.items():
            if key in fields:
                problem = conforms(item, fields[key], f"{path}[{key!r}]")
                if problem:
                    return problem
        return None
    container: Any = origin or annotation
    if container in (list, tuple, dict) or origin is not None:
        if not isinstance(container, type) or not isinstance(value, container):
            name = getattr(container, "__name__", str(container))
            return f"{path} is a {_kind(value)}, not a {name}"
        value = typing.cast(Any, value)
        if container is dict and len(args) == 2:
            for key, item in value.items():
                problem = conforms(key, args[0], f"{path} key") or conforms(
                    item, args[1], f"{path}[{key!r}]"
                )
                if problem:
                    return problem
        elif container is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return f"{path} has {len(value)} items, not {len(args)}"
            for index, (item, arm) in enumerate(zip(value, args)):
                problem = conforms(item, arm, f"{path}[{index}]")
                if problem:
                    return problem
        elif container in (list, tuple) and args:
            for index, item in enumerate(value):
                problem = conforms(item, args[0], f"{path}[{index}]")
                if problem:
                    return problem
        return None
    if not isinstance(annotation, type):
        return None
    allowed: tuple[type, ...] = (annotation,)
    if annotation is float:
        allowed = (float, int)
    elif annotation is complex:
        allowed = (complex, float, int)
    if isinstance(value, allowed) and not (
        isinstance(value, bool) and annotation in (float, complex)
    ):
        return None
    return f"{path} is a {_kind(value)}, not a {annotation.__name__}"


@functools.cache
def _type_hints(target: Any) -> dict[str, Any] | None:
    """``target``'s resolved annotations (a probe's, a ``TypedDict``'s fields), once per
    object (resolving them is about 0.3 ms); None where the judge cannot resolve them."""
    try:
        return typing.get_type_hints(target)
    except Exception:
        return None


def _return_annotation(probe: Callable[..., Any]) -> Any:
    hints = _type_hints(probe)
    return Any if hints is None else hints.get("return", Any)


def result_problem(probe: Callable[..., Any], value: Any) -> str | None:
    """Why a decoded result is not what ``probe`` returns (its return annotation), or None.

    The judge reads a result only through the probe's declared type: anything else (a list
    where the probe returns a dict, a string where it reports positions) came from a worker
    that was tampered with, and is the submission's doing, never a grader error.
    """
    return conforms(value, _return_annotation(probe))


class _GuardedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if is_secret(module) or module == "__main__":
            raise TransportError(
                f"{module}.{name} may not be sent to student code: probes and the callables "
                "they take must live in public modules (autograder.probes, autograder.checks, "
                "course_lib helpers)"
            )
        return super().find_class(module, name)


def _raw_tensor(
    dtype: str, shape: tuple[int, ...], data: bytes, requires_grad: bool
) -> torch.Tensor:
    """A tensor back from :class:`_ArgsPickler`'s raw form (a fresh, contiguous copy)."""
    tensor = _from_bytes(_RAW_DTYPES[dtype], shape, data)
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
            or _dtype_name(obj.dtype) not in _RAW_DTYPES
            or vars(obj)
            or obj._backward_hooks
        ):
            return NotImplemented
        return _raw_tensor, (
            _dtype_name(obj.dtype),
            tuple(obj.shape),
            _tensor_bytes(obj),
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
