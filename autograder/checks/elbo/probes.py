"""What runs in the student's process for ``04_elbo``: the probes, their outputs, and the
targets handed to student code (``log_joint`` wrappers: module-level classes, so they pickle
into the sandboxed worker). ``fit_bbvi`` runs under :func:`autograder.probes.seeded`."""

from __future__ import annotations

import inspect
from typing import Any, TypedDict

import torch
from torch import Tensor

from autograder import probes
from autograder.subject import Student, StudentError


class ValuesOnly:
    """A black-box ``log_joint``: the values of ``model`` plus ``offset``, with no gradient."""

    def __init__(self, model: Any, offset: float = 0.0) -> None:
        self.model, self.offset = model, float(offset)

    def __call__(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(z.detach()) + self.offset

    def __repr__(self) -> str:
        return f"ValuesOnly({self.model!r})"


class Offset:
    """``model(z) + offset``: the same posterior, a different evidence (differentiable)."""

    def __init__(self, model: Any, offset: float) -> None:
        self.model, self.offset = model, float(offset)

    def __call__(self, z: Tensor) -> Tensor:
        return self.model(z) + self.offset

    def __repr__(self) -> str:
        return f"Offset({self.model!r}, {self.offset:g})"


class Recorder:
    """Wraps a ``log_joint`` and records how many rows each call evaluates."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.rows: list[int] = []

    def __call__(self, z: Tensor) -> Tensor:
        self.rows.append(int(z.shape[0]) if z.ndim >= 1 else 1)
        return self.model(z)

    def __repr__(self) -> str:
        return f"Recorder({self.model!r})"


def _scalar(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(value).__name__}, expected a torch.Tensor (a scalar)",
        )
    if value.shape != ():
        raise StudentError(
            "bad_result",
            f"{name} returned shape {tuple(value.shape)}, expected a scalar (shape ()): sum over dimensions, average over samples",
        )
    if not value.is_floating_point():
        raise StudentError(
            "bad_result",
            f"{name} returned dtype {value.dtype}, expected floating point",
        )
    return value


class EntropyOutput(probes.SideEffects):
    """:func:`entropy_probe`: the entropy, ``dH/dlog_sigma`` (None if not differentiable)."""

    value: Tensor
    grad: Tensor | None


class ScalarOutput(probes.SideEffects):
    """:func:`scalar_probe`: the value and ``(d/dmu, d/dlog_sigma)`` (None when not asked)."""

    value: Tensor
    grads: tuple[Tensor, Tensor] | None


class PerSampleOutput(probes.SideEffects):
    """:func:`per_sample_probe`: the value on all samples and on each sample alone."""

    batch: Tensor
    single: Tensor


class ScoreGradOutput(probes.SideEffects):
    """:func:`score_grad_probe`: the two gradients and which of them still carry a graph."""

    value: tuple[Tensor, Tensor]
    #: Positions (0: grad_mu, 1: grad_log_sigma) of results that hold an autograd graph.
    graph: list[int]


class QOutput(probes.SideEffects):
    """:func:`q_probe`: the value and the vector-Jacobian products (None if not differentiable)."""

    value: Tensor
    grads: list[Tensor] | None


class FitOutput(TypedDict):
    """:func:`fit_probe`: the fitted parameters, the ELBO trace and contract violations."""

    mu: Tensor
    log_sigma: Tensor
    elbos: Tensor
    problems: list[str]
    rows: list[int] | None


def entropy_probe(student: Student, log_sigma: Tensor) -> EntropyOutput:
    """``gaussian_entropy(log_sigma)``: value, ``dH/dlog_sigma`` (None if not differentiable), side effects."""
    leaf = log_sigma.clone().requires_grad_(True)
    value = _scalar("gaussian_entropy", student.gaussian_entropy(leaf))
    grad = (
        torch.autograd.grad(value, leaf, allow_unused=True)[0]
        if value.requires_grad
        else None
    )
    effects = probes.side_effects([log_sigma], [leaf])
    effects["grad_left"] = []  # the leaf is ours; autograd.grad above leaves no .grad
    return {"value": value, "grad": grad, **effects}


def scalar_probe(
    student: Student,
    name: str,
    log_joint: Any,
    mu: Tensor,
    log_sigma: Tensor,
    eps: Tensor,
    grads: bool = True,
    held: dict[str, Any] | None = None,
) -> ScalarOutput:
    """``name(log_joint, mu, log_sigma, eps)`` with ``mu``, ``log_sigma`` as fresh leaves.

    ``held``: helpers held correct (:func:`autograder.probes.held_correct`).
    """
    with probes.held_correct(student, name, held or {}):
        return _unheld_scalar_probe(student, name, log_joint, mu, log_sigma, eps, grads)


def _unheld_scalar_probe(
    student: Student,
    name: str,
    log_joint: Any,
    mu: Tensor,
    log_sigma: Tensor,
    eps: Tensor,
    grads: bool,
) -> ScalarOutput:
    mu_leaf = mu.clone().requires_grad_(True)
    ls_leaf = log_sigma.clone().requires_grad_(True)
    eps_arg = eps.clone()
    value = _scalar(name, getattr(student, name)(log_joint, mu_leaf, ls_leaf, eps_arg))
    effects = probes.side_effects(
        [None, mu, log_sigma, eps], [log_joint, mu_leaf, ls_leaf, eps_arg]
    )
    effects["grad_left"] = []  # not checked here: the leaves are this probe's own
    out_grads = None
    if grads:
        if not value.requires_grad:
            raise StudentError(
                "bad_result",
                f"{name}'s result is not differentiable in mu and log_sigma: did you detach, call .item(), "
                "use torch.no_grad() or numpy?",
            )
        g_mu, g_ls = torch.autograd.grad(value, (mu_leaf, ls_leaf), allow_unused=True)
        out_grads = (
            torch.zeros_like(mu) if g_mu is None else g_mu,
            torch.zeros_like(log_sigma) if g_ls is None else g_ls,
        )
    return {"value": value, "grads": out_grads, **effects}


def per_sample_probe(
    student: Student,
    name: str,
    log_joint: Any,
    mu: Tensor,
    log_sigma: Tensor,
    eps: Tensor,
) -> PerSampleOutput:
    """``name`` on all of ``eps`` (``"batch"``) and on each row alone (``"single"``, shape ``(S,)``)."""
    batch = scalar_probe(student, name, log_joint, mu, log_sigma, eps, grads=False)
    single = [
        scalar_probe(
            student, name, log_joint, mu, log_sigma, eps[s : s + 1], grads=False
        )["value"]
        for s in range(eps.shape[0])
    ]
    return {
        "batch": batch["value"],
        "single": torch.stack([v.detach() for v in single]),
        "mutated": batch["mutated"],
        "grad_left": batch["grad_left"],
        "flag_changed": batch["flag_changed"],
    }


def score_grad_probe(
    student: Student,
    log_joint: Any,
    mu: Tensor,
    log_sigma: Tensor,
    z: Tensor,
    requires_grad: bool = False,
) -> ScoreGradOutput:
    """``elbo_score_grad(log_joint, mu, log_sigma, z)``: the two gradients and side effects.

    ``requires_grad``: ``mu`` and ``log_sigma`` are handed over as leaves that require grad,
    as ``fit_bbvi``'s optimiser holds them (plain tensors otherwise). ``graph`` names the
    results that still hold an autograd graph (:func:`autograder.probes.holds_graph`).
    """
    args = {
        "mu": mu.detach().clone().requires_grad_(requires_grad),
        "log_sigma": log_sigma.detach().clone().requires_grad_(requires_grad),
        "z": z.clone(),
    }
    result = student.elbo_score_grad(
        log_joint, args["mu"], args["log_sigma"], args["z"]
    )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise StudentError(
            "bad_result",
            f"elbo_score_grad returned {type(result).__name__}, expected a tuple (grad_mu, grad_log_sigma)",
        )
    for what, g in zip(("grad_mu", "grad_log_sigma"), result):
        if not isinstance(g, Tensor):
            raise StudentError(
                "bad_result",
                f"elbo_score_grad returned {what} as a {type(g).__name__}, expected a torch.Tensor",
            )
        if g.shape != mu.shape:
            raise StudentError(
                "bad_result",
                f"elbo_score_grad returned {what} of shape {tuple(g.shape)}, expected {tuple(mu.shape)}: average over the samples",
            )
    effects = probes.side_effects(
        [None, mu, log_sigma, z],
        [log_joint, args["mu"], args["log_sigma"], args["z"]],
        requires_grad=[None, requires_grad, requires_grad, False],
    )
    graph = probes.graph_held(list(result))
    return {
        "value": (result[0].detach(), result[1].detach()),
        "graph": graph,
        **effects,
    }


def fit_held_probe(
    student: Student,
    held: dict[str, Any],
    log_joint: Any,
    dim: int,
    global_seed: int,
    **kwargs: Any,
) -> FitOutput:
    """:func:`fit_probe` with ``fit_bbvi``'s helpers (``elbo``, ``elbo_score_grad``) held correct."""
    with probes.held_correct(student, "fit_bbvi", held, model=log_joint):
        return fit_probe(student, log_joint, dim, global_seed, **kwargs)


def fit_probe(
    student: Student, log_joint: Any, dim: int, global_seed: int, **kwargs: Any
) -> FitOutput:
    """``fit_bbvi(log_joint, dim, **kwargs)`` with torch's global RNG seeded by ``global_seed`` (and restored).

    Returns ``{"mu", "log_sigma", "elbos" (float64 tensor), "problems": [contract violations],
    "rows": rows evaluated per log_joint call (when log_joint is a Recorder)}``.
    """
    with probes.seeded(global_seed):
        result = student.fit_bbvi(log_joint, dim, **kwargs)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise StudentError(
            "bad_result",
            f"fit_bbvi returned {type(result).__name__}, expected a tuple (mu, log_sigma, elbos)",
        )
    mu, log_sigma, elbos = result
    problems = []
    for what, t in (("mu", mu), ("log_sigma", log_sigma)):
        if not isinstance(t, Tensor):
            raise StudentError(
                "bad_result",
                f"fit_bbvi returned {what} as a {type(t).__name__}, expected a torch.Tensor",
            )
        if t.shape != (dim,):
            raise StudentError(
                "bad_result",
                f"fit_bbvi returned {what} of shape {tuple(t.shape)}, expected ({dim},)",
            )
        if t.requires_grad:
            problems.append(f"{what} still requires grad: return {what}.detach()")
        if t.dtype != torch.float64:
            problems.append(f"{what} has dtype {t.dtype}, expected torch.float64")
    if not isinstance(elbos, (list, tuple)):
        raise StudentError(
            "bad_result",
            f"fit_bbvi returned elbos as a {type(elbos).__name__}, expected a list of floats",
        )
    values = []
    for i, e in enumerate(elbos):
        if isinstance(e, Tensor):
            if not any(p.startswith("elbos[") for p in problems):
                problems.append(
                    f"elbos[{i}] is a Tensor, expected a float: append value.item() (a tensor keeps its graph alive)"
                )
            e = e.detach().reshape(-1)[0].item() if e.numel() == 1 else float("nan")
        elif not isinstance(e, (int, float)) or isinstance(e, bool):
            raise StudentError(
                "bad_result", f"elbos[{i}] is a {type(e).__name__}, expected a float"
            )
        values.append(float(e))
    rows = list(log_joint.rows) if isinstance(log_joint, Recorder) else None
    return {
        "mu": mu.detach().to(torch.float64),
        "log_sigma": log_sigma.detach().to(torch.float64),
        "elbos": torch.tensor(values, dtype=torch.float64),
        "problems": problems,
        "rows": rows,
    }


def signature_defaults_probe(student: Student, name: str) -> dict[str, Any]:
    """Default values of ``student.<name>``'s parameters (plain numbers and strings only)."""
    params = inspect.signature(getattr(student, name)).parameters.values()
    return {
        p.name: p.default
        if isinstance(p.default, (int, float, str))
        else repr(p.default)
        for p in params
        if p.default is not inspect.Parameter.empty
    }


def fit_error_probe(student: Student, log_joint: Any, dim: int, estimator: str) -> str:
    """What ``fit_bbvi(..., estimator=estimator)`` does: ``"ValueError"``, another exception's name, or ``"returned"``."""
    try:
        with probes.seeded(0):
            student.fit_bbvi(
                log_joint,
                dim,
                estimator=estimator,
                num_steps=3,
                num_samples=4,
                lr=0.01,
                seed=0,
            )
    except ValueError:
        return "ValueError"
    except Exception as error:  # the student's code chose another exception type
        return type(error).__name__
    return "returned"


def _tensor_result(name: str, value: Any, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(value, Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(value).__name__}, expected a torch.Tensor of shape {shape}",
        )
    if not value.is_floating_point():
        raise StudentError(
            "bad_result",
            f"{name} returned dtype {value.dtype}, expected floating point",
        )
    if tuple(value.shape) != shape:
        raise StudentError(
            "bad_result",
            f"{name} returned shape {tuple(value.shape)}, expected {shape}",
        )
    return value


def q_probe(
    student: Student,
    name: str,
    args: tuple[Tensor, ...],
    wrt: tuple[int, ...],
    shape: tuple[int, ...],
    cotangent: Tensor | None = None,
) -> QOutput:
    r"""``name(*args)`` with ``args[i]`` (``i`` in ``wrt``) as fresh leaves.

    Returns the value, ``grads``: :math:`v^\top \partial y/\partial a_i` per ``i`` in ``wrt``
    (zeros where unused), or None when the output is not differentiable, and the side effects.
    """
    call_args = [a.clone() for a in args]
    for i in wrt:
        call_args[i].requires_grad_(True)
    value = _tensor_result(name, getattr(student, name)(*call_args), shape)
    effects = probes.side_effects(args, call_args)
    effects["grad_left"] = []  # not checked here: the leaves are this probe's own
    grads = None
    if value.requires_grad:
        leaves = [call_args[i] for i in wrt]
        v = torch.ones_like(value) if cotangent is None else cotangent.to(value.dtype)
        raw = torch.autograd.grad(value, leaves, v, allow_unused=True)
        grads = [
            torch.zeros_like(leaf) if g is None else g.detach()
            for g, leaf in zip(raw, leaves)
        ]
    return {"value": value.detach(), "grads": grads, **effects}
