"""Corpus for ``01_em``: correct variants (full marks) and mutants named after their bug.

The mutants follow the catalogue of realistic student bugs (anchors-gradient-testing.md §4.1)
plus free-energy bugs. Each is a complete, plausible student solution with one mistake.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from scipy.special import logsumexp, softmax, xlogy
from scipy.stats import entropy, multivariate_normal

from tests.corpus import equivalent, mutant, variant

LOG_2PI = np.log(2 * np.pi)


# --------------------------------------------------------------------------- building blocks


def _log_gauss_cholesky(X, mean, cov):
    """Correct log N(x; mean, cov) for every row of X, via a Cholesky factor."""
    chol = np.linalg.cholesky(cov)
    whitened = np.linalg.solve(chol, (X - mean).T)  # (D, N)
    log_det = 2 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (X.shape[1] * LOG_2PI + log_det + np.sum(whitened**2, axis=0))


def _log_joint(X, weights, means, covs):
    return np.stack(
        [
            np.log(w) + _log_gauss_cholesky(X, m, c)
            for w, m, c in zip(weights, means, covs)
        ],
        axis=1,
    )


def _normalise(log_p):
    log_evidence = logsumexp(log_p, axis=1, keepdims=True)
    return np.exp(log_p - log_evidence), float(log_evidence.sum())


def _free_energy(log_p, q):
    return float(-(np.sum(np.where(q > 0, q * log_p, 0.0)) - xlogy(q, q).sum()))


# --------------------------------------------------------------------------- log_joint variants


@variant("log_joint")
def log_joint_loop_over_points(X, weights, means, covs):
    N, K = len(X), len(weights)
    out = np.zeros((N, K))
    for n in range(N):
        for k in range(K):
            diff = X[n] - means[k]
            _sign, log_det = np.linalg.slogdet(covs[k])
            maha = diff @ np.linalg.solve(covs[k], diff)
            out[n, k] = np.log(weights[k]) - 0.5 * (
                len(diff) * np.log(2 * np.pi) + log_det + maha
            )
    return out


@variant("log_joint")
def log_joint_scipy_multivariate_normal(X, weights, means, covs):
    return np.column_stack(
        [
            np.log(w) + multivariate_normal(mean=m, cov=c).logpdf(X)
            for w, m, c in zip(weights, means, covs)
        ]
    )


@variant("log_joint")
def log_joint_eigendecomposition(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        eigenvalues, eigenvectors = np.linalg.eigh(c)
        projected = (X - m) @ eigenvectors  # coordinates in the eigenbasis
        maha = np.sum(projected**2 / eigenvalues, axis=1)
        columns.append(
            np.log(w)
            - 0.5 * (X.shape[1] * LOG_2PI + np.sum(np.log(eigenvalues)) + maha)
        )
    return np.stack(columns, axis=1)


@variant("log_joint")
def log_joint_batched_cho_solve(X, weights, means, covs):
    diff = X[:, None, :] - means[None, :, :]  # (N, K, D)
    out = np.empty(diff.shape[:2])
    for k in range(len(weights)):
        factor = cho_factor(covs[k], lower=True)
        maha = np.einsum("nd,dn->n", diff[:, k], cho_solve(factor, diff[:, k].T))
        log_det = 2 * np.log(np.diag(factor[0])).sum()
        out[:, k] = np.log(weights[k]) - 0.5 * (X.shape[1] * LOG_2PI + log_det + maha)
    return out


@variant("log_joint")
def log_joint_torch_distributions(X, weights, means, covs):
    # A torch float64 tensor is accepted (converted), as long as it is float64.
    dist = torch.distributions.MultivariateNormal(
        torch.as_tensor(means), covariance_matrix=torch.as_tensor(covs)
    )
    return torch.log(torch.as_tensor(weights)) + dist.log_prob(
        torch.as_tensor(X)[:, None, :]
    )


@variant("log_joint")
def log_joint_explicit_inverse(X, weights, means, covs):
    # The most common student route: inv and slogdet (fine in float64 at these conditions).
    out = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        maha = np.einsum("nd,de,ne->n", diff, np.linalg.inv(c), diff)
        out.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.linalg.slogdet(c)[1] + maha)
        )
    return np.array(out).T


# --------------------------------------------------------------------------- log_joint mutants


@mutant("log_joint")
def log_joint_weights_squared(X, weights, means, covs):
    comps = [_log_gauss_cholesky(X, m, c) for m, c in zip(means, covs)]
    return 2 * np.log(weights) + np.stack(comps, axis=1)


@mutant("log_joint")
def log_joint_missing_weights(X, weights, means, covs):
    return np.stack([_log_gauss_cholesky(X, m, c) for m, c in zip(means, covs)], axis=1)


@mutant("log_joint")
def log_joint_adds_weights_not_log(X, weights, means, covs):
    return np.stack(
        [w + _log_gauss_cholesky(X, m, c) for w, m, c in zip(weights, means, covs)],
        axis=1,
    )


@mutant("log_joint")
def log_joint_variance_as_std(X, weights, means, covs):
    # Treats the covariance as a "standard deviation" matrix and squares it.
    return np.stack(
        [
            np.log(w) + _log_gauss_cholesky(X, m, c @ c)
            for w, m, c in zip(weights, means, covs)
        ],
        axis=1,
    )


@mutant("log_joint")
def log_joint_drops_normaliser(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        columns.append(
            np.log(w) - 0.5 * np.sum(diff * np.linalg.solve(c, diff.T).T, axis=1)
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_sigma_not_inverse(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        maha = np.sum(diff @ c * diff, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.linalg.slogdet(c)[1] + maha)
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_missing_half_in_exponent(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        maha = np.sum(diff * np.linalg.solve(c, diff.T).T, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.linalg.slogdet(c)[1]) - maha
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_missing_half_on_log_det(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        maha = np.sum(diff * np.linalg.solve(c, diff.T).T, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + maha) - np.linalg.slogdet(c)[1]
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_log_of_det(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        diff = X - m
        maha = np.sum(diff * (np.linalg.inv(c) @ diff.T).T, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.log(np.linalg.det(c)) + maha)
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_returns_k_by_n(X, weights, means, covs):
    return _log_joint(X, weights, means, covs).T


@mutant("log_joint")
def log_joint_cholesky_wrong_triangle(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        chol = np.linalg.cholesky(c)
        whitened = np.linalg.solve(chol.T, (X - m).T)  # L^T instead of L
        log_det = 2 * np.sum(np.log(np.diag(chol)))
        columns.append(
            np.log(w)
            - 0.5 * (X.shape[1] * LOG_2PI + log_det + np.sum(whitened**2, axis=0))
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_diagonal_covariance_only(X, weights, means, covs):
    columns = []
    for w, m, c in zip(weights, means, covs):
        var = np.diag(c)
        maha = np.sum((X - m) ** 2 / var, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.sum(np.log(var)) + maha)
        )
    return np.stack(columns, axis=1)


@mutant("log_joint")
def log_joint_float32(X, weights, means, covs):
    out = _log_joint(
        X.astype(np.float32),
        weights.astype(np.float32),
        means.astype(np.float32),
        covs.astype(np.float32),
    )
    return out.astype(np.float32)


@mutant("log_joint")
def log_joint_float32_internally(X, weights, means, covs):
    X32, m32, c32 = (
        X.astype(np.float32),
        means.astype(np.float32),
        covs.astype(np.float32),
    )
    columns = []
    for w, m, c in zip(weights, m32, c32):
        diff = X32 - m
        maha = np.sum(diff * np.linalg.solve(c, diff.T).T, axis=1)
        columns.append(
            np.log(w) - 0.5 * (X.shape[1] * LOG_2PI + np.linalg.slogdet(c)[1] + maha)
        )
    return np.stack(columns, axis=1).astype(np.float64)


@mutant("log_joint")
def log_joint_adds_jitter(X, weights, means, covs):
    eye = np.eye(X.shape[1])
    return _log_joint(X, weights, means, covs + 1e-6 * eye)


@mutant("log_joint")
def log_joint_regularises_covs_in_place(X, weights, means, covs):
    covs += 1e-12 * np.eye(X.shape[1])  # tiny, but the caller's covs change
    return _log_joint(X, weights, means, covs)


@mutant("log_joint")
def log_joint_first_covariance_for_all(X, weights, means, covs):
    return np.stack(
        [
            np.log(w) + _log_gauss_cholesky(X, m, covs[0])
            for w, m in zip(weights, means)
        ],
        axis=1,
    )


equivalent(
    "log_joint",
    "log_joint_symmetrises_covs",
    "(Sigma + Sigma^T)/2 equals Sigma for the symmetric covariances the contract promises",
)


# --------------------------------------------------------------------------- e_step variants


@variant("e_step")
def e_step_log_domain_scipy_logsumexp(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    log_evidence = logsumexp(log_p, axis=1)
    return np.exp(log_p - log_evidence[:, None]), log_evidence.sum()


@variant("e_step")
def e_step_loop_with_max_shift(X, weights, means, covs):
    N, K = len(X), len(weights)
    resp = np.zeros((N, K))
    loglik = 0.0
    for n in range(N):
        a = np.array(
            [
                np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(X[n])
                for k in range(K)
            ]
        )
        shift = a.max()
        unnormalised = np.exp(a - shift)
        total = unnormalised.sum()
        resp[n] = unnormalised / total
        loglik += shift + np.log(total)
    return resp, loglik


@variant("e_step")
def e_step_eigh_and_softmax(X, weights, means, covs):
    log_p = log_joint_eigendecomposition(X, weights, means, covs)
    return softmax(log_p, axis=1), float(logsumexp(log_p, axis=1).sum())


@variant("e_step")
def e_step_torch_float64(X, weights, means, covs):
    dist = torch.distributions.MultivariateNormal(
        torch.as_tensor(means), covariance_matrix=torch.as_tensor(covs)
    )
    log_p = torch.log(torch.as_tensor(weights)) + dist.log_prob(
        torch.as_tensor(X)[:, None, :]
    )
    log_evidence = torch.logsumexp(log_p, dim=1)
    return torch.exp(log_p - log_evidence[:, None]).numpy(), log_evidence.sum().item()


@variant("e_step")
def e_step_inverse_and_divide_after_max_shift(X, weights, means, covs):
    log_p = log_joint_explicit_inverse(X, weights, means, covs)
    top = log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p - top)
    total = p.sum(axis=1, keepdims=True)
    return p / total, float(np.sum(top + np.log(total)))


# --------------------------------------------------------------------------- e_step mutants


@mutant("e_step")
def e_step_normalises_over_data(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    resp = np.exp(log_p - logsumexp(log_p, axis=0, keepdims=True))
    return resp, float(logsumexp(log_p, axis=1).sum())


@mutant("e_step")
def e_step_naive_exp(X, weights, means, covs):
    p = np.exp(_log_joint(X, weights, means, covs))
    evidence = p.sum(axis=1, keepdims=True)
    return p / evidence, float(np.log(evidence).sum())


@mutant("e_step")
def e_step_loglik_naive_log_sum_exp(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    resp, _ = _normalise(log_p)
    return resp, float(np.log(np.exp(log_p).sum(axis=1)).sum())


@mutant("e_step")
def e_step_max_over_wrong_axis(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    shifted = np.exp(log_p - log_p.max(axis=0, keepdims=True))  # per-component shift
    resp = shifted / shifted.sum(axis=1, keepdims=True)
    return resp, float(logsumexp(log_p, axis=1).sum())


@mutant("e_step")
def e_step_missing_weights(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs) - np.log(weights)
    return _normalise(log_p)


@mutant("e_step")
def e_step_weights_squared(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs) + np.log(weights)
    resp, _ = _normalise(log_p)
    return resp, _normalise(_log_joint(X, weights, means, covs))[1]


@mutant("e_step")
def e_step_variance_as_std(X, weights, means, covs):
    return _normalise(log_joint_variance_as_std(X, weights, means, covs))


@mutant("e_step")
def e_step_drops_normaliser(X, weights, means, covs):
    return _normalise(log_joint_drops_normaliser(X, weights, means, covs))


@mutant("e_step")
def e_step_sigma_not_inverse(X, weights, means, covs):
    return _normalise(log_joint_sigma_not_inverse(X, weights, means, covs))


@mutant("e_step")
def e_step_missing_half(X, weights, means, covs):
    return _normalise(log_joint_missing_half_in_exponent(X, weights, means, covs))


@mutant("e_step")
def e_step_diagonal_covariance_only(X, weights, means, covs):
    return _normalise(log_joint_diagonal_covariance_only(X, weights, means, covs))


@mutant("e_step")
def e_step_transposed_broadcasting(X, weights, means, covs):
    K, D = means.shape
    diff = X[None, :, :] - means[:, None, :]  # (K, N, D)
    log_p = np.empty((K, len(X)))
    for k in range(K):
        maha = np.sum(diff[k] * np.linalg.solve(covs[k], diff[k].T).T, axis=1)
        log_p[k] = np.log(weights[k]) - 0.5 * (
            D * LOG_2PI + np.linalg.slogdet(covs[k])[1] + maha
        )
    return _normalise(log_p.reshape(len(X), K))  # reshape where a transpose was needed


@mutant("e_step")
def e_step_hard_assignments(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    resp = np.eye(len(weights))[np.argmax(log_p, axis=1)]
    return resp, float(logsumexp(log_p, axis=1).sum())


@mutant("e_step")
def e_step_returns_log_resp(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    log_evidence = logsumexp(log_p, axis=1, keepdims=True)
    return log_p - log_evidence, float(log_evidence.sum())


@mutant("e_step")
def e_step_divides_by_n(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    return resp / len(X), loglik


@mutant("e_step")
def e_step_centres_X_in_place(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    X -= X.mean(axis=0)  # "standardise" the data, modifying the caller's array
    return resp, loglik


@mutant("e_step")
def e_step_clamps_without_renormalising(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    return np.clip(resp, 1e-10, 1.0), loglik


@mutant("e_step")
def e_step_float32(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    return resp.astype(np.float32), np.float32(loglik)


@mutant("e_step")
def e_step_float32_internally(X, weights, means, covs):
    log_p = log_joint_float32_internally(X, weights, means, covs)
    return _normalise(log_p)


@mutant("e_step")
def e_step_loglik_mean_over_points(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    return resp, loglik / len(X)


@mutant("e_step")
def e_step_loglik_negated(X, weights, means, covs):
    resp, loglik = _normalise(_log_joint(X, weights, means, covs))
    return resp, -loglik


@mutant("e_step")
def e_step_loglik_resp_entropy(X, weights, means, covs):
    resp, _ = _normalise(_log_joint(X, weights, means, covs))
    return resp, float(xlogy(resp, resp).sum())


@mutant("e_step")
def e_step_loglik_from_max(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return _normalise(log_p)[0], float(log_p.max(axis=1).sum())


@mutant("e_step")
def e_step_loglik_expected_complete_data(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    resp, _ = _normalise(log_p)
    return resp, float(np.sum(resp * log_p))


@mutant("e_step")
def e_step_per_point_loglik(X, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return _normalise(log_p)[0], logsumexp(log_p, axis=1)


@mutant("e_step")
def e_step_log_of_det(X, weights, means, covs):
    return _normalise(log_joint_log_of_det(X, weights, means, covs))


@mutant("e_step")
def e_step_adds_jitter(X, weights, means, covs):
    return _normalise(_log_joint(X, weights, means, covs + 1e-6 * np.eye(X.shape[1])))


equivalent(
    "e_step",
    "e_step_renormalises_weights",
    "weights already sum to 1: dividing by their sum changes nothing",
)
equivalent(
    "e_step",
    "e_step_clamps_at_1e-300_without_renormalising",
    "a floor of 1e-300 changes row sums by (K-1)e-300, below float64 resolution of 1: invisible and harmless",
)


# --------------------------------------------------------------------------- free_energy variants


@variant("free_energy")
def free_energy_xlogy(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return _free_energy(log_p, resp)


@variant("free_energy")
def free_energy_loop_skipping_zeros(X, resp, weights, means, covs):
    log_p = log_joint_scipy_multivariate_normal(X, weights, means, covs)
    total = 0.0
    for n in range(resp.shape[0]):
        for k in range(resp.shape[1]):
            if resp[n, k] > 0:
                total += resp[n, k] * (log_p[n, k] - np.log(resp[n, k]))
    return -total


@variant("free_energy")
def free_energy_gibbs_form(X, resp, weights, means, covs):
    # F = -log p(X) + sum_n KL(q_n || p(z_n | x_n)).
    log_p = log_joint_eigendecomposition(X, weights, means, covs)
    log_evidence = logsumexp(log_p, axis=1, keepdims=True)
    kl = np.sum(
        xlogy(resp, resp) - np.where(resp > 0, resp * (log_p - log_evidence), 0.0)
    )
    return float(-log_evidence.sum() + kl)


@variant("free_energy")
def free_energy_scipy_entropy(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    energy = -np.sum(np.where(resp > 0, resp * log_p, 0.0))
    return float(energy - entropy(resp, axis=1).sum())


@variant("free_energy")
def free_energy_nansum(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(
            resp * (log_p - np.log(resp))
        )  # 0 * -inf = nan, dropped by nansum


# --------------------------------------------------------------------------- free_energy mutants


@mutant("free_energy")
def free_energy_missing_entropy(X, resp, weights, means, covs):
    return float(-np.sum(resp * _log_joint(X, weights, means, covs)))


@mutant("free_energy")
def free_energy_wrong_sign(X, resp, weights, means, covs):
    return -_free_energy(_log_joint(X, weights, means, covs), resp)


@mutant("free_energy")
def free_energy_entropy_sign_flipped(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return float(-np.sum(resp * log_p) - xlogy(resp, resp).sum())


@mutant("free_energy")
def free_energy_nan_at_zero(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return float(-np.sum(resp * (log_p - np.log(resp))))


@mutant("free_energy")
def free_energy_log_resp_plus_eps(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    return float(-np.sum(resp * (log_p - np.log(resp + 1e-6))))


@mutant("free_energy")
def free_energy_mean_over_points(X, resp, weights, means, covs):
    return _free_energy(_log_joint(X, weights, means, covs), resp) / len(X)


@mutant("free_energy")
def free_energy_ignores_q(X, resp, weights, means, covs):
    return -float(logsumexp(_log_joint(X, weights, means, covs), axis=1).sum())


@mutant("free_energy")
def free_energy_entropy_of_posterior(X, resp, weights, means, covs):
    log_p = _log_joint(X, weights, means, covs)
    posterior, _ = _normalise(log_p)
    return float(-np.sum(resp * log_p) + xlogy(posterior, posterior).sum())


@mutant("free_energy")
def free_energy_missing_weights(X, resp, weights, means, covs):
    return _free_energy(_log_joint(X, weights, means, covs) - np.log(weights), resp)


@mutant("free_energy")
def free_energy_clips_resp_in_place(X, resp, weights, means, covs):
    np.clip(resp, 1e-300, 1.0, out=resp)  # "avoid log 0" on the caller's array
    return _free_energy(_log_joint(X, weights, means, covs), resp)


@mutant("free_energy")
def free_energy_float32(X, resp, weights, means, covs):
    return np.float32(_free_energy(_log_joint(X, weights, means, covs), resp))


@mutant("free_energy")
def free_energy_naive_log_density(X, resp, weights, means, covs):
    # log of the density instead of the log density: log(0) = -inf far from the components.
    with np.errstate(divide="ignore"):
        log_p = np.log(np.exp(_log_joint(X, weights, means, covs)))
    return _free_energy(log_p, resp)


equivalent(
    "free_energy",
    "free_energy_log_resp_plus_1e-12",
    "log(q + 1e-12) shifts F by at most N*K*1e-12, below float64 agreement between correct algorithms",
)
