"""The judge's side of ``01_em``'s right answers: read from the table, never computed.

The right values for the mixtures of :data:`~autograder.checks.em.problems.TABULATED` ship as
data (``autograder/checks/em_answers.py``, written by ``scripts/tabulate_answers.py`` from the
reference); :func:`right` reads them, :func:`free_energy_parts` splits a free energy into the
terms the hints name. No function here computes a graded task's answer for other inputs."""

from __future__ import annotations

import base64
import functools
import io
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import xlogy

from autograder.checks.em.problems import Mixture, answer_key


@dataclass(frozen=True)
class Right:
    """The right answers for one mixture's arrays, and the pieces the hints build the known
    wrong answers from."""

    #: ``log pi_k + log N(x_n; mu_k, Sigma_k)``, shape ``(N, K)``.
    log_joint: np.ndarray
    #: The responsibilities, shape ``(N, K)``.
    resp: np.ndarray
    #: ``sum_n log p(x_n)``.
    loglik: float
    #: Mahalanobis distances ``(x_n - mu_k)^T Sigma_k^-1 (x_n - mu_k)``, shape ``(N, K)``.
    maha: np.ndarray
    #: ``log det Sigma_k``, shape ``(K,)``.
    log_det: np.ndarray

    FIELDS = ("log_joint", "resp", "loglik", "maha", "log_det")


@functools.cache
def _table() -> dict[str, np.ndarray]:
    from autograder.checks import em_answers

    with np.load(
        io.BytesIO(zlib.decompress(base64.b64decode(em_answers.DATA)))
    ) as data:
        return {key: data[key] for key in data.files}


def right(problem: Mixture, kind: str = "ordinary") -> Right:
    """The tabulated right answers for ``KINDS[kind](problem)``.

    Raises:
        KeyError: ``problem`` is not in :data:`TABULATED` (a public check drew it elsewhere).
    """
    key, table = answer_key(problem, kind), _table()
    if f"{key}/log_joint" not in table:
        raise KeyError(f"no tabulated answer for {problem!r} ({kind})")
    values: dict[str, Any] = {field: table[f"{key}/{field}"] for field in Right.FIELDS}
    return Right(**{**values, "loglik": float(values["loglik"])})


def free_energy_parts(q: np.ndarray, want: Right) -> tuple[float, float, float]:
    """``(energy -sum q a, entropy -sum q log q, -log-likelihood)`` from the right answers."""
    energy = -float(np.sum(np.where(q > 0, q * want.log_joint, 0.0)))
    return energy, -float(xlogy(q, q).sum()), -want.loglik
