"""Target models for variational inference, with known answers where they exist.

Each model is a picklable callable ``log_joint(z) -> (S,)`` for ``z`` of shape ``(S, dim)``
(float64), so the autograder can ship it to a sandboxed worker.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BayesianLogisticRegression",
    "Bimodal2D",
    "ConjugateGaussian",
    "CorrelatedGaussian2D",
]

_LOG_2PI = math.log(2.0 * math.pi)


class ConjugateGaussian:
    r"""Prior :math:`z \sim \mathcal{N}(m_0, s_0^2 I)`, data :math:`x_i \mid z \sim \mathcal{N}(z, s^2 I)`.

    The posterior is Gaussian with precision :math:`1/s_0^2 + n/s^2` per dimension; the
    evidence :math:`\log p(x)` is closed form. Data are given as an ``(n, dim)`` array.
    """

    def __init__(
        self,
        data: np.ndarray | Tensor,
        prior_mean: float = 0.0,
        prior_std: float = 1.0,
        noise_std: float = 1.0,
    ) -> None:
        self.data = torch.as_tensor(np.asarray(data, dtype=np.float64))
        if self.data.ndim != 2:
            raise ValueError(
                f"data must be (n, dim), got shape {tuple(self.data.shape)}"
            )
        if prior_std <= 0 or noise_std <= 0:
            raise ValueError("prior_std and noise_std must be positive")
        self.prior_mean, self.prior_std, self.noise_std = (
            float(prior_mean),
            float(prior_std),
            float(noise_std),
        )

    @property
    def dim(self) -> int:
        """Latent dimension."""
        return int(self.data.shape[1])

    def __call__(self, z: Tensor) -> Tensor:
        """:math:`\\log p(x, z)` for each row of ``z``: shape ``(S,)``."""
        prior = (
            -0.5 * ((z - self.prior_mean) / self.prior_std).square()
            - math.log(self.prior_std)
            - 0.5 * _LOG_2PI
        )
        residual = (
            self.data[None, :, :] - z[:, None, :]
        ) / self.noise_std  # (S, n, dim)
        likelihood = (
            -0.5 * residual.square() - math.log(self.noise_std) - 0.5 * _LOG_2PI
        )
        return prior.sum(dim=-1) + likelihood.sum(dim=(-2, -1))

    def posterior(self) -> tuple[Tensor, Tensor]:
        """Exact posterior ``(mean (dim,), log_sigma (dim,))``."""
        n = self.data.shape[0]
        precision = 1.0 / self.prior_std**2 + n / self.noise_std**2
        mean = (
            self.prior_mean / self.prior_std**2
            + self.data.sum(dim=0) / self.noise_std**2
        ) / precision
        return mean, torch.full(
            (self.dim,), -0.5 * math.log(precision), dtype=torch.float64
        )

    def log_evidence(self) -> float:
        r""":math:`\log p(x)`: per dimension, :math:`x \sim \mathcal{N}(m_0 \mathbf{1}, s^2 I + s_0^2 \mathbf{1}\mathbf{1}^\top)`."""
        n = self.data.shape[0]
        cov = self.noise_std**2 * torch.eye(n, dtype=torch.float64) + self.prior_std**2
        dist = torch.distributions.MultivariateNormal(
            torch.full((n,), self.prior_mean, dtype=torch.float64), cov
        )
        return float(dist.log_prob(self.data.T).sum())

    def __repr__(self) -> str:
        return f"ConjugateGaussian(n={self.data.shape[0]}, dim={self.dim}, prior_std={self.prior_std}, noise_std={self.noise_std})"


class BayesianLogisticRegression:
    r"""Logistic regression with a :math:`\mathcal{N}(0, \alpha^{-1} I)` prior on the weights.

    The default data set is scikit-learn's breast-cancer data (ships offline), standardised,
    with an intercept column. No closed form: compare against MCMC or long BBVI runs.
    """

    def __init__(
        self,
        features: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        prior_precision: float = 1.0,
        n_points: int | None = None,
    ) -> None:
        if features is None or labels is None:
            from sklearn.datasets import load_breast_cancer

            features, labels = load_breast_cancer(return_X_y=True)
        features = np.asarray(features, dtype=np.float64)[:n_points]
        labels = np.asarray(labels, dtype=np.float64)[:n_points]
        features = (features - features.mean(0)) / (features.std(0) + 1e-12)
        self.features = torch.as_tensor(
            np.hstack([np.ones((len(features), 1)), features])
        )
        self.labels = torch.as_tensor(labels)
        self.prior_precision = float(prior_precision)

    @property
    def dim(self) -> int:
        """Number of weights, intercept included."""
        return int(self.features.shape[1])

    def __call__(self, z: Tensor) -> Tensor:
        """:math:`\\log p(y, w)` for each row ``w`` of ``z``: shape ``(S,)``."""
        logits = z @ self.features.T  # (S, n)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, self.labels.expand_as(logits), reduction="none"
        ).sum(dim=-1)
        log_prior = -0.5 * self.prior_precision * z.square().sum(
            -1
        ) + 0.5 * self.dim * (math.log(self.prior_precision) - _LOG_2PI)
        return log_lik + log_prior


class Bimodal2D:
    """An equal mixture of two isotropic Gaussians in 2-D: mean-field q picks one mode."""

    def __init__(self, separation: float = 4.0, std: float = 1.0) -> None:
        self.separation, self.std = float(separation), float(std)

    dim = 2

    def __call__(self, z: Tensor) -> Tensor:
        """Normalised log density of each row: shape ``(S,)``."""
        centre = torch.tensor([self.separation / 2, 0.0], dtype=z.dtype)
        modes = torch.stack([z - centre, z + centre])  # (2, S, 2)
        log_comp = (
            -0.5 * (modes / self.std).square() - math.log(self.std) - 0.5 * _LOG_2PI
        ).sum(-1)
        return torch.logsumexp(log_comp, dim=0) - math.log(2.0)


class CorrelatedGaussian2D:
    r"""A normalised 2-D Gaussian :math:`\mathcal{N}(m, \Sigma)` with correlation :math:`\rho`.

    :math:`\Sigma = \begin{pmatrix} s_1^2 & \rho s_1 s_2 \\ \rho s_1 s_2 & s_2^2 \end{pmatrix}`.
    It is unimodal, so a Gaussian :math:`q` can match it exactly, but not a *factorised* one:
    the best mean-field :math:`q` under :math:`\mathrm{KL}(q \,\|\, p)` has variances
    :math:`1 / \Lambda_{dd} = (1 - \rho^2)\,\Sigma_{dd}` (:math:`\Lambda = \Sigma^{-1}`), below
    the marginal variances :math:`\Sigma_{dd}` (Bishop, PRML §10.1.2). The density is
    normalised, so :math:`\log Z = 0`.
    """

    dim = 2

    def __init__(
        self,
        mean: tuple[float, float] = (1.0, -0.5),
        stds: tuple[float, float] = (1.5, 1.0),
        correlation: float = 0.9,
    ) -> None:
        if not -1.0 < correlation < 1.0 or min(stds) <= 0:
            raise ValueError(
                f"need stds > 0 and -1 < correlation < 1, got {stds}, {correlation}"
            )
        self.mean = torch.tensor(mean, dtype=torch.float64)
        self.stds = tuple(float(s) for s in stds)
        self.correlation = float(correlation)
        s1, s2 = self.stds
        off = self.correlation * s1 * s2
        self.covariance = torch.tensor(
            [[s1 * s1, off], [off, s2 * s2]], dtype=torch.float64
        )

    def __call__(self, z: Tensor) -> Tensor:
        """Normalised log density of each row: shape ``(S,)``."""
        dist = torch.distributions.MultivariateNormal(
            self.mean.to(z.dtype), covariance_matrix=self.covariance.to(z.dtype)
        )
        return dist.log_prob(z)

    def mean_field_optimum(self) -> tuple[Tensor, Tensor]:
        r"""``(mu, log_sigma)`` of the best factorised Gaussian: :math:`\mu = m`, :math:`\sigma_d^2 = 1/\Lambda_{dd}`."""
        precision = torch.linalg.inv(self.covariance)
        return self.mean.clone(), -0.5 * torch.log(torch.diagonal(precision))

    def __repr__(self) -> str:
        return (
            f"CorrelatedGaussian2D(stds={self.stds}, correlation={self.correlation:g})"
        )
