"""What a worker sends cannot hurt the judge (issue 19): its memory is bounded whatever a result
claims (item 3), and a result it cannot read is the student's zero with a flag, never a grader
error (item 4). Units: forged payloads go straight to the decoder or to a judge-side subject
whose session hands them back as the worker's reply.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autograder import probes, transport
from autograder.core import run_property
from autograder.grader.remote import RemoteSubject
from autograder.tasks import load_plugins, properties
from tests.test_grader import builders as b


def _forged(skeleton: Any, blob: bytes = b"") -> bytes:
    head = json.dumps(skeleton).encode()
    return transport.MAGIC + len(head).to_bytes(8, "big") + head + blob


# --------------------------------------------------------------------------- item 3


def test_tensors_must_tile_the_blob_exactly() -> None:
    """safetensors' rule: in the skeleton's order, each tensor starts where the last ended and
    the last ends where the blob does; nothing shared, skipped or left over."""
    mib = 1 << 20
    refused = {
        "192 entries over the same bytes": _forged(
            ["L"] + [["t", "uint8", [mib], 0, mib]] * 192, bytes(mib)
        ),
        "two tensors overlapping by half": _forged(
            ["L", ["t", "uint8", [8], 0, 8], ["t", "uint8", [8], 4, 8]], bytes(12)
        ),
        "a gap between tensors": _forged(
            ["L", ["t", "uint8", [4], 0, 4], ["t", "uint8", [4], 8, 4]], bytes(12)
        ),
        "out of order": _forged(
            ["L", ["t", "uint8", [4], 4, 4], ["t", "uint8", [4], 0, 4]], bytes(8)
        ),
        "bytes no tensor owns": _forged(["t", "uint8", [4], 0, 4], bytes(4 + mib)),
        "a blob and no tensor": _forged(["L", 1, 2], bytes(16)),
    }
    for what, payload in refused.items():
        with pytest.raises(transport.TransportError):
            transport.decode(payload)
        print(f"refused: {what}")
    # Honest results of every shape still cross: empty tensors, arrays, nesting, no tensor.
    value = {
        "a": torch.arange(6.0).reshape(2, 3).t(),
        "b": [np.zeros((0, 3)), torch.empty(0), (np.arange(5), 2.5j)],
        "c": None,
    }
    back = transport.decode(transport.encode(value))
    assert torch.equal(back["a"], value["a"])
    assert back["b"][0].shape == (0, 3) and back["b"][1].numel() == 0
    assert np.array_equal(back["b"][2][0], np.arange(5)) and back["b"][2][1] == 2.5j
    assert transport.decode(transport.encode([1, "x"])) == [1, "x"]


@pytest.mark.slow
def test_the_judge_peak_stays_at_the_payload_size(tmp_path: Path) -> None:
    """The forgery of issue 19: 192 entries over one 16 MiB blob made a judge peak at 3.3 GB
    (about 1e6 x 512 MB at the format's limits). Decoding it in a fresh judge-like process
    must refuse it, the peak growing by at most the blob once (16 MiB) plus slack."""
    n, mib = 192, 16
    head = json.dumps(["L"] + [["t", "uint8", [mib << 20], 0, mib << 20]] * n).encode()
    payload = transport.MAGIC + len(head).to_bytes(8, "big") + head + bytes(mib << 20)
    verdict, grew = b.decode_in_a_fresh_judge(payload, tmp_path)
    print(f"192 x 16 MiB over one 16 MiB blob: {verdict}, grew {grew} MB")
    assert verdict.startswith("refused:"), verdict
    assert grew < 64, grew  # 16 MiB of payload; 3 GB before the fix


_OUT_OF_MEMORY = """import numpy as np, resource, torch
from autograder.core import Property, run_property
from autograder.grader import judge, sandbox
cap = judge.limit_judge_memory(sandbox.Limits(memory_mb=0, result_mb=0), work_mb=256)
assert resource.getrlimit(resource.RLIMIT_DATA)[0] == cap << 20
def numpy_hog(subject):
    np.ones(1 << 28)  # 2 GiB, past the cap
def torch_hog(subject):
    torch.ones(1 << 28, dtype=torch.float64)
for fn in (numpy_hog, torch_hog):
    flags = []
    result = run_property(judge._within_memory(Property("t", "p", 1.0, "hidden", fn), flags), None)
    print(result.score, sorted(set(result.flags) | set(flags)), result.feedback)
"""


@pytest.mark.slow
def test_a_judge_out_of_memory_is_a_flagged_zero() -> None:
    """The backstop: a judge's data segment is capped (RLIMIT_DATA); a check that outgrows the
    cap scores zero with the ``memory`` flag, not ``grader_error``."""
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_MEMORY],
        cwd=b.ROOT,
        env=b.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        assert line.startswith("0.0 ['memory']"), line
        assert "memory limit" in line and "tell your instructor" not in line


def test_every_judge_caps_its_memory() -> None:
    from autograder.grader import judge, pool

    source = "".join(Path(pool.__file__).read_text().split())  # without whitespace
    assert "initargs=(config.plugins,config.limits," in source
    assert (
        "limit_judge_memory("
        in Path(judge.__file__)
        .read_text()
        .split("def judge_init", 1)[1]
        .split("\ndef ", 1)[0]
    )


# --------------------------------------------------------------------------- item 4


class _Session:
    """A judge-side session whose worker replies with ``payload`` to every probe call."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.poisoned: dict[str, Any] = {}
        self.deadline = float("inf")

    def begin_task(self, task: str | None) -> None:
        pass

    def call(self, *_: Any) -> tuple[dict[str, Any], bytes]:
        return {"op": "result", "seq": 1}, self.payload


def _value(size: int = 4) -> np.ndarray:
    return np.arange(size, dtype=np.float64) * 0.5 + 1


#: What a tampered worker sent for ``invoke_probe`` (honest: {"value", "mutated", ...}).
MALFORMED = {
    "a list instead of the dict": ["L", ["a", "float64", [4], 0, 32], ["L"], ["L"]],
    "a dict without its value": ["D", "mutated", ["L"], "grad_left", ["L"]],
    "positions that are text": [
        "D",
        "value",
        ["a", "float64", [4], 0, 32],
        "mutated",
        "everything",
        "grad_left",
        ["L"],
        "flag_changed",
        ["L"],
    ],
    "a string": "12/12",
    "not our format": None,
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_an_unreadable_result_is_the_students_zero(what: str) -> None:
    load_plugins(b.PLUGINS)
    skeleton = MALFORMED[what]
    if skeleton is None:
        payload = b"PK\x03\x04" + bytes(64)
    else:
        blob = _value().tobytes() if "float64" in json.dumps(skeleton) else b""
        payload = _forged(skeleton, blob)
    subject = RemoteSubject(_Session(payload))  # type: ignore[arg-type]
    for prop in properties("add_one"):
        subject.begin(prop)
        result = run_property(prop, subject)
        flags = set(result.flags) | set(subject.flags)
        assert result.score == 0, (what, result)
        assert "grader_error" not in flags, (what, result.feedback)
        assert "malformed_result" in flags, (what, flags)
        assert "tell your instructor" not in result.feedback
        assert "cannot read" in result.feedback, result.feedback


def test_an_honest_result_still_reads() -> None:
    load_plugins(b.PLUGINS)
    honest = probes.invoke_probe(
        type("S", (), {"add_one": staticmethod(lambda x: x + 1)})(),
        "add_one",
        _value() - 1,
    )  # type: ignore[arg-type]
    subject = RemoteSubject(_Session(transport.encode(honest)))  # type: ignore[arg-type]
    public = [p for p in properties("add_one") if p.tier == "public"]
    subject.begin(public[0])
    out = subject.call(probes.invoke_probe, "add_one", _value() - 1)
    assert np.array_equal(out["value"], _value()) and not subject.flags


def test_conformance_reads_the_probes_types() -> None:
    check = transport.conforms
    assert (
        check(
            {"value": 1, "mutated": [], "grad_left": [], "flag_changed": []},
            probes.Invoked,
        )
        is None
    )
    assert check([1], probes.Invoked)
    assert check({"value": 1}, probes.Invoked)  # required keys missing
    assert check({"value": torch.ones(1), "grads": [np.ones(1)]}, probes.VJP)
    assert check(3, float) is None and check(True, float)
    assert check((1, 2.0), tuple[int, float]) is None and check((1,), tuple[int, float])
    assert check(None, list[int] | None) is None and check(["x"], list[int] | None)
    assert check({"a": 1}, dict[str, Any]) is None
