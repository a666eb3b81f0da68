r"""The judge's closed forms for ``04_elbo``, none of them a graded task's answer for a
submission's inputs: moment-matched noise, :math:`\mathrm{KL}(q \,\|\, p(z \mid x))` for
diagonal Gaussians, the pathwise identity's expected gradient (no task's output), the KL's
gradient in :math:`\log\sigma`, and the tabulated answers read back
(``autograder/checks/elbo_answers.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autograder import tables
from autograder.checks.elbo.problems import (
    MIXTURE_FIELDS,
    MixtureCase,
    QCase,
    mixture_key,
    score_key,
)
from course_lib.models import ConjugateGaussian


def moment_matched(eps: Tensor) -> Tensor:
    """``eps`` shifted and scaled so each column has sample mean 0 and sample variance 1 (ddof 0)."""
    centred = eps - eps.mean(dim=0)
    return centred / centred.square().mean(dim=0).sqrt()


def kl_to_posterior(mu: Tensor, log_sigma: Tensor, model: ConjugateGaussian) -> float:
    r""":math:`\mathrm{KL}(q \,\|\, p(z \mid x))` for diagonal Gaussians, in closed form."""
    post_mu, post_ls = model.posterior()
    mu, log_sigma = mu.to(torch.float64), log_sigma.to(torch.float64)
    ratio = torch.exp(2.0 * (log_sigma - post_ls))
    return float(
        (
            post_ls
            - log_sigma
            + 0.5 * (ratio + (mu - post_mu).square() / torch.exp(2.0 * post_ls))
            - 0.5
        ).sum()
    )


def _grad_log_joint(model: Any, z: Tensor) -> Tensor:
    z = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(z).sum(), z)
    return grad


def pathwise_expected(
    model: Any, mu: Tensor, log_sigma: Tensor, eps: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Total derivative of :math:`\frac1S\sum_s[\log p(x, z_s) - \log q(z_s)]`, :math:`z_s = \mu + \sigma\epsilon_s`.

    :math:`\log q(\mu + \sigma\epsilon) = \sum_d(-\tfrac12\epsilon_d^2 - \log\sigma_d - \tfrac12\log 2\pi)`,
    so :math:`-\log q` adds 0 to the :math:`\mu`-gradient and 1 to each :math:`\log\sigma_d`-gradient.
    """
    sigma = torch.exp(log_sigma)
    grad = _grad_log_joint(model, mu + sigma * eps)
    return grad.mean(dim=0), (grad * sigma * eps).mean(dim=0) + 1.0


def tabulated_score(case: QCase) -> tuple[Tensor, Tensor]:
    """The tabulated right ``elbo_score_grad`` of ``case``: ``(grad_mu, grad_log_sigma)``.

    Raises:
        KeyError: ``case`` is not in :data:`TABULATED_SCORE_CASES`.
    """
    table = tables.load("autograder.checks.elbo_answers")
    if score_key(case, "grad_mu") not in table:
        raise KeyError(f"no tabulated answer for {case!r}")
    return (
        torch.from_numpy(table[score_key(case, "grad_mu")]),
        torch.from_numpy(table[score_key(case, "grad_log_sigma")]),
    )


def cholesky_factor(raw_tril: Tensor) -> Tensor:
    r"""The spec's :math:`L = \operatorname{tril}(R, -1) + \operatorname{diag}(e^{\operatorname{diag} R})` (judge side)."""
    return torch.tril(raw_tril, -1) + torch.diag(torch.exp(torch.diagonal(raw_tril)))


def kl_gradient_in_log_sigma(sigma: Tensor, covariance: Tensor) -> Tensor:
    r"""d KL(N(m, diag sigma^2) || N(m, covariance)) / d log sigma, by autograd.

    The Gaussian KL with equal means,
    :math:`\tfrac12[\operatorname{tr}(\Sigma^{-1} S) - D + \log\det\Sigma - \log\det S]` with
    :math:`S = \operatorname{diag}\sigma^2` (``torch.distributions.kl_divergence`` gives the same,
    ten times slower).
    """
    log_sigma = sigma.detach().log().requires_grad_(True)
    trace = torch.linalg.solve(covariance, torch.diag(torch.exp(2 * log_sigma)))
    kl = 0.5 * (trace.diagonal().sum() - 2 * log_sigma.sum())  # constants dropped
    (grad,) = torch.autograd.grad(kl, log_sigma)
    return grad


def tabulated_mixture(case: MixtureCase) -> dict[str, Tensor]:
    """The tabulated right ``mixture_log_prob`` of ``case``: its value and the gradients of
    ``case.cotangent · value`` in logits, mu and log_sigma, by :data:`MIXTURE_FIELDS`.

    Raises:
        KeyError: ``case`` is not in :data:`TABULATED_MIXTURES` (a public check drew it elsewhere).
    """
    table = tables.load("autograder.checks.elbo_answers")
    if mixture_key(case, "value") not in table:
        raise KeyError(f"no tabulated answer for {case!r}")
    return {f: torch.from_numpy(table[mixture_key(case, f)]) for f in MIXTURE_FIELDS}
