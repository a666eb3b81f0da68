r"""Reference solutions for ``01_em``: the E-step and the free energy of a Gaussian mixture.

The model: :math:`p(x, z = k \mid \theta) = \pi_k \, \mathcal{N}(x; \mu_k, \Sigma_k)`.
Everything is computed in log space with a Cholesky factor per component, so points
thousands of standard deviations from every component still give finite, one-hot
responsibilities.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import xlogy

from course_lib._validate import check_gmm

__all__ = ["e_step", "free_energy", "log_joint"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def log_joint(
    X: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> np.ndarray:
    r"""Log joint :math:`\log \pi_k + \log \mathcal{N}(x_n; \mu_k, \Sigma_k)` for every pair.

    Args:
        X: Data, shape ``(N, D)``.
        weights: Mixture weights :math:`\pi`, shape ``(K,)``, positive, summing to 1.
        means: Component means, shape ``(K, D)``.
        covs: Component covariances, shape ``(K, D, D)``, symmetric positive definite.

    Returns:
        Array of shape ``(N, K)``.

    Raises:
        ValueError: on inconsistent shapes, invalid weights or a covariance that is not
            positive definite.
    """
    X, weights, means, covs = check_gmm(X, weights, means, covs)
    n_points, dim = X.shape
    out = np.empty((n_points, len(weights)))
    for k, (mean, cov) in enumerate(zip(means, covs)):  # loop over K components only
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as error:
            raise ValueError(f"covs[{k}] is not symmetric positive definite") from error
        # Whitened residuals y = L^{-1}(x - mu): Mahalanobis distance = |y|^2.
        chol_inv = solve_triangular(chol, np.eye(dim), lower=True)
        whitened = X @ chol_inv.T - chol_inv @ mean
        mahalanobis = np.einsum("nd,nd->n", whitened, whitened)
        log_det = 2.0 * np.log(np.diagonal(chol)).sum()
        out[:, k] = np.log(weights[k]) - 0.5 * (dim * _LOG_2PI + log_det + mahalanobis)
    return out


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """Stable log-sum-exp over the last axis (faster than scipy's for 2-D float64)."""
    shift = a.max(axis=1)
    return shift + np.log(np.exp(a - shift[:, None]).sum(axis=1))


def e_step(
    X: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> tuple[np.ndarray, float]:
    r"""E-step: responsibilities :math:`r_{nk} = p(z_n = k \mid x_n, \theta)` and the log-likelihood.

    :math:`\log r_{nk} = a_{nk} - \operatorname{logsumexp}_j a_{nj}` with
    :math:`a_{nk} = \log \pi_k + \log \mathcal{N}(x_n; \mu_k, \Sigma_k)`, and
    :math:`\log p(X \mid \theta) = \sum_n \operatorname{logsumexp}_k a_{nk}`.

    Args:
        X: Data, shape ``(N, D)``.
        weights: Mixture weights, shape ``(K,)``.
        means: Component means, shape ``(K, D)``.
        covs: Component covariances, shape ``(K, D, D)``.

    Returns:
        ``(resp, log_likelihood)``: responsibilities of shape ``(N, K)`` whose rows sum to
        1, and the total log-likelihood :math:`\sum_n \log p(x_n \mid \theta)` as a float.
    """
    log_p = log_joint(X, weights, means, covs)
    log_evidence = _logsumexp_rows(log_p)
    resp = np.exp(log_p - log_evidence[:, None])
    return resp, float(log_evidence.sum())


def free_energy(
    X: np.ndarray,
    resp: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
) -> float:
    r"""Free energy :math:`F(q, \theta) = -\sum_n \sum_k q_{nk} (\log p(x_n, z_n = k \mid \theta) - \log q_{nk})`.

    With :math:`0 \log 0 = 0`. :math:`F \ge -\log p(X \mid \theta)`, with equality exactly
    when ``resp`` is the E-step's posterior.

    Args:
        X: Data, shape ``(N, D)``.
        resp: Variational distribution :math:`q`, shape ``(N, K)``, rows on the simplex.
        weights: Mixture weights, shape ``(K,)``.
        means: Component means, shape ``(K, D)``.
        covs: Component covariances, shape ``(K, D, D)``.

    Returns:
        The free energy as a float.
    """
    log_p = log_joint(X, weights, means, covs)
    resp = np.asarray(resp, dtype=np.float64)
    if resp.shape != log_p.shape:
        raise ValueError(f"resp must have shape {log_p.shape}, got {resp.shape}")
    if np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0, atol=1e-8):
        raise ValueError(
            "every row of resp must be a distribution (non-negative, summing to 1)"
        )
    # resp * log_p is 0 where resp is 0; xlogy gives 0 log 0 = 0 for the entropy term.
    expected_log_joint = np.sum(np.where(resp > 0, resp * log_p, 0.0))
    return float(-(expected_log_joint - xlogy(resp, resp).sum()))
