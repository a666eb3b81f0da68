"""The E-step, log-likelihood and free energy against scikit-learn and scipy (oracles we did not write)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from course_lib.gmm import fit_em, m_step, sample_gmm
from course_lib.reference.em import e_step, free_energy, log_joint


@st.composite
def mixtures(draw, condition: float = 10.0):
    """A random mixture with distinct weights and full covariances; sizes N, K, D drawn distinct."""
    n, k, d = draw(st.lists(st.integers(2, 8), min_size=3, max_size=3, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights = rng.dirichlet(np.full(k, 2.0)) + 0.02
    weights /= weights.sum()
    means = rng.normal(scale=3.0, size=(k, d))
    covs = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        eig = np.geomspace(1.0, condition, d) * rng.uniform(0.2, 2.0)
        covs.append((q * eig) @ q.T)
    X = rng.normal(scale=4.0, size=(n, d))
    return X, weights, means, np.stack(covs)


def _sklearn(weights, means, covs) -> GaussianMixture:
    gmm = GaussianMixture(n_components=len(weights), covariance_type="full")
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covs
    gmm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(covs))
    return gmm


@given(mixtures())
def test_e_step_matches_sklearn(problem):
    X, weights, means, covs = problem
    resp, log_likelihood = e_step(X, weights, means, covs)
    oracle = _sklearn(weights, means, covs)
    np.testing.assert_allclose(resp, oracle.predict_proba(X), rtol=1e-7, atol=1e-10)
    assert log_likelihood == pytest.approx(oracle.score_samples(X).sum(), rel=1e-9)


@given(mixtures(condition=1e6))
def test_log_joint_matches_scipy_on_ill_conditioned_covariances(problem):
    X, weights, means, covs = problem
    expected = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X)
            for w, m, c in zip(weights, means, covs)
        ],
        axis=1,
    ).reshape(len(X), -1)
    np.testing.assert_allclose(log_joint(X, weights, means, covs), expected, rtol=1e-7)
    _, log_likelihood = e_step(X, weights, means, covs)
    assert log_likelihood == pytest.approx(logsumexp(expected, axis=1).sum(), rel=1e-9)


@given(mixtures())
def test_far_points_give_finite_one_hot_responsibilities(problem):
    X, weights, means, covs = problem
    far = X * 1e4  # thousands of standard deviations from every component
    resp, log_likelihood = e_step(far, weights, means, covs)
    assert np.all(np.isfinite(resp)) and np.isfinite(log_likelihood)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
    expected = np.stack(
        [multivariate_normal(m, c).logpdf(far) for m, c in zip(means, covs)], 1
    ).reshape(len(X), -1)
    assert log_likelihood == pytest.approx(
        logsumexp(expected + np.log(weights), axis=1).sum(), rel=1e-9
    )


@given(mixtures(), st.integers(0, 2**32 - 1))
def test_free_energy_is_minus_log_likelihood_exactly_at_the_posterior(problem, seed):
    X, weights, means, covs = problem
    resp, log_likelihood = e_step(X, weights, means, covs)
    assert free_energy(X, resp, weights, means, covs) == pytest.approx(
        -log_likelihood, rel=1e-10
    )
    other = np.random.default_rng(seed).dirichlet(np.ones(len(weights)), size=len(X))
    other[0] = np.eye(len(weights))[0]  # exact zeros: 0 log 0 = 0
    assert free_energy(X, other, weights, means, covs) >= -log_likelihood - 1e-9


def test_m_step_matches_sklearn_parameter_estimates():
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    resp = rng.dirichlet(np.ones(4), size=200)
    weights, means, covs = m_step(X, resp)
    counts, sk_means, sk_covs = _estimate_gaussian_parameters(X, resp, 1e-6, "full")
    np.testing.assert_allclose(weights, counts / counts.sum())
    np.testing.assert_allclose(means, sk_means)
    np.testing.assert_allclose(covs, sk_covs)


def test_em_log_likelihood_never_decreases_and_matches_sklearn_fit():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 4.0]])
    covs = np.stack([np.eye(2), [[2.0, 0.8], [0.8, 1.0]], 0.5 * np.eye(2)])
    X, _ = sample_gmm(600, weights, means, covs, seed=3)
    result = fit_em(X, 3, e_step, n_iter=200, tol=1e-10, show_progress=False)
    assert np.all(np.diff(result.log_likelihoods) >= -1e-8)
    oracle = GaussianMixture(3, tol=1e-10, max_iter=500, n_init=5, random_state=0).fit(
        X
    )
    assert result.log_likelihoods[-1] / len(X) == pytest.approx(
        oracle.score(X), abs=1e-3
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": np.array([0.5, 0.6])}, "sum to 1"),
        ({"means": np.zeros((2, 3))}, "columns"),
        ({"covs": np.stack([np.eye(2), -np.eye(2)])}, "positive definite"),
        ({"X": np.full((3, 2), np.nan)}, "NaN"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, message):
    args = {
        "X": np.zeros((3, 2)),
        "weights": np.array([0.5, 0.5]),
        "means": np.zeros((2, 2)),
        "covs": np.stack([np.eye(2)] * 2),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        e_step(**args)


def _three_clusters():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 4.0]])
    covs = np.stack([np.eye(2), [[2.0, 0.8], [0.8, 1.0]], 0.5 * np.eye(2)])
    X, _ = sample_gmm(300, weights, means, covs, seed=3)
    return X, weights, means, covs


def test_em_progress_bar_closes_complete_when_em_converges_early(capsys):
    """A converged run must not leave its bar at a fraction (a red bar in Jupyter)."""
    X, *_ = _three_clusters()
    result = fit_em(X, 3, e_step, n_iter=500, tol=1e-3, show_progress=True)
    done = len(result.log_likelihoods)
    assert done < 500  # converged early: the case that used to stop at a fraction
    final = capsys.readouterr().out.split("\r")[-1]
    assert "100%" in final and f"{done}/{done}" in final and "converged" in final


def test_finish_early_leaves_plain_iterables_alone():
    from course_lib.progress import finish_early, progress

    items = progress(range(3), disable=True)
    finish_early(items, 1, "converged")  # no bar: nothing to do, no error
    assert list(items) == [0, 1, 2]


def test_align_components_matches_the_reference_order():
    from course_lib.gmm import align_components

    X, weights, means, covs = _three_clusters()
    order = np.array([2, 0, 1])
    resp = np.random.default_rng(0).dirichlet(np.ones(3), size=len(X))
    shuffled = (weights[order], means[order] + 0.1, covs[order], resp[:, order])
    w, m, c, r = align_components(means, *shuffled)
    np.testing.assert_allclose(w, weights)
    np.testing.assert_allclose(m, means + 0.1)
    np.testing.assert_allclose(c, covs)
    np.testing.assert_allclose(r, resp)
    with pytest.raises(ValueError, match="differ in shape"):
        align_components(means[:2], weights, means, covs)


def test_plot_bound_and_gap_draws_two_panels_and_rejects_odd_lengths():
    import matplotlib

    matplotlib.use("Agg")
    from course_lib.plotting.em import plot_bound_and_gap

    fig = plot_bound_and_gap([10.0, 9.0, 8.5, 8.4], [10.0, 8.0, 8.5, 8.3])
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[1].patches]
    np.testing.assert_allclose(heights, [0.0, 1.0, 0.0, 0.1])
    with pytest.raises(ValueError, match="even length"):
        plot_bound_and_gap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
