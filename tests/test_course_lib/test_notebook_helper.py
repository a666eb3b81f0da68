"""``course_lib.notebook.skip_unimplemented`` forgives nbgrader's stub and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from course_lib.notebook import skip_unimplemented

ROOT = Path(__file__).resolve().parents[2]
LINE = "run after you implement {}: it raises NotImplementedError\n"


def released_stub(assignment: str, grade_id: str) -> dict[str, Any]:
    """Exec the release's solution cell (nbgrader's real stub) and return its namespace."""
    notebook = ROOT / "assignments" / assignment / f"{assignment}.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    (source,) = [
        "".join(cell["source"])
        for cell in cells
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id
        and cell["metadata"]["nbgrader"].get("solution")
    ]
    assert "raise NotImplementedError()" in source
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{grade_id} cell>", "exec"), namespace)
    return namespace


def test_the_released_stub_prints_one_line_and_stops_the_block(
    capsys: pytest.CaptureFixture[str],
) -> None:
    e_step = released_stub("01_em", "e_step")["e_step"]
    after = []
    with skip_unimplemented(e_step) as guard:
        e_step(None, None, None, None)
        after.append("ran")  # never reached: the block stops at the stub
    assert after == []
    assert guard.skipped == "e_step"
    captured = capsys.readouterr()
    assert captured.out == LINE.format("e_step")
    assert captured.err == ""


def stub(x: Any) -> Any:
    raise NotImplementedError()


def finished(x: Any) -> Any:
    return x["missing key"]  # a real bug of a finished implementation


def deeper(x: Any) -> Any:
    return helper_not_named(x)


def helper_not_named(x: Any) -> Any:
    raise NotImplementedError()


def with_message(x: Any) -> Any:
    raise NotImplementedError("complex inputs are not supported")


def test_a_finished_implementation_shows_its_traceback() -> None:
    with pytest.raises(KeyError), skip_unimplemented(finished):
        finished({})


def test_a_not_implemented_error_from_deeper_down_is_not_forgiven() -> None:
    # the student's function ran; the error came from code it called
    with pytest.raises(NotImplementedError), skip_unimplemented(deeper):
        deeper(1)


class NoForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)


def test_torchs_own_not_implemented_error_is_not_forgiven() -> None:
    # nn.Module raises NotImplementedError for a missing forward, from torch's own code
    with (
        pytest.raises(NotImplementedError, match="forward"),
        skip_unimplemented(NoForward),
    ):
        NoForward()(torch.zeros(1, 2))


def test_a_not_implemented_error_with_a_message_is_not_the_stub() -> None:
    with (
        pytest.raises(NotImplementedError, match="complex"),
        skip_unimplemented(with_message),
    ):
        with_message(1)


def test_only_the_named_functions_are_forgiven() -> None:
    with pytest.raises(NotImplementedError), skip_unimplemented(finished):
        stub(1)


def test_the_name_printed_is_the_stub_that_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with skip_unimplemented(finished, stub) as guard:
        stub(1)
    assert guard.skipped == "stub"
    assert capsys.readouterr().out == LINE.format("stub")


def test_a_code_block_without_error_runs_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with skip_unimplemented(stub) as guard:
        value = finished({"missing key": 3})
    assert value == 3 and guard.skipped is None
    assert capsys.readouterr().out == ""


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError()


def test_a_class_stub_in_a_method_names_the_class(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with skip_unimplemented(Encoder):
        Encoder()(torch.zeros(1, 2))  # through nn.Module.__call__
    assert capsys.readouterr().out == LINE.format("Encoder")


def test_works_as_a_decorator(capsys: pytest.CaptureFixture[str]) -> None:
    @skip_unimplemented(stub)
    def demo() -> None:
        stub(1)

    demo()
    demo()  # reusable
    assert capsys.readouterr().out == 2 * LINE.format("stub")


def test_it_needs_the_functions_it_forgives() -> None:
    with pytest.raises(TypeError, match="needs the student functions"):
        skip_unimplemented()
    with pytest.raises(TypeError, match="not int"):
        skip_unimplemented(3)  # type: ignore[arg-type]
