"""probes.holds_graph: every way a returned tensor can keep an autograd graph alive."""

from __future__ import annotations

import pytest
import torch

from autograder import probes
from autograder.compare import expect_no_graph
from autograder.core import Failure


def _graph() -> torch.Tensor:
    leaf = torch.ones(3, dtype=torch.float64, requires_grad=True)
    return leaf * 2.0


def _no_grad_view() -> torch.Tensor:
    tracked = _graph()
    with torch.no_grad():
        return tracked[:2]


def _attribute() -> torch.Tensor:
    plain = torch.zeros(3)
    plain.kept = _graph()  # type: ignore[attr-defined]
    return plain


def _view_of_attribute_holder() -> torch.Tensor:
    return _attribute()[:2]


@pytest.mark.parametrize(
    "make",
    [
        _graph,
        lambda: torch.zeros(2, requires_grad=True),  # a leaf: requires_grad, no grad_fn
        _no_grad_view,
        _attribute,
        _view_of_attribute_holder,
    ],
    ids=["grad_fn", "leaf", "no_grad_view", "attribute", "view_of_holder"],
)
def test_tensors_that_keep_a_graph_are_found(make) -> None:
    assert probes.holds_graph(make())


@pytest.mark.parametrize(
    "make",
    [
        lambda: _graph().detach(),
        lambda: _graph().detach()[:2],
        lambda: torch.zeros(3),
        lambda: 1.5,
    ],
    ids=["detached", "view_of_detached", "plain", "not_a_tensor"],
)
def test_plain_results_are_not_flagged(make) -> None:
    assert not probes.holds_graph(make())


def test_positions_and_message() -> None:
    assert probes.graph_held([torch.zeros(1), _graph(), _no_grad_view()]) == [1, 2]
    expect_no_graph("task", [], ("a", "b"), inputs="plain tensors")
    with pytest.raises(
        Failure, match=r"task returned b still attached .* plain tensors"
    ):
        expect_no_graph("task", [1], ("a", "b"), inputs="plain tensors")
