"""Known bugs of ``01_em`` and the hints that name them.

Each catalogue (:data:`LOG_JOINT_BUGS`, :data:`RESP_BUGS`, :data:`LOGLIK_BUGS`,
:data:`FREE_ENERGY_BUGS`) pairs a :class:`~autograder.compare.KnownBug` (named after its corpus
mutant in ``tests/corpus/em.py``) with what the bug computes from the tabulated right pieces;
the ``*_hint`` functions name the first match or say which term to look at."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from scipy.special import logsumexp, xlogy

from autograder.checks.em.closed_forms import Right, free_energy_parts
from autograder.checks.em.problems import Arrays
from autograder.compare import (
    Catalogue,
    KnownBug,
    hint_for,
    same_values,
)

#: Hints for extreme inputs (lost precision, log-space tricks) assume the ordinary case is
#: right; when it is not, the feedback names that instead of guessing.
_ORDINARY_WRONG = (
    "your code is already wrong on ordinary inputs (see the failed check against scipy's "
    "density on ordinary inputs): fix that first; this check only adds extreme inputs"
)


def _diagnose(got: Any, want: Any, hint: Callable[[], str] | str) -> str:
    """A near miss means lost precision; otherwise ask ``hint``. Never raises (a hint is a bonus)."""
    try:
        got_array, want_array = (
            np.asarray(got, dtype=np.float64),
            np.asarray(want, dtype=np.float64),
        )
        if got_array.shape != want_array.shape:
            return ""
        if np.all(np.isfinite(got_array)) and np.allclose(
            got_array, want_array, rtol=1e-4, atol=1e-6
        ):
            scale = np.maximum(np.abs(want_array), 1e-3)
            digits = int(
                -np.log10(
                    max(float(np.max(np.abs(got_array - want_array) / scale)), 1e-16)
                )
            )
            return (
                f"it agrees with the expected value to only about {digits} significant digits: did something "
                "get computed in float32 (np.float32, a float32 torch tensor), did you add jitter to the "
                "covariances, clip small values, or add a small epsilon inside a log?"
            )
        return hint if isinstance(hint, str) else hint()
    except Exception:  # a diagnostic must never turn a wrong answer into a grader error
        return ""


#: Whether a result is what a known bug computes. Where the bug gives exactly 0, so must the
#: result: a wrong posterior that is merely near one-hot (1e-12, a covariance not inverted)
#: is not the hard-assignment bug, whose zeros are exact.
_matches = partial(same_values, rtol=1e-6, atol=1e-8, exact_zeros=True)


_NUMERICS_HINT = (
    "solve with the covariance itself (Cholesky or np.linalg.solve, no added jitter) and take "
    "log det from np.linalg.slogdet or the Cholesky diagonal"
)


@dataclass(frozen=True)
class _LogJointTerms:
    """The pieces of the right log joint, from which the known wrong ones are built."""

    right: np.ndarray
    weights: np.ndarray
    maha: np.ndarray
    log_det: np.ndarray
    const: np.ndarray
    sigma_maha: np.ndarray


def _normalised(scores: np.ndarray) -> np.ndarray:
    """Rows of non-negative scores divided by their sums (building wrong responsibilities)."""
    return scores / scores.sum(axis=1, keepdims=True)


#: Known wrong log joints, each with the corpus mutant that has it (tests/corpus/em.py).
LOG_JOINT_BUGS: Catalogue = (
    (
        KnownBug(
            "log_joint/log_joint_missing_weights",
            "it matches log N(x; mu_k, Sigma_k) without log pi_k: add the log mixture weights",
        ),
        lambda t: t.right - np.log(t.weights),
    ),
    (
        KnownBug(
            "log_joint/log_joint_adds_weights_not_log",
            "it matches pi_k + log N(...): add log pi_k, not pi_k",
        ),
        lambda t: t.right - np.log(t.weights) + t.weights,
    ),
    (
        KnownBug(
            "log_joint/log_joint_drops_normaliser",
            "the normaliser -(D/2) log 2pi - (1/2) log det Sigma_k is missing",
        ),
        lambda t: np.log(t.weights) - 0.5 * t.maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_missing_half_in_exponent",
            "the quadratic term lacks its 1/2: -(1/2) (x - mu)^T Sigma^-1 (x - mu)",
        ),
        lambda t: t.right - 0.5 * t.maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_missing_half_on_log_det",
            "log det Sigma_k lacks its 1/2",
        ),
        lambda t: t.right - 0.5 * t.log_det,
    ),
    (
        KnownBug(
            "log_joint/log_joint_sigma_not_inverse",
            "the quadratic form uses Sigma_k instead of its inverse",
        ),
        lambda t: np.log(t.weights) + t.const - 0.5 * t.sigma_maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_weights_squared",
            "the weights enter squared: use log pi_k once",
        ),
        lambda t: t.right - np.log(t.weights) + 2 * np.log(t.weights),
    ),
)


def log_joint_hint(
    got: np.ndarray, arrays: Arrays, want: Right, fallback: str = ""
) -> str:
    """Name the bug when ``got`` matches a known wrong log joint, else say which term to look at."""
    X, weights, means, covs = arrays
    d = X.shape[1]
    const = -0.5 * (d * np.log(2 * np.pi) + want.log_det)
    sigma_maha = np.stack(
        [np.einsum("nd,de,ne->n", X - m, c, X - m) for m, c in zip(means, covs)], 1
    )
    terms = _LogJointTerms(
        want.log_joint, weights, want.maha, want.log_det, const, sigma_maha
    )
    hint = hint_for(got, LOG_JOINT_BUGS, _matches, terms)
    if hint or fallback:
        return hint or fallback
    diff = got - want.log_joint
    if np.all(np.isfinite(diff)) and np.allclose(diff, diff[:1], rtol=1e-6, atol=1e-6):
        return (
            "the error is the same for every x_n, so look at the terms that do not depend on x: "
            "log pi_k, -(1/2) log det Sigma_k and -(D/2) log 2pi"
        )
    return (
        "the error changes with x_n: look at the quadratic form (x_n - mu_k)^T Sigma_k^-1 (x_n - mu_k) "
        "(the full covariance, its inverse, the matching component k, and the factor 1/2)"
    )


#: Known wrong responsibilities, built from the right log joint ``a``, the right
#: responsibilities ``r`` and the weights.
RESP_BUGS: Catalogue = (
    (
        KnownBug(
            "e_step/e_step_normalises_over_data",
            "they are normalised over the data axis: divide by the sum over components (axis=1)",
        ),
        lambda a, r, w: np.exp(a - logsumexp(a, axis=0)),
    ),
    (
        KnownBug(
            "e_step/e_step_missing_weights",
            "they ignore the mixture weights: r_nk is proportional to pi_k N(x_n; mu_k, Sigma_k)",
        ),
        lambda a, r, w: _normalised(r / w),
    ),
    (
        KnownBug(
            "e_step/e_step_hard_assignments",
            "they are hard (one-hot) assignments: keep the soft posterior probabilities",
        ),
        lambda a, r, w: np.eye(len(w))[np.argmax(a, axis=1)],
    ),
    (
        KnownBug(
            "e_step/e_step_returns_log_resp",
            "these are log-responsibilities: exponentiate them",
        ),
        lambda a, r, w: np.log(np.clip(r, 1e-300, None)),
    ),
    (
        KnownBug(
            "e_step/e_step_weights_squared",
            "the weights enter squared: multiply by pi_k once",
        ),
        lambda a, r, w: _normalised(r * w),
    ),
)


def resp_hint(got: np.ndarray, arrays: Arrays, want: Right, fallback: str = "") -> str:
    """Name the bug when responsibilities match a known wrong answer."""
    hint = hint_for(got, RESP_BUGS, _matches, want.log_joint, want.resp, arrays[1])
    return (
        hint
        or fallback
        or "compare with r_nk = exp(a_nk - logsumexp_j a_nj), a_nk = log pi_k + log N(x_n; mu_k, Sigma_k)"
    )


#: Known wrong log-likelihoods, built from the right log joint ``a``, the posterior ``r``
#: and the right total.
LOGLIK_BUGS: Catalogue = (
    (
        KnownBug(
            "e_step/e_step_loglik_mean_over_points",
            "it is the mean over points: return the sum over n",
        ),
        lambda a, r, right: np.asarray(right / len(a)),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_negated",
            "it has the wrong sign: return log p(X), not -log p(X)",
        ),
        lambda a, r, right: np.asarray(-right),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_from_max",
            "it uses max_k a_nk: use logsumexp_k a_nk (sum over components inside the log)",
        ),
        lambda a, r, right: np.asarray(a.max(axis=1).sum()),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_expected_complete_data",
            "it is the expected complete-data log-likelihood sum r_nk a_nk, not log p(X) = sum_n logsumexp_k a_nk",
        ),
        lambda a, r, right: np.asarray((r * a).sum()),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_resp_entropy",
            "it is sum r log r: use sum_n logsumexp_k a_nk",
        ),
        lambda a, r, right: np.asarray(xlogy(r, r).sum()),
    ),
)


def loglik_hint(got: float, want: Right, fallback: str = "") -> str:
    """Name the bug when the log-likelihood matches a known wrong total."""
    hint = hint_for(
        np.asarray(got), LOGLIK_BUGS, _matches, want.log_joint, want.resp, want.loglik
    )
    return (
        hint
        or fallback
        or "log p(X) = sum_n logsumexp_k (log pi_k + log N(x_n; mu_k, Sigma_k))"
    )


@dataclass(frozen=True)
class _FreeEnergyTerms:
    """The pieces of the right free energy, from which the known wrong ones are built."""

    energy: float
    entropy: float
    neg_loglik: float
    q: np.ndarray
    weights: np.ndarray
    resp: np.ndarray

    @property
    def right(self) -> float:
        return self.energy - self.entropy


#: Known wrong free energies (tests/corpus/em.py has a mutant for each).
FREE_ENERGY_BUGS: Catalogue = (
    (
        KnownBug(
            "free_energy/free_energy_missing_entropy",
            "the entropy term is missing: F = -sum q log p(x, z) + sum q log q",
        ),
        lambda t: np.asarray(t.energy),
    ),
    (
        KnownBug(
            "free_energy/free_energy_wrong_sign",
            "the sign is flipped: F = -ELBO = -sum q (log p(x, z) - log q)",
        ),
        lambda t: np.asarray(-t.right),
    ),
    (
        KnownBug(
            "free_energy/free_energy_entropy_sign_flipped",
            "the entropy has the wrong sign: F = -sum q (log p(x, z) - log q)",
        ),
        lambda t: np.asarray(t.energy + t.entropy),
    ),
    (
        KnownBug(
            "free_energy/free_energy_mean_over_points",
            "it is averaged over points: F sums over n",
        ),
        lambda t: np.asarray(t.right / len(t.q)),
    ),
    (
        KnownBug(
            "free_energy/free_energy_ignores_q",
            "it does not depend on q (it is -log-likelihood): use the resp you are given",
        ),
        lambda t: np.asarray(t.neg_loglik),
    ),
    (
        KnownBug(
            "free_energy/free_energy_missing_weights",
            "log pi_k is missing: log p(x_n, z_n = k) = log pi_k + log N(x_n; mu_k, Sigma_k)",
        ),
        lambda t: np.asarray(t.right + np.sum(t.q * np.log(t.weights))),
    ),
    (
        KnownBug(
            "free_energy/free_energy_entropy_of_posterior",
            "the entropy is that of the posterior, not of the q you are given",
        ),
        lambda t: np.asarray(t.energy + xlogy(t.resp, t.resp).sum()),
    ),
)


def free_energy_hint(got: float, q: np.ndarray, arrays: Arrays, want: Right) -> str:
    """Name the bug when the free energy matches a known wrong formula."""
    if np.isnan(got):
        return "0 * log 0 must count as 0: use scipy.special.xlogy(q, q) or mask the zero entries of q"
    if not np.isfinite(got):
        return (
            "a log density became log(0) = -inf: compute log p(x_n, z_n = k) in log space "
            "(log pi_k + log N, never log of exp or of a density) and skip the terms where q is 0"
        )
    energy, entropy, neg_loglik = free_energy_parts(q, want)
    terms = _FreeEnergyTerms(energy, entropy, neg_loglik, q, arrays[1], want.resp)
    hint = hint_for(np.asarray(got), FREE_ENERGY_BUGS, _matches, terms)
    return (
        hint
        or "F(q) = -sum_n sum_k q_nk (log pi_k + log N(x_n; mu_k, Sigma_k) - log q_nk)"
    )
