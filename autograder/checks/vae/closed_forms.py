"""Judge-side maths of ``05_vae`` that answers no graded task for a submission's inputs: the
importance log-weights of a given model (:func:`log_weights_closed_form`, it takes the model,
never a task's inputs) and the test that the noise a training loop drew is fresh N(0, 1)
(:func:`noise_test`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scipy.stats import chi2
from torch import Tensor

from autograder.checks.vae.probes import ScoringVAE


def noise_test(noise: Sequence[Tensor], alpha: float) -> str:
    """Why the recorded noise is not fresh N(0, 1) per image and step, or '' when it is.

    Deterministic part: rows of one step must differ, and consecutive steps must differ.
    Statistical part (``alpha`` split over two tests): |mean| < z sqrt(1/n), and the sum of
    squares inside the two-sided chi-square(n) interval. False-failure probability at most
    ``alpha`` for exact N(0, 1) draws (the recovered eps carries float32 rounding, far below
    these tolerances).
    """
    if not noise:
        return "no z reached the decoder while gradients were on"
    for step, eps in enumerate(noise):
        if eps.shape[0] > 1 and bool((eps - eps[:1]).abs().max() < 1e-6):
            return f"every image of training step {step} got the same noise: draw eps with the shape of mu (batch, z_dim)"
    for step in range(1, len(noise)):
        a, b = noise[step - 1], noise[step]
        if a.shape == b.shape and bool((a - b).abs().max() < 1e-6):
            return f"training steps {step - 1} and {step} used the same noise: draw new eps at every step"
    values = torch.cat([e.flatten() for e in noise]).double()
    n = values.numel()
    z = math.sqrt(2.0) * float(
        torch.erfinv(torch.tensor(1.0 - alpha / 2.0, dtype=torch.float64))
    )
    mean = float(values.mean())
    if abs(mean) * math.sqrt(n) > z:
        return f"the noise has mean {mean:.3f} over {n} draws, not 0: draw eps ~ N(0, 1) with torch.randn, not torch.rand"
    squares = float(values.square().sum())
    low, high = chi2.ppf(alpha / 4.0, n), chi2.isf(alpha / 4.0, n)
    if not low <= squares <= high:
        return f"the noise has mean square {squares / n:.3f} over {n} draws, not 1: eps should be standard normal"
    return ""


def log_weights_closed_form(model: ScoringVAE, x: Tensor, eps: Tensor) -> Tensor:
    r"""``log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, sigma^2)`` for each draw, ``(K, B)``, in float64.

    Written with ``torch.distributions`` from the model's own encoder and decoder: the
    importance weights of Burda et al. (2016), eq. (8), one per draw and image.
    """
    with torch.no_grad():
        mu, logvar = model.encoder(x)
        mu, sigma = mu.double(), torch.exp(0.5 * logvar.double())
        z = mu + sigma * eps.double()  # (K, B, Z)
        logits = model.decoder(z.to(x.dtype)).double()
        pixels = torch.distributions.Bernoulli(logits=logits, validate_args=False)
        log_lik = pixels.log_prob(x.double().expand_as(logits)).sum(-1)
        prior = torch.distributions.Normal(0.0, 1.0)
        q = torch.distributions.Normal(mu, sigma)
        return log_lik + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
