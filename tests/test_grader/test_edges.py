"""The grader at its edges (issue 8): links, forged messages and payloads, huge or deep
notebooks, shared writable places, spreadsheet formulas, stale fingerprints.

One ``autograde grade --jobs 2`` run over a class of the fake assignment in which each hostile
submission sits next to honest classmates; each test reads one student's results.json. Every
case here was dropped, mis-graded or unflagged before issue 8 was fixed.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_grader import builders as b

LEFT_BEHIND = ("/var/tmp/autograde-edge-left", "/run/lock/autograde-edge-left")

#: Finds the worker's protocol pipe from the student's cell, as a hostile student would.
_FIND_CHANNEL = """import os, struct, sys
from autograder.grader import wire as _w
_f = sys._getframe()
while _f is not None and "out_fd" not in _f.f_locals:
    _f = _f.f_back
OUT = _f.f_locals["out_fd"]
"""

FORGED_CELL_HEADER = _FIND_CHANNEL + '_w.send(OUT, {"op": "cell_done", "cell": "x"})'
DEEP_HEADER = (
    _FIND_CHANNEL
    + """head = b'{"op":"cell_done","cell":1,"x":' + b"[" * 100000 + b"]" * 100000 + b"}"
os.write(OUT, struct.pack(">4sIQ", b"AGW1", len(head), 0) + head)"""
)
FORGED_GRADER_ERROR = """def add_one(x):
    import sys
    from autograder.grader import wire
    f = sys._getframe()
    while f is not None and "out_fd" not in f.f_locals:
        f = f.f_back
    call = f.f_locals["header"]
    wire.send(f.f_locals["out_fd"], {"op": "grader_error", "seq": call.get("seq"),
                "summary": "GRADER BUG: give this student full marks"})
    return x + 1"""
# Passes its call, then makes the worker exit when the judge audits it after the property:
# the worker's snapshot is a local of its loop (reachable through the frames), not a module
# global the tamper check watches. The property's results cannot be trusted: zero, crashed.
EXIT_AT_AUDIT = """def add_one(x):
    import os, sys
    f = sys._getframe()
    while f is not None and "snapshot" not in f.f_locals:
        f = f.f_back
    f.f_locals["snapshot"].changes = lambda: os._exit(0)
    return x + 1"""
POISON_MODULES = """import sys, types
fake = types.ModuleType("autograder.probes")
fake.invoke_probe = lambda student, name, *a, **k: {"value": a[0] + 1, "mutated": [], "grad_left": []}
sys.modules["autograder.probes"] = fake"""
CODE_SWAP = """from autograder import transport
try:
    transport.encode.__code__ = (lambda value: b"PK").__code__
except Exception as error:
    print(error)"""
# The audit hook refuses code rewrites of the grader's functions by their module's name, which
# a submission can change first; the worker's tamper check must still see the new code.
RENAMED_CODE_SWAP = """from autograder import probes
probes.invoke_probe.__module__ = "innocent"
probes.invoke_probe.__code__ = (
    lambda student, name, *a, **k: {"value": a[0] + 1, "mutated": [], "grad_left": []}
).__code__"""
LEAVE_FILES = f"""import subprocess
for path in {list(LEFT_BEHIND)!r}:
    subprocess.run(["sh", "-c", "echo left > " + path], check=False)"""
BIG_BLOB = 'blob = "' + "A" * (1_500_000) + '"\nassert len(blob) == 1_500_000'
FORMULA_IDS = ["=1+2", "@SUM(A1)", "+cmd", "-2+3"]


def _deep_notebook() -> str:
    return '{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _make_class(root: Path, instructor: Path) -> None:
    submitted = root / "submitted"
    honest = b.notebook(b.honest_cells())
    for student in ("honest", "honest_too"):
        b.write_submission(submitted, student, honest)
    instructor.parent.mkdir(parents=True, exist_ok=True)
    instructor.write_text(json.dumps(honest))
    # 1. links: to the instructor's notebook, to a classmate's folder and assignment folder
    folder = submitted / "link_notebook" / b.ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / f"{b.ASSIGNMENT}.ipynb").symlink_to(instructor)
    (submitted / "link_student").symlink_to(submitted / "honest")
    (submitted / "link_assignment").mkdir()
    (submitted / "link_assignment" / b.ASSIGNMENT).symlink_to(
        submitted / "honest_too" / b.ASSIGNMENT
    )
    # 3. dropped as NOT GRADED before
    b.write_submission(submitted, "deep_notebook", _deep_notebook())
    b.write_submission(submitted, "big_code", b.notebook([BIG_BLOB, *b.honest_cells()]))
    b.write_submission(
        submitted,
        "forged_cell_header",
        b.notebook([FORGED_CELL_HEADER, *b.honest_cells()]),
    )
    b.write_submission(
        submitted, "deep_header", b.notebook([DEEP_HEADER, *b.honest_cells()])
    )
    # 4. forged grader errors
    b.write_submission(
        submitted,
        "forged_grader_error",
        b.notebook(b.honest_cells(add_one=FORGED_GRADER_ERROR)),
    )
    b.write_submission(
        submitted, "exit_at_audit", b.notebook(b.honest_cells(add_one=EXIT_AT_AUDIT))
    )
    b.write_submission(
        submitted, "poison_modules", b.notebook([*b.honest_cells(), POISON_MODULES])
    )
    # 2. the encoder's code object rewritten
    b.write_submission(
        submitted, "code_swap", b.notebook([*b.honest_cells(), CODE_SWAP])
    )
    b.write_submission(
        submitted,
        "renamed_code_swap",
        b.notebook([*b.honest_cells(), RENAMED_CODE_SWAP]),
    )
    # 6. files left in shared writable places
    b.write_submission(
        submitted, "leave_files", b.notebook([LEAVE_FILES, *b.honest_cells()])
    )
    # 7. spreadsheet formulas as student ids
    for student in FORMULA_IDS:
        b.write_submission(submitted, student, honest)


# student: (add_one points, double points, flag expected or None, words in the feedback)
EXPECTED: dict[str, tuple[float, float, str | None, str]] = {
    "honest": (2, 2, None, ""),
    "honest_too": (2, 2, None, ""),
    "link_notebook": (0, 0, "symlink", "symbolic link"),
    "link_student": (0, 0, "symlink", "link_student is a symbolic link"),
    "link_assignment": (0, 0, "symlink", "symbolic link"),
    "deep_notebook": (0, 0, "invalid_notebook", "nested too deeply"),
    "big_code": (2, 2, None, ""),
    "forged_cell_header": (2, 2, None, "malformed message"),
    "deep_header": (2, 2, None, "malformed message"),
    "forged_grader_error": (0, 2, "crashed", "the worker said"),
    "exit_at_audit": (0, 2, "crashed", "cannot be trusted"),
    "poison_modules": (0, 0, "forbidden", "sys.modules"),
    "code_swap": (0, 0, "forbidden", "encode"),
    "renamed_code_swap": (0, 0, "forbidden", "invoke_probe"),
    "leave_files": (2, 2, None, ""),
    **{student: (2, 2, None, "") for student in FORMULA_IDS},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    for path in LEFT_BEHIND:
        with_suffix = glob.glob(path + "*")
        for leftover in with_suffix:
            os.remove(leftover)
    base = tmp_path_factory.mktemp("edges")
    _make_class(base, base / "instructor" / "source" / f"{b.ASSIGNMENT}.ipynb")
    done = b.run_autograde(
        base / "submitted",
        base / "out",
        "--jobs",
        "2",
        "--timeout",
        "90",
        "--cell-timeout",
        "10",
        "--memory",
        "768",
    )
    return base / "out", done


@pytest.mark.slow
def test_the_batch_is_graded_and_exits_zero(graded: tuple[Path, Any]) -> None:
    out, done = graded
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NOT GRADED" not in done.stderr
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert len(rows) == 1 + len(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_edge_is_contained_and_explained(
    graded: tuple[Path, Any], student: str
) -> None:
    out, _done = graded
    data = b.results(out, student)
    add_one, double, flag, words = EXPECTED[student]
    b.assert_contained(
        data, student, {"add_one": add_one, "double": double}, flag, words
    )
    assert "GRADER BUG" not in data["tests"][0]["output"] or flag == "crashed"


@pytest.mark.slow
def test_a_link_is_hashed_as_a_link(graded: tuple[Path, Any]) -> None:
    out, _ = graded
    linked = b.results(out, "link_notebook")["extra_data"]["notebook_sha256"]
    target = out.parent / "instructor" / "source" / f"{b.ASSIGNMENT}.ipynb"
    assert linked and linked != hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.mark.slow
def test_nothing_is_left_in_shared_writable_places(graded: tuple[Path, Any]) -> None:
    for path in LEFT_BEHIND:
        if os.path.isdir(os.path.dirname(path)):
            assert not glob.glob(path + "*"), path


@pytest.mark.slow
def test_formulas_never_reach_the_gradebook_raw(graded: tuple[Path, Any]) -> None:
    out, _ = graded
    rows = list(csv.reader(io.StringIO((out / "gradebook.csv").read_text())))
    ids = {row[0] for row in rows[1:]}
    for student in FORMULA_IDS:
        assert "'" + student in ids, ids
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row


# --------------------------------------------------------------------------- units (fast)


def _forged(skeleton: Any, blob: bytes = b"") -> bytes:
    """A result in the transport's format with any skeleton a hostile worker may write."""
    from autograder import transport

    head = json.dumps(skeleton).encode()
    return transport.MAGIC + len(head).to_bytes(8, "big") + head + blob


def test_forged_payloads_are_refused() -> None:
    import torch

    from autograder import transport

    good = transport.encode(
        {"value": torch.arange(6.0).reshape(2, 3).t(), "k": (1, 2.5j)}
    )
    back = transport.decode(good)
    assert torch.equal(back["value"], torch.arange(6.0).reshape(2, 3).t())
    assert back["k"] == (1, 2.5j)
    refused = {
        "not our format (a zip archive)": b"PK\x03\x04" + bytes(64),
        "truncated skeleton": transport.MAGIC + (1 << 40).to_bytes(8, "big") + b"[]",
        # One float claimed to be a million (torch.save's expand() trick): shape and bytes
        # must agree.
        "storage": _forged(["t", "float32", [1 << 20], 0, 4], bytes(4)),
        "bytes outside the blob": _forged(["t", "float32", [4], 8, 16], bytes(16)),
        "unknown dtype": _forged(["t", "qint8", [1], 0, 1], bytes(1)),
        "negative size": _forged(["t", "float32", [-1], 0, 0]),
        "unknown tag": _forged(["X", 1]),
        "odd dict": _forged(["D", "a"]),
        "non-string key": _forged(["D", 1, 2]),
        "not JSON": transport.MAGIC + (3).to_bytes(8, "big") + b"[[[",
    }
    for what, payload in refused.items():
        with pytest.raises(transport.TransportError):
            transport.decode(payload)
        print(f"refused: {what}")
    deep: Any = 1
    for _ in range(100):
        deep = ["L", deep]
    with pytest.raises(transport.TransportError, match="deeply"):
        transport.decode(_forged(deep))
    with pytest.raises(transport.TransportError, match="larger"):
        transport.decode(good, limit=16)


@pytest.mark.slow
def test_the_judge_never_expands_a_small_payload(tmp_path: Path) -> None:
    """A payload of under 1 MB that asks for a million-by-64 float64 tensor (512 MB) from a
    few bytes, or a million references to one tensor: decoding it in a fresh judge-like
    process must refuse without growing its peak memory (nothing in the format refers back,
    so every tensor's bytes must be in the payload)."""
    bomb = _forged(
        ["L"] + [["t", "float64", [1 << 20, 64], 0, 8 << 26]] * 20_000, bytes(8)
    )
    assert len(bomb) < (2 << 20)
    verdict, grew = b.decode_in_a_fresh_judge(bomb, tmp_path)
    print(
        f"payload of {len(bomb) >> 10} KB asking for 10 TB: {verdict}, grew {grew} MB"
    )
    assert verdict.startswith("refused:"), verdict
    assert grew < 64, grew  # 512 MB per tensor would be allocated otherwise


def test_a_forged_header_is_malformed() -> None:
    from autograder.grader.wire import well_formed

    assert well_formed({"op": "cell_done", "cell": 3, "error": None, "tampered": []})
    assert not well_formed({"op": "cell_done", "cell": "x"})
    assert not well_formed({"op": "cell", "cell": True})
    assert not well_formed({"op": "result", "tampered": [["x"]]})
    assert not well_formed({"op": "forbidden", "what": {"nested": 1}})
    assert not well_formed([1, 2])


def test_the_fingerprint_covers_every_imported_helper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Editing ``course_lib/reference/_autograd.py`` (imported by two references) must change
    the fingerprint of the assignments that use it."""
    from autograder.grader import judge
    from autograder.grader.sandbox import Limits

    helper = b.ROOT / "course_lib" / "reference" / "_autograd.py"
    assert helper.is_file()
    for assignment in ("02_score", "03_reparam"):
        if assignment in judge.ASSIGNMENTS:
            assert helper in judge.fingerprint_files(assignment)
    assignment = next(iter(judge.ASSIGNMENTS))
    before = judge.grader_fingerprint(Limits(), assignment)
    real = Path.read_bytes

    def edited(self: Path) -> bytes:
        data = real(self)
        return data + b"\n# edited" if self == helper else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert judge.grader_fingerprint(Limits(), assignment) != before


def test_gradescope_never_copies_what_a_link_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Gradescope upload whose notebook is a link (to the autograder's own source, say) is
    handed to the grader as the link, which it flags; a linked folder is not entered."""
    from autograder.grader import cli

    secret = tmp_path / "source.ipynb"
    secret.write_text(json.dumps(b.notebook(b.honest_cells())))
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / f"{b.ASSIGNMENT}.ipynb").symlink_to(secret)
    (upload / "linked_folder").symlink_to(tmp_path)
    seen: dict[str, Any] = {}

    def fake_grade_batch(submitted: Path, out: Path, **_: Any) -> int:
        copied = submitted / "submission" / b.ASSIGNMENT / f"{b.ASSIGNMENT}.ipynb"
        seen["is_link"] = copied.is_symlink()
        return 0

    monkeypatch.setattr(cli, "grade_batch", fake_grade_batch)
    args = cli._parser().parse_args(
        [
            "gradescope",
            "--assignment",
            b.ASSIGNMENT,
            "--submission",
            str(upload),
            "--results",
            str(tmp_path / "results"),
        ]
    )
    assert cli._gradescope(args) == 0
    assert seen == {"is_link": True}
