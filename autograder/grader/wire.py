"""The wire protocol between the judge and a sandboxed worker.

Each message is a fixed prefix (magic, header length, payload length), a JSON header and an
optional binary payload. The header's ``op`` names the message: the judge sends ``init``,
``call`` and, after each property, ``audit``; the worker answers ``hello``, ``cell``,
``cell_done``, ``ready``, ``result``, ``error``, ``grader_error`` or ``audited`` (what was
tampered with), and may interject ``forbidden`` or ``refused`` (what its
sandbox refused) at any time. While a probe runs, the worker may ask for a held-correct
helper's value (``helper``, :class:`autograder.probes.Held`); the judge answers
``helper_result``, ``helper_error`` or ``helper_refused`` before the call's reply. The judge trusts nothing that comes back: the header is
size-capped and must pass :func:`well_formed`; a payload is decoded by
:func:`autograder.transport.decode` (JSON and raw tensor bytes, never a pickle).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Literal, get_args

from autograder.subject import STUDENT_ERROR_KINDS

__all__ = [
    "ERROR_KINDS",
    "HEADER_LIMIT",
    "OPS",
    "Op",
    "PREFIX_SIZE",
    "SandboxOp",
    "ProtocolError",
    "pack",
    "read_exact",
    "receive",
    "send",
    "unpack_header",
    "well_formed",
]

#: A message's kind, its header's ``op`` (the module docstring says who sends which).
Op = Literal[
    # the judge
    "init",
    "call",
    "audit",
    "helper_result",
    "helper_error",
    "helper_refused",
    # the worker
    "hello",
    "cell",
    "cell_done",
    "ready",
    "result",
    "error",
    "grader_error",
    "audited",
    "helper",
    # the worker's sandbox, at any time
    "forbidden",
    "refused",
]
#: Every :data:`Op`.
OPS: frozenset[str] = frozenset(get_args(Op))
#: What the worker's sandbox reports (:func:`autograder.grader.sandbox.install_audit_hook`):
#: *forbidden*, an attempt on the secrets or the judge; *refused*, a resource not offered.
SandboxOp = Literal["forbidden", "refused"]

MAGIC = b"AGW1"
_PREFIX = struct.Struct(">4sIQ")  # magic, header length, payload length
#: Largest JSON header either side accepts.
HEADER_LIMIT = 1 << 20


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One message: a JSON header and an optional binary payload, length-prefixed.

    Raises:
        ValueError: the header's ``op`` is not an :data:`Op` (a sender's typo would
            otherwise surface as the other side's "unexpected message").
    """
    if header.get("op") not in OPS:
        raise ValueError(f"unknown message op {header.get('op')!r}: not a wire.Op")
    head = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, len(head), len(payload)) + head + payload


def unpack_header(prefix: bytes) -> tuple[int, int]:
    """Lengths of the header and payload announced by a message prefix."""
    magic, head_len, payload_len = _PREFIX.unpack(prefix)
    if magic != MAGIC or head_len > HEADER_LIMIT:
        raise ProtocolError("malformed message prefix")
    return head_len, payload_len


PREFIX_SIZE = _PREFIX.size


def send(fd: int, header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one whole message to ``fd`` (blocking)."""
    view = memoryview(pack(header, payload))
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes:
    """Exactly ``size`` bytes from ``fd`` (blocking); EOFError if the other side closed."""
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("the judge closed the channel")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive(fd: int) -> tuple[dict[str, Any], bytes]:
    """Read one whole message from ``fd`` (blocking): its header and payload."""
    head_len, payload_len = unpack_header(read_exact(fd, PREFIX_SIZE))
    header = json.loads(read_exact(fd, head_len))
    return header, read_exact(fd, payload_len)


#: The ``kind`` of an ``error`` reply: a :class:`autograder.subject.StudentError`'s kind
#: (one list, :data:`autograder.subject.STUDENT_ERROR_KINDS`); the judge reads any other as
#: ``raised``.
ERROR_KINDS = STUDENT_ERROR_KINDS

#: Header fields whose type the judge relies on; every other field must be a scalar.
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "op": (str,),
    "cell": (int,),
    "pid": (int,),
    "error": (str, type(None)),
    "level": (str, type(None)),
    "kind": (str,),
    "summary": (str,),
    "flag": (str,),
    "what": (str,),
    "seconds": (int, float),
}


def well_formed(header: Any) -> bool:
    """Whether a worker's header has the shape a well-behaved worker sends: a flat object of
    scalars (``tampered`` a list of strings), the known fields of the right type."""
    if not isinstance(header, dict) or len(header) > 32:
        return False
    for key, value in header.items():
        if key == "tampered":
            if not (
                isinstance(value, list)
                and len(value) <= 1000
                and all(isinstance(v, str) for v in value)
            ):
                return False
            continue
        if isinstance(value, bool) and key in ("cell", "pid", "seconds"):
            return False
        allowed = _HEADER_TYPES.get(key, (str, int, float, bool, type(None)))
        if not isinstance(value, allowed):
            return False
    return True
