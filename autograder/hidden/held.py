"""Judge-only: the values of helpers held correct (:class:`autograder.probes.Held`).

A task that calls another graded function is graded with that helper held correct. The
stand-in in the student's process holds no implementation; its values come from here: in
the CI grader the judge answers the worker's ``helper`` messages with :func:`answer`
(:mod:`autograder.grader.remote`), in one process :class:`~autograder.probes.Held` calls it
directly. This module is secret (``autograder.hidden``): never shipped, never importable
next to a submission.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import torch

from autograder.probes import GRADIENT_HELPERS, HELPER_PARAMETERS, MODEL_HELPERS

__all__ = ["IMPLEMENTATIONS", "HelperError", "answer"]


def _private(name: str) -> ModuleType:
    """A copy of the reference module ``course_lib.reference.<name>`` that only this module
    holds: its globals are its own, so no probe's rebinding of a graded module's helpers
    (:func:`autograder.probes.held_correct`, which also rebinds the shared reference module
    when the reference itself is graded in one process) reaches an answer, whatever the
    order of imports."""
    public = importlib.util.find_spec(f"course_lib.reference.{name}")
    if public is None or public.origin is None:
        raise ImportError(f"course_lib.reference.{name} is not installed")
    private_name = f"{__name__}._reference_{name}"
    spec = importlib.util.spec_from_file_location(private_name, public.origin)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {public.origin}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[private_name] = module  # dataclasses and pickling look their module up
    spec.loader.exec_module(module)
    return module


em = _private("em")
vae = _private("vae")
elbo = _private("elbo")
#: The correct helper behind each stand-in (the reference; the bound helpers accept any
#: leading batch shape, which the SPEC does not promise of a student's).
IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {
    "log_joint": em.log_joint,
    "reparameterize": vae.reparameterize,
    "gaussian_kl": vae.gaussian_kl,
    "bernoulli_log_likelihood": vae.bernoulli_log_likelihood,
    "negative_elbo": vae.negative_elbo,
    "gaussian_entropy": elbo.gaussian_entropy,
    "elbo": elbo.elbo,
    "elbo_score_grad": elbo.elbo_score_grad,
}


class HelperError(ValueError):
    """The student's code called a held helper with arguments it cannot take."""


def _arguments(name: str, args: Any, model: Any) -> tuple[Any, ...]:
    params = HELPER_PARAMETERS[name]
    if not isinstance(args, (tuple, list)) or len(args) != len(params):
        raise HelperError(f"{name} takes {len(params)} arguments ({', '.join(params)})")
    if name in MODEL_HELPERS:
        # The stand-in sent a placeholder for the model: the running probe's own is used.
        if args[0] is not None or not callable(model):
            raise HelperError(f"{name} is held only while a probe with a model runs")
        return (model, *_arguments_checked(name, params[1:], args[1:]))
    return _arguments_checked(name, params, args)


def _arguments_checked(
    name: str, params: tuple[str, ...], args: Any
) -> tuple[Any, ...]:
    for param, arg in zip(params, args, strict=True):
        if not isinstance(arg, (torch.Tensor, np.ndarray)):
            raise HelperError(
                f"{name}'s argument {param} is a {type(arg).__name__}, expected an array"
            )
    return tuple(args)


def answer(
    name: str,
    mode: str,
    args: Any,
    cotangent: Any = None,
    wrt: Any = (),
    model: Any = None,
) -> Any:
    """The held helper ``name``'s value at ``args`` (``mode="value"``), or the gradients of
    ``cotangent · name(args)`` with respect to the arguments at the indices ``wrt``
    (``mode="vjp"``, one per index), or both at once (``mode="value_grad"``: the value and,
    where it is a scalar, its gradients with respect to ``wrt``, else ``None``). ``model``:
    the running probe's ``log_joint``, the first argument of the helpers in
    :data:`~autograder.probes.MODEL_HELPERS`.

    Raises:
        HelperError: an unknown helper or mode, or arguments the helper cannot take (the
            student's code passed them: it fails as a call of the real helper would).
    """
    if name not in IMPLEMENTATIONS:
        raise HelperError(f"no helper {name!r} is held")
    function = IMPLEMENTATIONS[name]
    arguments = _arguments(name, args, model)
    try:
        if mode == "value":
            with torch.no_grad():
                value = function(*arguments)
            if name in GRADIENT_HELPERS:
                return tuple(v.detach() for v in value)
            return value
        if mode not in ("vjp", "value_grad") or name in GRADIENT_HELPERS:
            raise HelperError(f"unknown mode {mode!r}")
        indices = list(wrt)
        if not all(
            type(i) is int
            and 0 <= i < len(arguments)
            and isinstance(arguments[i], torch.Tensor)
            and arguments[i].is_floating_point()
            for i in indices
        ) or (mode == "vjp" and not isinstance(cotangent, torch.Tensor)):
            raise HelperError(f"a malformed gradient request for {name}")
        call = list(arguments)
        for i in indices:
            call[i] = arguments[i].detach().clone().requires_grad_(True)
        leaves = [call[i] for i in indices]
        with torch.enable_grad():
            value = function(*call)
            if mode == "value_grad":
                # One round trip where a scalar's value and gradient would take two: the
                # caller's backward pass multiplies these by its incoming scalar (the VJP).
                if value.dim() != 0:
                    return value.detach(), None
                cotangent = torch.ones_like(value)
            if value.shape != cotangent.shape:
                raise HelperError(
                    f"the gradient of {name} has shape {tuple(cotangent.shape)}, "
                    f"its value {tuple(value.shape)}"
                )
            grads = torch.autograd.grad(
                value, leaves, grad_outputs=cotangent.to(value.dtype), allow_unused=True
            )
        filled = [
            torch.zeros_like(leaf) if g is None else g.detach()
            for leaf, g in zip(leaves, grads, strict=True)
        ]
        return (value.detach(), filled) if mode == "value_grad" else filled
    except HelperError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError) as error:
        raise HelperError(f"{name} failed on the arguments given: {error}") from None
