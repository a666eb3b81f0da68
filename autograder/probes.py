"""Generic probes and the probe contract: functions that run next to the student's code.

A probe takes the :class:`~autograder.subject.Student` first, returns plain data typed by a
``TypedDict`` (:class:`Invoked`, :class:`VJP`, and the course probes' own), and its name ends
in ``_probe``; judge-side helpers never do. Side effects on the arguments are always reported
by :func:`side_effects` (positions in the argument list). Assignment-specific probes live in
the public ``autograder.checks.<module>.probes``; never in ``autograder.hidden`` (the sandboxed
worker cannot import it). Student code that draws its own randomness runs under
:func:`seeded`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict

import numpy as np
import torch

from autograder.subject import Student, StudentError

__all__ = [
    "Invoked",
    "SideEffects",
    "GRADIENT_HELPERS",
    "HELPER_PARAMETERS",
    "MODEL_HELPERS",
    "Held",
    "HeldBackend",
    "VJP",
    "changed",
    "graph_held",
    "held_correct",
    "held_names",
    "hold",
    "holds_graph",
    "invoke_held_probe",
    "invoke_probe",
    "probe_model",
    "seeded",
    "set_held_backend",
    "side_effects",
    "snapshot",
    "vjp_held_probe",
    "vjp_probe",
]


class SideEffects(TypedDict):
    """What a call did to the arguments it was handed, by their positions in its argument list.

    Every probe that reports side effects reports them with these keys and this meaning
    (built by :func:`side_effects`); the judge turns them into feedback with
    :func:`autograder.compare.expect_no_side_effects`.
    """

    #: Positions of tensor or array arguments whose shape or values changed.
    mutated: list[int]
    #: Positions of tensor arguments that now carry a ``.grad``.
    grad_left: list[int]
    #: Positions of tensor arguments whose ``requires_grad`` is not what they were handed with.
    flag_changed: list[int]


class Invoked(SideEffects):
    """The result of :func:`invoke_probe`: the returned value and the side effects."""

    value: Any


class VJP(TypedDict):
    """The result of :func:`vjp_probe`: the returned value and one gradient per ``wrt`` index."""

    value: Any
    grads: list[torch.Tensor]


def snapshot(values: Sequence[Any]) -> list[Any]:
    """Copies of the tensor and array arguments (None for the others), to compare after a call."""
    return [
        copy.deepcopy(v) if isinstance(v, (torch.Tensor, np.ndarray)) else None
        for v in values
    ]


def changed(before: Any, after: Any) -> bool:
    """True when a tensor or array argument differs from its snapshot (shape or any value)."""
    if isinstance(after, torch.Tensor):
        return before.shape != after.shape or not torch.equal(
            before.detach(), after.detach()
        )
    if isinstance(after, np.ndarray):
        return before.shape != after.shape or not np.array_equal(
            before, after, equal_nan=True
        )
    return False


def side_effects(
    before: Sequence[Any],
    passed: Sequence[Any],
    requires_grad: Sequence[bool | None] | None = None,
) -> SideEffects:
    """The one way a probe reports what the student's call did to its arguments.

    Args:
        before: Per position, the caller's value or a :func:`snapshot` of it taken before the
            call (None: not checked for changes).
        passed: The objects the student's function received, in the same positions.
        requires_grad: Per position, the ``requires_grad`` the argument was handed with (None
            for positions not checked); omitted: flags are not checked.

    Returns:
        The positions that were modified, left with ``.grad``, or had their flag switched.
    """
    flags = list(requires_grad) if requires_grad is not None else [None] * len(passed)
    return {
        "mutated": [
            i
            for i, (b, a) in enumerate(zip(before, passed))
            if b is not None and changed(b, a)
        ],
        "grad_left": [
            i
            for i, a in enumerate(passed)
            if isinstance(a, torch.Tensor) and a.grad is not None
        ],
        "flag_changed": [
            i
            for i, (flag, a) in enumerate(zip(flags, passed))
            if flag is not None
            and isinstance(a, torch.Tensor)
            and a.requires_grad != flag
        ],
    }


def holds_graph(value: Any, depth: int = 4) -> bool:
    """True when the tensor ``value`` keeps an autograd graph alive.

    A result holds a graph when it requires grad (a ``grad_fn``, or a leaf that requires
    grad, or a view made under ``no_grad`` of a tensor that does), when it is a view of a
    tensor that holds one (``_base`` keeps its base, and the base its ``grad_fn``), or when it
    carries such a tensor as an attribute. Returned by a gradient estimator used in a training
    loop, any of these keeps every intermediate of the step alive into the next.
    """
    if not isinstance(value, torch.Tensor) or depth < 0:
        return False
    if value.requires_grad or value.grad_fn is not None:
        return True
    base = value._base
    if base is not None and holds_graph(base, depth - 1):
        return True
    attributes = getattr(value, "__dict__", {}) or {}
    return any(holds_graph(v, depth - 1) for v in attributes.values())


def graph_held(values: Sequence[Any]) -> list[int]:
    """Positions of the tensors in ``values`` that hold an autograd graph (:func:`holds_graph`)."""
    return [i for i, v in enumerate(values) if holds_graph(v)]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run what the block calls on a private copy of torch's CPU random state, seeded by the
    grader (``seed`` drawn by Hypothesis, :func:`autograder.strategies.seeds`), and restored
    afterwards: student code that draws its own randomness is reproducible and leaves the
    caller's RNG as it was. The CPU generator always; the CUDA generators too once CUDA is
    initialised in this process (a GPU grader: student code that draws on the device is then
    as reproducible as on the CPU), never initialising it here (``torch.manual_seed`` would,
    lazily, with a stack trace each call). The CPU stream is the same either way.
    """
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for device in devices:
            torch.cuda.default_generators[device].manual_seed(seed)
        yield


def invoke_probe(student: Student, name: str, *args: Any, **kwargs: Any) -> Invoked:
    """Call ``student.<name>(*args, **kwargs)`` and report side effects on the arguments.

    Returns:
        The value returned and the :class:`SideEffects` on ``args`` (positions in ``args``).
    """
    target = getattr(student, name)
    before = snapshot(args)
    value = target(*args, **kwargs)
    return {"value": value, **side_effects(before, args)}


def vjp_probe(
    student: Student,
    name: str,
    args: tuple[Any, ...],
    wrt: tuple[int, ...],
    cotangent: torch.Tensor | None = None,
    output_index: int | None = None,
) -> VJP:
    r"""Call ``student.<name>(*args)`` with ``args[i]`` (for ``i`` in ``wrt``) as fresh leaves and
    return the output and the vector-Jacobian products :math:`v^\top \partial y / \partial a_i`.

    Args:
        student: The submission.
        name: The function to call.
        args: Positional arguments.
        wrt: Indices of the tensor arguments to differentiate with respect to.
        cotangent: :math:`v`, shaped like the output; defaults to ones (the gradient of the sum).
        output_index: When the function returns a tuple, which element to differentiate.

    Returns:
        The output and one gradient per ``wrt`` index (zeros where unused); raises a
        :class:`StudentError` when the output is not connected to the inputs at all.
    """
    call_args = list(args)
    for i in wrt:
        call_args[i] = call_args[i].detach().clone().requires_grad_(True)
    value = getattr(student, name)(*call_args)
    output = value[output_index] if output_index is not None else value
    if not isinstance(output, torch.Tensor):
        raise StudentError(
            "bad_result",
            f"{name} returned a {type(output).__name__}, expected a torch.Tensor",
        )
    if not output.requires_grad:
        raise StudentError(
            "bad_result",
            f"{name}'s output is not differentiable with respect to its parameters: did you detach, "
            "use .sample() instead of a differentiable path, or convert to numpy?",
        )
    v = torch.ones_like(output) if cotangent is None else cotangent.to(output.dtype)
    if v.shape != output.shape:
        raise StudentError(
            "bad_result",
            f"{name} returned shape {tuple(output.shape)}, expected {tuple(v.shape)}",
        )
    leaves = [call_args[i] for i in wrt]
    grads = torch.autograd.grad(output, leaves, grad_outputs=v, allow_unused=True)
    return {
        "value": value,
        "grads": [
            torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)
        ],
    }


# --------------------------------------------------------------------------------------
# Grading a task with its dependencies held correct (no double jeopardy)
# --------------------------------------------------------------------------------------


#: The positional parameters of every helper a task may be graded with held correct (the
#: SPEC's signatures), so that a student's keyword call reaches the stand-in too.
HELPER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "log_joint": ("X", "weights", "means", "covs"),
    "reparameterize": ("mu", "logvar", "eps"),
    "gaussian_kl": ("mu", "logvar"),
    "bernoulli_log_likelihood": ("x", "logits"),
    "negative_elbo": ("x", "logits", "mu", "logvar"),
    "gaussian_entropy": ("log_sigma",),
    "elbo": ("log_joint", "mu", "log_sigma", "eps"),
    "elbo_score_grad": ("log_joint", "mu", "log_sigma", "z"),
}

#: Helpers whose first argument is the model (a callable ``log_joint``): a callable cannot
#: travel to the judge, so the stand-in sends ``None`` in its place and the judge uses the
#: running probe's own ``log_joint`` argument (:func:`probe_model`), whatever the student's
#: code passed: held correct means the helper called as the task should call it.
MODEL_HELPERS: frozenset[str] = frozenset({"elbo", "elbo_score_grad"})

#: Helpers that return gradients (data for an optimiser step): their stand-ins return plain
#: tensors, never part of a graph.
GRADIENT_HELPERS: frozenset[str] = frozenset({"elbo_score_grad"})

#: The helpers held for the probe running in this process (set by :func:`held_correct`).
#: Only the in-process backend reads it; the CI grader's judge keeps its own account.
_ACTIVE: list[frozenset[str]] = []
#: The running probe's model (its ``log_joint`` argument), beside :data:`_ACTIVE`.
_MODELS: list[Any] = []


def probe_model(
    probe: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The probe call's ``log_joint`` argument (``None`` when it has none): the model the
    judge evaluates a :data:`MODEL_HELPERS` stand-in with."""
    try:
        bound = inspect.signature(probe).bind_partial(None, *args, **kwargs)
    except (TypeError, ValueError):
        return None
    return bound.arguments.get("log_joint")


#: The SPEC signatures as :class:`inspect.Signature` objects, built once (a stand-in binds
#: every call: thousands per graded fit).
_HELPER_SIGNATURES: dict[str, inspect.Signature] = {
    name: inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
    )
    for name, params in HELPER_PARAMETERS.items()
}


class HeldBackend(Protocol):
    """Computes a held helper's value (``mode="value"``), its vector-Jacobian product
    (``mode="vjp"``: one gradient per index in ``wrt``, given the ``cotangent``), or both at
    once (``mode="value_grad"``: the value and, for a scalar, its gradients with respect to
    ``wrt``, else ``None``)."""

    def __call__(
        self,
        name: str,
        mode: str,
        args: tuple[Any, ...],
        cotangent: Any = None,
        wrt: tuple[int, ...] = (),
    ) -> Any: ...


def _local_backend(
    name: str,
    mode: str,
    args: tuple[Any, ...],
    cotangent: Any = None,
    wrt: tuple[int, ...] = (),
) -> Any:
    """In this process: the judge-only implementation, for a helper held by the running probe."""
    if not _ACTIVE or name not in _ACTIVE[-1]:
        raise StudentError(
            "forbidden",
            f"called the grader's own `{name}` (a held-correct stand-in) where it is not "
            "held: a submission must compute every graded task itself",
        )
    model = _MODELS[-1] if _MODELS else None
    try:
        answers = importlib.import_module("autograder.hidden.held")
    except ModuleNotFoundError:
        raise RuntimeError(
            "helpers are held correct only where the hidden checks are installed"
        ) from None
    return answers.answer(name, mode, args, cotangent, wrt, model=model)


_BACKEND: list[HeldBackend] = [_local_backend]


def set_held_backend(backend: HeldBackend) -> None:
    """Where :class:`Held` stand-ins get their values: the CI grader's worker asks its judge."""
    _BACKEND[0] = backend


class _HeldFunction(torch.autograd.Function):
    """A held helper's value with a backward pass that asks the backend for the VJP.

    The value and, when it is a scalar (an ELBO, a loss), its gradients come in one request
    (``value_grad``): the backward pass then multiplies them by its incoming scalar without
    asking again (``fit_bbvi``'s reparameterised fits: one judge round trip per step, not
    two). A non-scalar value's backward asks for the VJP (``vjp``)."""

    @staticmethod
    def forward(ctx: Any, name: str, *args: Any) -> Any:  # type: ignore[override]
        ctx.name = name
        ctx.args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        ctx.wrt = tuple(i for i, need in enumerate(ctx.needs_input_grad[1:]) if need)
        answer = _BACKEND[0](name, "value_grad", ctx.args, None, ctx.wrt)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise RuntimeError(f"a malformed answer for the held {name}")
        value, ctx.grads = answer
        return value

    @staticmethod
    def backward(ctx: Any, cotangent: torch.Tensor) -> Any:  # type: ignore[override]
        wrt = ctx.wrt
        if ctx.grads is not None:
            # d(c * f)/dx = c * df/dx for the scalar f: exactly what the VJP with cotangent c
            # gives when c = +-1 (a loss or its negation), to round-off otherwise.
            scale = cotangent.detach()
            grads = [scale.to(g.dtype) * g for g in ctx.grads]
        else:
            grads = _BACKEND[0](ctx.name, "vjp", ctx.args, cotangent.detach(), wrt)
        out: list[Any] = [None] * len(ctx.args)
        for i, grad in zip(wrt, grads, strict=True):
            out[i] = grad
        return (None, *out)


class Held:
    """A stand-in for a student's helper, held correct while one probe runs.

    It holds no implementation: its values come from a *backend*. In the CI grader's worker
    that is the judge, over the wire (:mod:`autograder.grader.worker`), which computes them
    with judge-only code and refuses (zero and the ``forbidden`` flag on the task being
    checked) a call for a helper that the running probe does not hold. In one process
    (:class:`~autograder.subject.LocalSubject`) it is ``autograder.hidden.held``, under the
    same rule. Gradients flow through it (:class:`_HeldFunction`).
    """

    def __init__(self, name: str) -> None:
        if name not in HELPER_PARAMETERS:
            raise ValueError(f"no held-correct stand-in for {name!r}")
        self.name = name

    def _positional(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        bound = _HELPER_SIGNATURES[self.name].bind(*args, **kwargs)
        positional = tuple(bound.arguments[p] for p in HELPER_PARAMETERS[self.name])
        if self.name in MODEL_HELPERS:
            # The judge evaluates the probe's own model: the callable stays here.
            positional = (None, *positional[1:])
        return positional

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            positional = self._positional(args, kwargs)
        except TypeError as error:
            raise TypeError(f"{self.name}(): {error}") from None
        if (
            self.name not in GRADIENT_HELPERS
            and torch.is_grad_enabled()
            and any(isinstance(a, torch.Tensor) and a.requires_grad for a in positional)
        ):
            return _HeldFunction.apply(self.name, *positional)
        return _BACKEND[0](self.name, "value", positional)

    def __repr__(self) -> str:
        return f"<the grader's held-correct {self.name}>"


def hold(*names: str) -> dict[str, Held]:
    """Stand-ins for ``names`` where helpers can be held correct (the hidden checks are
    installed: the instructor's machine, the CI grader's judge); none on a student's machine,
    where a task's public checks run its helpers as wired.

    It looks for the judge-only module's file and never imports it: importing
    ``autograder.hidden.held`` in a process that runs a submission would put the reference in
    its ``sys.modules``. Call it where a check calls the task (judge side), never at import
    of a check module (the CI grader's worker imports those too)."""
    held = Path(__file__).resolve().parent / "hidden" / "held.py"
    if not held.is_file():
        return {}
    return {name: Held(name) for name in names}


def held_names(value: Any, depth: int = 0) -> set[str]:
    """The names of the :class:`Held` stand-ins in a probe's arguments (containers searched)."""
    if isinstance(value, Held):
        return {value.name}
    if depth > 4:
        return set()
    items: Any = (
        value.values()
        if isinstance(value, Mapping)
        else value
        if isinstance(value, (tuple, list))
        else ()
    )
    return set().union(*(held_names(v, depth + 1) for v in items))


def _globals_of(obj: Any) -> dict[str, Any] | None:
    """The global namespace the student's function or class looks its helpers up in."""
    if inspect.isclass(obj):
        for attr in ("forward", "__init__", "__call__"):
            fn = obj.__dict__.get(attr)
            if fn is None:
                for base in obj.__mro__:
                    fn = base.__dict__.get(attr)
                    if fn is not None and getattr(fn, "__globals__", None) is not None:
                        break
            globals_ = getattr(fn, "__globals__", None)
            if isinstance(globals_, dict):
                return globals_
        return None
    globals_ = getattr(inspect.unwrap(obj), "__globals__", None)
    return globals_ if isinstance(globals_, dict) else None


@contextlib.contextmanager
def held_correct(
    student: Student, task: str, stand_ins: Mapping[str, Any], model: Any = None
) -> Iterator[None]:
    """While the block runs, the names in ``stand_ins`` resolve to the stand-ins for ``task``.

    ``task``'s helpers (``log_joint`` for ``e_step``, say) are looked up in the globals of
    the student's ``task`` at call time; rebinding them there for the duration of one probe
    grades ``task`` on its own code, with its helpers correct. Names the student never
    defined, or a task whose globals cannot be found, are left alone (graded as wired).
    ``model``: the probe's ``log_joint`` (what :data:`MODEL_HELPERS` are evaluated with).
    """
    namespace = _globals_of(getattr(student, task))
    saved: dict[str, Any] = {}
    if namespace is not None:
        for name, stand_in in stand_ins.items():
            if name not in namespace:
                continue
            saved[name] = namespace[name]
            namespace[name] = stand_in
    _ACTIVE.append(frozenset(n for n, s in stand_ins.items() if isinstance(s, Held)))
    _MODELS.append(model)
    try:
        yield
    finally:
        _MODELS.pop()
        _ACTIVE.pop()
        if namespace is not None:
            for name, original in saved.items():
                namespace[name] = original


def invoke_held_probe(
    student: Student, held: Mapping[str, Any], name: str, *args: Any
) -> Invoked:
    """:func:`invoke_probe` with ``name``'s helpers held correct (:func:`held_correct`)."""
    with held_correct(student, name, held):
        return invoke_probe(student, name, *args)


def vjp_held_probe(
    student: Student,
    held: Mapping[str, Any],
    name: str,
    args: tuple[Any, ...],
    wrt: tuple[int, ...],
    cotangent: torch.Tensor | None = None,
) -> VJP:
    """:func:`vjp_probe` with ``name``'s helpers held correct (:func:`held_correct`)."""
    with held_correct(student, name, held):
        return vjp_probe(student, name, args, wrt, cotangent)
