"""Statistical assertions, each with the false-failure probability it guarantees.

Used only where the deterministic tier cannot see a property (a student's own sampling,
unbiasedness, variance reduction, training). Each function's docstring states its
false-failure probability for a *correct* implementation; ``make calibrate`` measures it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _scipy_stats

from autograder.core import Failure

__all__ = ["dkw_bound", "mean_close", "z_threshold"]


def z_threshold(alpha: float) -> float:
    """Two-sided normal critical value for level ``alpha``."""
    return float(_scipy_stats.norm.isf(alpha / 2.0))


def mean_close(
    sample_mean: np.ndarray,
    truth: np.ndarray,
    per_sample_std: np.ndarray,
    n: int,
    *,
    alpha: float,
    what: str,
    hint: str = "",
) -> None:
    """Two-sided z-test of a Monte Carlo mean against a closed form, with *known* variance.

    Fails when any coordinate has :math:`|\\bar g - g^*| > z_{\\alpha/(2m)}\\,\\sigma_g/\\sqrt n`
    for ``m`` coordinates (Bonferroni). False-failure probability at most ``alpha`` under the
    normal approximation; callers keep ``n >= 100 * skewness**2`` so the CLT tail holds.
    """
    mean = np.atleast_1d(np.asarray(sample_mean, dtype=np.float64))
    want = np.atleast_1d(np.asarray(truth, dtype=np.float64))
    std = np.atleast_1d(np.asarray(per_sample_std, dtype=np.float64))
    if not np.all(np.isfinite(mean)):
        raise Failure(f"{what} contains NaN or infinity")
    z = z_threshold(alpha / mean.size)
    t = (mean - want) / (std / math.sqrt(n))
    worst = int(np.argmax(np.abs(t)))
    if abs(t[worst]) > z:
        raise Failure(
            f"{what} is biased: averaged over {n} draws it is {mean[worst]:.5g}, but the exact "
            f"value is {want[worst]:.5g} ({abs(t[worst]):.1f} standard errors away)"
            + (f". {hint}" if hint else "")
        )


def dkw_bound(n: int, alpha: float) -> float:
    """Dvoretzky–Kiefer–Wolfowitz–Massart: :math:`P(\\sup|F_n - F| > \\epsilon) \\le 2e^{-2n\\epsilon^2}`.

    Returns the :math:`\\epsilon` with false-failure probability exactly ``alpha`` for every ``n``.
    """
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))
