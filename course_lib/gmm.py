"""Gaussian-mixture helpers students may call: the M-step, sampling, and an EM loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from course_lib._validate import as_float_array
from course_lib.progress import finish_early, progress

__all__ = [
    "EMResult",
    "align_components",
    "fit_em",
    "init_params",
    "m_step",
    "sample_gmm",
]

EStep = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]
]


def m_step(
    X: np.ndarray, resp: np.ndarray, reg_covar: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""M-step: the parameters that maximise :math:`-F(q, \theta)` for fixed responsibilities.

    :math:`N_k = \sum_n r_{nk}`, :math:`\pi_k = N_k / N`,
    :math:`\mu_k = \frac{1}{N_k}\sum_n r_{nk} x_n`,
    :math:`\Sigma_k = \frac{1}{N_k}\sum_n r_{nk}(x_n - \mu_k)(x_n - \mu_k)^\top + \epsilon I`.

    Args:
        X: Data, shape ``(N, D)``.
        resp: Responsibilities, shape ``(N, K)``.
        reg_covar: Added to each covariance's diagonal (as scikit-learn does) to keep it SPD.

    Returns:
        ``(weights (K,), means (K, D), covs (K, D, D))``.
    """
    X = as_float_array("X", X, 2)
    resp = as_float_array("resp", resp, 2)
    if resp.shape[0] != X.shape[0]:
        raise ValueError(f"resp has {resp.shape[0]} rows but X has {X.shape[0]}")
    counts = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    weights = counts / counts.sum()
    means = (resp.T @ X) / counts[:, None]
    centered = X[None, :, :] - means[:, None, :]  # (K, N, D)
    covs = (
        np.einsum("kn,knd,kne->kde", resp.T, centered, centered) / counts[:, None, None]
    )
    covs += reg_covar * np.eye(X.shape[1])[None]
    return weights, means, covs


def sample_gmm(
    n: int, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points and their component labels from a mixture (seeded, no global RNG)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(weights), size=n, p=np.asarray(weights) / np.sum(weights))
    chols = np.linalg.cholesky(covs)
    noise = rng.standard_normal((n, means.shape[1]))
    points = means[labels] + np.einsum("nde,ne->nd", chols[labels], noise)
    return points, labels


def init_params(
    X: np.ndarray, n_components: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start EM: equal weights, means at random data points, covariances at the data's."""
    X = as_float_array("X", X, 2)
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], size=n_components, replace=False)].copy()
    cov = np.atleast_2d(np.cov(X, rowvar=False)) + 1e-6 * np.eye(X.shape[1])
    return (
        np.full(n_components, 1.0 / n_components),
        means,
        np.repeat(cov[None], n_components, 0),
    )


@dataclass
class EMResult:
    """Fitted parameters, the last responsibilities and the log-likelihood per iteration."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    resp: np.ndarray
    log_likelihoods: list[float] = field(default_factory=list)


def fit_em(
    X: np.ndarray,
    n_components: int,
    e_step: EStep,
    *,
    n_iter: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
    show_progress: bool = True,
) -> EMResult:
    """Run EM with the given ``e_step`` and :func:`m_step` until the log-likelihood settles.

    Args:
        X: Data, shape ``(N, D)``.
        n_components: Number of components ``K``.
        e_step: ``e_step(X, weights, means, covs) -> (resp, log_likelihood)``.
        n_iter: Maximum iterations.
        tol: Stop when the log-likelihood improves by less than this.
        seed: Seed of the initialisation.
        show_progress: Show a progress bar.

    Returns:
        An :class:`EMResult`; its ``log_likelihoods`` never decrease for a correct E-step.
    """
    weights, means, covs = init_params(X, n_components, seed)
    history: list[float] = []
    resp = np.full((len(X), n_components), 1.0 / n_components)
    bar = progress(range(n_iter), desc="EM", disable=not show_progress)
    for _ in bar:
        resp, log_likelihood = e_step(X, weights, means, covs)  # E-step
        history.append(float(log_likelihood))
        weights, means, covs = m_step(X, resp)  # M-step
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            finish_early(bar, len(history), "converged")
            break
    return EMResult(weights, means, covs, resp, history)


def align_components(
    reference_means: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    resp: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    r"""Reorder a fit's components to match a reference mixture (for plotting in the same colours).

    EM's component labels are arbitrary; the permutation :math:`\pi` minimising
    :math:`\sum_k \lVert \mu^{\text{ref}}_k - \mu_{\pi(k)} \rVert^2` (Hungarian algorithm) makes
    component ``k`` of the fit the one closest to component ``k`` of the reference.

    Args:
        reference_means: ``(K, D)``.
        weights, means, covs: The fit, ``(K,)``, ``(K, D)``, ``(K, D, D)``.
        resp: Optional responsibilities ``(N, K)``, reordered along axis 1.

    Returns:
        ``(weights, means, covs)`` reordered, plus ``resp`` when given.
    """
    from scipy.optimize import linear_sum_assignment

    reference_means = as_float_array("reference_means", reference_means, 2)
    means = as_float_array("means", means, 2)
    if reference_means.shape != means.shape:
        raise ValueError(
            f"reference_means {reference_means.shape} and means {means.shape} differ in shape"
        )
    cost = ((reference_means[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    _, order = linear_sum_assignment(cost)
    out = (np.asarray(weights)[order], means[order], np.asarray(covs)[order])
    return out if resp is None else (*out, np.asarray(resp)[:, order])
