"""Known bugs of ``04_elbo`` and the hints that name them: the full-covariance sampler's
(:data:`FULLCOV_RSAMPLE_BUGS`) and entropy's (:data:`FULLCOV_ENTROPY_BUGS`), the mixture log
density's (:data:`MIXTURE_BUGS`)."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import torch
from torch import Tensor

from autograder.checks.elbo.closed_forms import cholesky_factor
from autograder.checks.elbo.problems import HALF_LOG_2PI
from autograder.compare import (
    Catalogue,
    KnownBug,
    hint_for,
    same_values,
)

#: Whether a result reproduces a known wrong formula's value (to float64 round-off). NaN where
#: the formula gives NaN counts as the same value: an overflow that turns into ``0 * inf`` is
#: that formula's signature.
_same_values = partial(same_values, equal_nan=True)


def _eye_times_exp(raw: Tensor) -> Tensor:
    """The factor a common bug builds: ``tril(R, -1) + eye * exp(R)`` (NaN where exp overflows)."""
    eye = torch.eye(raw.shape[0], dtype=raw.dtype)
    return torch.tril(raw, -1) + eye * torch.exp(raw)


#: The hint for :func:`_eye_times_exp`, shared by fullcov_rsample and fullcov_entropy.
_EYE_TIMES_EXP = (
    "exp of the whole raw_tril overflows where the unused upper triangle holds a large entry "
    "(above 709), and eye * inf is 0 * inf = nan: exponentiate only the diagonal, "
    "torch.diag(torch.exp(torch.diagonal(raw_tril)))"
)


def _mixture_hint(got: Tensor, args: tuple[Tensor, ...], default: str) -> str:
    """The hint of the known wrong mixture log density ``got`` reproduces, else ``default``."""
    return hint_for(got, MIXTURE_BUGS, _same_values, _mixture_context(*args)) or default


#: Known wrong ``fullcov_rsample`` samples, built from the inputs and the right factor.
FULLCOV_RSAMPLE_BUGS: Catalogue = (
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_raw_diagonal_without_exp",
            "the diagonal of L must be exp(diag raw_tril): you used the raw diagonal, which can be negative",
        ),
        lambda c: c.mu + c.eps @ (torch.tril(c.raw, -1) + c.diag).T,
    ),
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_upper_triangle",
            "L is the LOWER triangle: you used the upper triangle of raw_tril",
        ),
        lambda c: (
            c.mu + c.eps @ (torch.triu(c.raw, 1) + torch.diag(torch.diagonal(c.tril))).T
        ),
    ),
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_l_transpose_eps",
            "you computed L^T eps instead of L eps: row s of the result is mu + L @ eps_s, i.e. eps @ L.T",
        ),
        lambda c: c.mu + c.eps @ c.tril,
    ),
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_strict_upper_not_masked",
            "the strict upper triangle of raw_tril must be ignored: mask it with torch.tril(raw_tril, -1)",
        ),
        lambda c: c.mu + c.eps @ (c.tril + torch.triu(c.raw, 1)).T,
    ),
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_exp_whole_triangle",
            "exp applies only to the diagonal: you exponentiated the whole lower triangle",
        ),
        lambda c: c.mu + c.eps @ torch.tril(torch.exp(c.raw)).T,
    ),
    (
        KnownBug(
            "fullcov_rsample/fullcov_rsample_missing_mu",
            "the samples are mu + L eps, not L eps",
        ),
        lambda c: c.eps @ c.tril.T,
    ),
    (
        KnownBug("fullcov_rsample/fullcov_rsample_eye_times_exp", _EYE_TIMES_EXP),
        lambda c: c.mu + c.eps @ _eye_times_exp(c.raw).T,
    ),
)


def _rsample_hint(value: Tensor, mu: Tensor, raw: Tensor, eps: Tensor) -> str:
    """The feedback for a wrong ``fullcov_rsample`` value: the known bug it reproduces."""
    c = SimpleNamespace(
        mu=mu,
        raw=raw,
        eps=eps,
        tril=cholesky_factor(raw),
        diag=torch.diag(torch.diagonal(raw)),
    )
    return hint_for(value, FULLCOV_RSAMPLE_BUGS, _same_values, c) or (
        "build L = torch.tril(raw_tril, -1) + torch.diag(torch.exp(torch.diagonal(raw_tril))) and return mu + eps @ L.T"
    )


#: Known wrong entropies of N(mu, L L^T) (``c`` holds raw_tril and the right terms).
FULLCOV_ENTROPY_BUGS: Catalogue = (
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_sums_exp_diagonal",
            "log det L is the sum of log L_dd = the sum of raw_tril[d, d]: you summed exp(raw_tril[d, d])",
        ),
        lambda c: (torch.exp(torch.diagonal(c.raw)).sum() + c.const).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_sums_whole_matrix",
            "you summed the whole matrix; only the diagonal enters the entropy",
        ),
        lambda c: (c.raw.sum() + c.const).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_sums_lower_triangle",
            "you summed the lower triangle; only the diagonal enters the entropy",
        ),
        lambda c: (torch.tril(c.raw).sum() + c.const).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_log_det_cov_not_halved",
            "the entropy is 1/2 log det(2 pi e Sigma) and log det Sigma = 2 sum_d log L_dd: you doubled the diagonal",
        ),
        lambda c: (2 * c.trace + c.const).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_constant_not_halved",
            "the constant is D/2 log(2 pi e): you used D log(2 pi e)",
        ),
        lambda c: (c.trace + 2 * c.const).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_missing_e",
            "the constant is D/2 log(2 pi e) = D/2 log(2 pi) + D/2: you dropped the D/2",
        ),
        lambda c: (c.trace + c.d * HALF_LOG_2PI).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_wrong_sign",
            "your entropy has the wrong sign",
        ),
        lambda c: (-c.want).reshape(()),
    ),
    (
        KnownBug(
            "fullcov_entropy/fullcov_entropy_slogdet_of_eye_times_exp", _EYE_TIMES_EXP
        ),
        lambda c: (
            torch.linalg.slogdet(_eye_times_exp(c.raw)).logabsdet + c.const
        ).reshape(()),
    ),
)


def _component_log_probs(
    z: Tensor, mu: Tensor, log_sigma: Tensor, scale: Tensor | None = None
) -> Tensor:
    """``(S, K)`` diagonal-Gaussian log densities (``scale`` overrides sigma)."""
    sigma = torch.exp(log_sigma) if scale is None else scale
    return torch.distributions.Normal(mu, sigma).log_prob(z[:, None, :]).sum(-1)


def _mixture_context(
    z: Tensor, logits: Tensor, mu: Tensor, log_sigma: Tensor
) -> SimpleNamespace:
    """What the known wrong mixture log densities are built from."""
    return SimpleNamespace(
        z=z,
        logits=logits,
        mu=mu,
        log_sigma=log_sigma,
        comp=_component_log_probs(z, mu, log_sigma),
        log_w=torch.log_softmax(logits, 0),
    )


#: Known wrong mixture log densities (:func:`_mixture_context` builds ``c``).
MIXTURE_BUGS: Catalogue = (
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_missing_log_weights",
            "you left out the mixture weights: add log softmax(logits)_k to each component's log density",
        ),
        lambda c: torch.logsumexp(c.comp, 1),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_unnormalised_logits",
            "the weights are softmax(logits), normalised over the K components: add log_softmax(logits), not the raw logits",
        ),
        lambda c: torch.logsumexp(c.comp + c.logits, 1),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_weights_not_logged",
            "inside the log-sum-exp add the LOG weights log pi_k, not pi_k",
        ),
        lambda c: torch.logsumexp(c.comp + torch.softmax(c.logits, 0), 1),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_log_sigma_as_log_variance",
            "log_sigma is the log standard deviation: you treated it as a log variance (std = exp(log_sigma / 2))",
        ),
        lambda c: torch.logsumexp(
            _component_log_probs(c.z, c.mu, c.log_sigma, torch.exp(0.5 * c.log_sigma))
            + c.log_w,
            1,
        ),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_variance_as_std",
            "you used the variance exp(2 log_sigma) where N(mu, sigma) takes the standard deviation sigma = exp(log_sigma)",
        ),
        lambda c: torch.logsumexp(
            _component_log_probs(c.z, c.mu, c.log_sigma, torch.exp(2.0 * c.log_sigma))
            + c.log_w,
            1,
        ),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_averages_components",
            "you averaged the component densities instead of summing pi_k N_k",
        ),
        lambda c: torch.logsumexp(c.comp + c.log_w, 1) - math.log(c.mu.shape[0]),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_product_of_components",
            "a mixture's density is the sum over components of pi_k N_k, not the product (you summed log densities)",
        ),
        lambda c: (c.comp + c.log_w).sum(1),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_missing_log_sigma_term",
            "each Gaussian's log density has -log sigma_kd per dimension: it is missing",
        ),
        lambda c: torch.logsumexp(c.comp + c.log_w + c.log_sigma.sum(1), 1),
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_missing_two_pi",
            "each Gaussian's log density has -1/2 log(2 pi) per dimension: it is missing",
        ),
        lambda c: torch.logsumexp(c.comp + c.log_w, 1) + c.z.shape[1] * HALF_LOG_2PI,
    ),
    (
        KnownBug(
            "mixture_log_prob/mixture_log_prob_max_instead_of_sum",
            "the log density of the mixture is log sum_k exp(...), not max_k",
        ),
        lambda c: (c.comp + c.log_w).max(1).values,
    ),
)
