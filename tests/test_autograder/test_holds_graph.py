"""probes.holds_graph: every way a returned tensor can keep an autograd graph alive."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

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


@contextlib.contextmanager
def _holding(name: str, model: object = None) -> Iterator[Any]:
    """The stand-in for ``name`` as a task's code sees it while one probe holds it: a task
    whose globals name the helper, rebound by :func:`probes.held_correct`."""
    namespace: dict[str, object] = {name: None}
    exec("def task():\n    pass\n", namespace)
    student = types.SimpleNamespace(task=namespace["task"])
    with probes.held_correct(student, "task", {name: probes.Held(name)}, model=model):
        yield namespace[name]


def _held_and_reference_grads(
    name: str, args: list[torch.Tensor], model: object, cotangent: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of ``cotangent * name(args)`` through the held stand-in and the reference."""
    from course_lib.reference import elbo as reference_elbo
    from course_lib.reference import vae as reference_vae

    reference = {
        "elbo": reference_elbo.elbo,
        "reparameterize": reference_vae.reparameterize,
    }[name]
    model_args = [model] if model is not None else []
    grads = []
    for held in (True, False):
        leaves = [a.detach().clone().requires_grad_(True) for a in args]
        if held:
            with _holding(name, model) as stand_in:
                (cotangent * stand_in(*model_args, *leaves)).sum().backward()
        else:
            (cotangent * reference(*model_args, *leaves)).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    return grads[0], grads[1]


def _quadratic_log_joint(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - 1.5) ** 2).sum(-1)


@pytest.mark.parametrize("cotangent", [1.0, -1.0, 0.37])
def test_a_held_scalar_helper_s_gradient_is_the_reference_s(cotangent: float) -> None:
    """A scalar held helper (``elbo``) answers value and gradient in one request and its
    backward scales them: the reference's gradient, bit for bit for a loss or its negation
    (``fit_bbvi``'s fits), to float64 round-off for any other scale."""
    generator = torch.Generator().manual_seed(0)
    args = [
        torch.randn(3, dtype=torch.float64, generator=generator),
        torch.randn(3, dtype=torch.float64, generator=generator) * 0.3,
        torch.randn(50, 3, dtype=torch.float64, generator=generator),
    ]
    held, reference = _held_and_reference_grads(
        "elbo", args, _quadratic_log_joint, cotangent
    )
    for got, want in zip(held[:2], reference[:2], strict=True):
        if abs(cotangent) == 1.0:
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-13, atol=0)  # one rounding


def test_a_held_vector_helper_s_gradient_asks_for_the_vjp() -> None:
    """A held helper with a vector value (``reparameterize``) keeps the VJP request: its
    backward gets the reference's gradients for a non-uniform incoming gradient."""
    generator = torch.Generator().manual_seed(1)
    args = [torch.randn(4, 2, generator=generator) for _ in range(3)]
    held, reference = _held_and_reference_grads("reparameterize", args, None, 0.37)
    for got, want in zip(held, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_held_scalar_helper_costs_one_request_per_step() -> None:
    """Forward and backward of a held ELBO ask the backend once (in the CI grader each
    request is a round trip to the judge: ``fit_bbvi``'s reparameterised fits make one per
    step, not two)."""
    asked: list[str] = []
    backend = probes._BACKEND[0]

    def counting(name: str, mode: str, *args: object) -> object:
        asked.append(mode)
        return backend(name, mode, *args)  # type: ignore[arg-type]

    mu = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(8, 2, dtype=torch.float64)
    probes.set_held_backend(counting)  # type: ignore[arg-type]
    try:
        with _holding("elbo", _quadratic_log_joint) as elbo:
            (-elbo(_quadratic_log_joint, mu, log_sigma, eps)).backward()
    finally:
        probes.set_held_backend(backend)
    assert asked == ["value_grad"]
    assert mu.grad is not None and log_sigma.grad is not None


@pytest.mark.gpu
def test_seeded_makes_draws_on_the_gpu_reproducible_and_restores_them() -> None:
    """On a GPU grader, student code inside a probe that draws on the device gets the same
    numbers for the same seed (as on the CPU), and the caller's CUDA stream is left as it was."""
    torch.zeros(1, device="cuda")  # CUDA initialised, as in a worker that trained on it
    torch.cuda.manual_seed_all(123)
    expected_next = torch.randn(4, device="cuda")
    torch.cuda.manual_seed_all(123)
    draws = []
    for _ in range(2):
        with probes.seeded(7):
            draws.append(torch.randn(4, device="cuda"))
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(torch.randn(4, device="cuda"), expected_next)
