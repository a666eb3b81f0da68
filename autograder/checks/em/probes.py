"""What runs in the student's process for ``01_em``: :func:`em_probe` and its output.

The only part of these checks that the sandboxed worker calls next to student code; keep it
small (its imports are the attack surface the worker's tamper check walks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autograder import probes
from autograder.subject import Student, StudentError


def _as_float_array(value: Any, what: str) -> tuple[np.ndarray, str]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
        dtype = str(array.dtype)
        return array.astype(np.float64), dtype
    except (TypeError, ValueError):
        raise StudentError(
            "bad_result",
            f"returned {type(value).__name__} for {what}, expected a numpy array of numbers",
        ) from None


class EmOutput(probes.SideEffects):
    """What :func:`em_probe` brings back: the result as float64 arrays (``(resp, loglik)`` for
    ``e_step``), the dtypes the student returned, and the side effects on the arrays."""

    value: Any
    dtypes: list[str]


def em_probe(
    student: Student,
    name: str,
    *arrays: np.ndarray,
    held: dict[str, Any] | None = None,
) -> EmOutput:
    """Call ``student.<name>(*arrays)``; return its result as float64 arrays, their dtypes, mutated args.

    ``e_step`` must return a pair ``(resp, log_likelihood)``; torch tensors and array-likes are
    accepted and converted (the original dtype is reported so float32 can be flagged).
    ``held`` maps helper names to stand-ins (:func:`autograder.probes.held_correct`).
    """
    with probes.held_correct(student, name, held or {}):
        out = probes.invoke_probe(student, name, *arrays)
    value = out["value"]
    if name == "e_step":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            got = f"a {type(value).__name__}" + (
                f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""
            )
            raise StudentError(
                "bad_result",
                f"returned {got} from e_step; expected a pair (resp, log_likelihood)",
            )
        (resp, resp_dtype), (loglik, loglik_dtype) = (
            _as_float_array(value[0], "resp"),
            _as_float_array(value[1], "the log-likelihood"),
        )
        return {
            "value": (resp, loglik),
            "dtypes": [resp_dtype, loglik_dtype],
            **_effects(out),
        }
    array, dtype = _as_float_array(value, f"the result of {name}")
    return {"value": array, "dtypes": [dtype], **_effects(out)}


def _effects(out: probes.Invoked) -> probes.SideEffects:
    return {
        "mutated": out["mutated"],
        "grad_left": out["grad_left"],
        "flag_changed": out["flag_changed"],
    }
