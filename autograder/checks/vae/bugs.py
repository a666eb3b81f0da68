"""Known bugs of ``05_vae`` and the hints that name them: wrong KLs (:data:`KL_BUGS`, built
from the tabulated KL) and wrong IWAE bounds (:data:`IWAE_BUGS`)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from autograder.checks.vae.probes import ScoringVAE
from autograder.compare import (
    Catalogue,
    KnownBug,
    same_values,
)

#: Known wrong KLs, from ``mu``, ``logvar`` and the right (tabulated) ``kl`` per row (a
#: mutant in tests/corpus/vae.py for each).
KL_BUGS: Catalogue = (
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_sign_flipped",
            "it is -KL: KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) is never negative "
            "(the form -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) keeps the minus in front)",
        ),
        lambda mu, lv, kl: -kl,
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_missing_half",
            "it is twice the KL: the sum is multiplied by 1/2",
        ),
        lambda mu, lv, kl: 2 * kl,
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_mean_over_latent_dims",
            "it is the mean over the latent dimensions: the KL of a diagonal Gaussian is the sum "
            "over them (.sum(dim=-1), not .mean)",
        ),
        lambda mu, lv, kl: kl / mu.shape[-1],
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_missing_constant",
            "the -1 per latent dimension is missing: 0.5 * (mu^2 + exp(logvar) - 1 - logvar)",
        ),
        lambda mu, lv, kl: kl + 0.5 * mu.shape[-1],
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_std_as_variance",
            "the variance is exp(logvar), not exp(logvar / 2) (that is the standard deviation)",
        ),
        lambda mu, lv, kl: kl + 0.5 * (torch.exp(0.5 * lv) - torch.exp(lv)).sum(-1),
    ),
    (
        KnownBug(
            "gaussian_kl/gaussian_kl_reversed_direction",
            "it is KL(N(0, I) || q), the other direction: the VAE needs KL(q || N(0, I))",
        ),
        lambda mu, lv, kl: (
            0.5 * ((1.0 + mu.square()) * torch.exp(-lv) - 1.0 + lv)
        ).sum(-1),
    ),
)


#: Whether a result reproduces a known wrong formula's value (to float64 round-off), compared
#: in the formula's dtype.
_same_values = partial(same_values, cast=True)


# Float64 models and data: the bounds are sums of ~10 pixel terms of order 1, so 1e-8 is
# rounding slack, many orders below the smallest bug's effect (log 2 for a missing -log K).
_IWAE_TOL = {"rtol": 1e-8, "atol": 1e-8}


def _clamped_log_weights(model: ScoringVAE, x: Tensor, eps: Tensor) -> Tensor:
    """Log-weights ``(K, B)`` with log p(x|z) from ``binary_cross_entropy(sigmoid(logits))``."""
    with torch.no_grad():
        mu, logvar = (t.double() for t in model.encoder(x))
        z = mu + (0.5 * logvar).exp() * eps.double()
        probs = torch.sigmoid(model.decoder(z.to(x.dtype)).double())
        bce = F.binary_cross_entropy(
            probs, x.double().expand_as(probs), reduction="none"
        )
        return (-bce.sum(-1) - 0.5 * z.pow(2).sum(-1)) + 0.5 * (
            eps.double().pow(2) + logvar
        ).sum(-1)


def _same_bound(got: Tensor, candidate: Tensor) -> bool:
    return got.shape == candidate.shape and torch.allclose(
        got.double(), candidate, rtol=_IWAE_TOL["rtol"], atol=_IWAE_TOL["atol"]
    )


#: Known wrong bounds with K = 1 (``wrong(model, x, eps)``).
IWAE_BUGS: Catalogue = (
    (
        KnownBug(
            "iwae_bound/iwae_bound_bce_of_sigmoid",
            "the decoder is confident here (logits in the hundreds): sigmoid(logits) rounds to exactly "
            "0 or 1 and binary_cross_entropy clamps each log at -100; compute log p(x|z) from the "
            "logits (binary_cross_entropy_with_logits, or your bernoulli_log_likelihood)",
        ),
        lambda model, x, eps: _clamped_log_weights(model, x, eps)[0],
    ),
)
