"""The reference VAE against independent oracles, and its training loop on the embedded MNIST.

Oracles: ``torch.distributions`` (Normal-Normal KL, Bernoulli log-probabilities),
``binary_cross_entropy_with_logits``, ``gradcheck`` in float64, and for training the
independent-pixel Bernoulli model fitted in closed form on the same split.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Normal, kl_divergence

from course_lib.data import mnist_split
from course_lib.reference.vae import (
    VAE,
    Decoder,
    Encoder,
    bernoulli_log_likelihood,
    gaussian_kl,
    iwae_bound,
    negative_elbo,
    reparameterize,
    train_vae,
)

SEEDS = st.integers(0, 2**32 - 1)


@functools.lru_cache(maxsize=1)
def _split():
    """The course's fixed split, parsed once per session (parsing takes seconds)."""
    return mnist_split()


def _latents(
    seed: int, batch: int = 5, z_dim: int = 3, dtype: torch.dtype = torch.float64
):
    g = torch.Generator().manual_seed(seed)
    mu = 1.5 * torch.randn(batch, z_dim, generator=g, dtype=dtype)
    logvar = -3.0 + 5.0 * torch.rand(batch, z_dim, generator=g, dtype=dtype)
    eps = torch.randn(batch, z_dim, generator=g, dtype=dtype)
    return mu, logvar, eps


def _pixels(seed: int, batch: int = 4, pixels: int = 11, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, pixels, generator=g, dtype=torch.float64)
    x[:, :3] = x[:, :3].round()  # some exact 0s and 1s, as in MNIST
    return x, scale * torch.randn(batch, pixels, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------- closed forms


@given(SEEDS)
def test_gaussian_kl_matches_torch_distributions(seed):
    mu, logvar, _ = _latents(seed)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(
        gaussian_kl(mu, logvar), expected, rtol=1e-12, atol=1e-12
    )


def test_gaussian_kl_is_zero_only_at_the_prior():
    zeros = torch.zeros(2, 4, dtype=torch.float64)
    assert torch.equal(gaussian_kl(zeros, zeros), torch.zeros(2, dtype=torch.float64))
    assert (gaussian_kl(zeros + 0.1, zeros) > 0).all() and (
        gaussian_kl(zeros, zeros - 0.1) > 0
    ).all()


@given(SEEDS)
def test_bernoulli_log_likelihood_matches_bce_with_logits(seed):
    x, logits = _pixels(seed)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(
        bernoulli_log_likelihood(x, logits), expected, rtol=1e-12, atol=1e-12
    )


@given(SEEDS)
def test_bernoulli_log_likelihood_matches_the_distribution_on_binary_images(seed):
    x, logits = _pixels(seed)
    x = x.round()
    expected = Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(
        bernoulli_log_likelihood(x, logits), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_likelihood_is_exact_for_huge_logits(dtype):
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4, 50.0]], dtype=dtype)
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.25]], dtype=dtype)
    # x l - softplus(l) by hand: 0, 0, -1e4, -1e4, 0.25 * 50 - 50 (softplus(50) = 50 + 2e-22)
    expected = torch.tensor([-2e4 - 37.5], dtype=torch.float64)
    value = bernoulli_log_likelihood(x, logits)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6)


@given(SEEDS)
def test_negative_elbo_is_the_batch_mean_of_kl_minus_log_likelihood(seed):
    x, logits = _pixels(seed, batch=5)
    mu, logvar, _ = _latents(seed, batch=5)
    per_image = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(
        -1
    ) + F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    value = negative_elbo(x, logits, mu, logvar)
    assert value.shape == ()
    torch.testing.assert_close(value, per_image.mean(), rtol=1e-12, atol=1e-12)


@given(SEEDS)
def test_reparameterize_value_and_pathwise_derivatives(seed):
    mu, logvar, eps = _latents(seed)
    torch.testing.assert_close(
        reparameterize(mu, logvar, eps), mu + (0.5 * logvar).exp() * eps
    )
    m, lv = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    d_mu, d_logvar = torch.autograd.grad(reparameterize(m, lv, eps).sum(), (m, lv))
    torch.testing.assert_close(d_mu, torch.ones_like(mu))
    torch.testing.assert_close(d_logvar, 0.5 * (0.5 * logvar).exp() * eps)


def test_gradients_of_the_closed_forms_pass_gradcheck():
    mu, logvar, eps = _latents(3)
    x, logits = _pixels(3, batch=5, pixels=7)
    leaves = [t.clone().requires_grad_() for t in (logits, mu, logvar)]
    assert torch.autograd.gradcheck(
        lambda lo, m, lv: negative_elbo(x, lo, m, lv), leaves
    )
    assert torch.autograd.gradcheck(
        lambda m, lv: reparameterize(m, lv, eps), leaves[1:]
    )


# ---------------------------------------------------------------------------- modules


def test_modules_have_the_contracted_shapes_and_defaults():
    torch.manual_seed(0)
    mu, logvar = Encoder()(torch.rand(3, 784))
    assert mu.shape == logvar.shape == (3, 20) and mu.dtype == torch.float32
    assert Decoder()(torch.randn(3, 20)).shape == (3, 784)
    mu, logvar = Encoder(30, 17, 4)(torch.rand(5, 30))
    assert mu.shape == (5, 4) and Decoder(4, 17, 30)(mu).shape == (5, 30)


def test_vae_forward_is_its_encoder_then_decoder_at_mu_plus_sigma_eps():
    torch.manual_seed(1)
    model = VAE(30, 17, 4)
    x, eps = torch.rand(6, 30), torch.randn(6, 4)
    logits, mu, logvar = model(x, eps)
    enc_mu, enc_logvar = model.encoder(x)
    torch.testing.assert_close((mu, logvar), (enc_mu, enc_logvar))
    torch.testing.assert_close(logits, model.decoder(mu + (0.5 * logvar).exp() * eps))
    first, second = model(x)[0], model(x)[0]
    assert not torch.equal(first, second), "forward(x) should draw fresh noise"


# ---------------------------------------------------------------------------- training


def _model(seed: int, x_dim: int = 784, hidden_dim: int = 32, z_dim: int = 3) -> VAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(x_dim, hidden_dim, z_dim)


def test_train_vae_is_reproducible_and_honours_lr_and_inputs():
    x = _split().train_x[:96]
    original = x.copy()
    first = train_vae(_model(0), x, epochs=2, batch_size=32, device="cpu", seed=5)
    again = train_vae(
        _model(0), torch.from_numpy(x), epochs=2, batch_size=32, device="cpu", seed=5
    )
    assert (
        first == again and len(first) == 2 and all(isinstance(v, float) for v in first)
    )
    assert np.array_equal(x, original)
    frozen = _model(0)
    before = [p.detach().clone() for p in frozen.parameters()]
    train_vae(frozen, x, epochs=1, batch_size=32, lr=0.0, device="cpu", seed=5)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters()))


def test_train_vae_rejects_bad_input():
    with pytest.raises(ValueError):
        train_vae(_model(0), np.full((4, 784), 255.0), epochs=1, device="cpu")
    with pytest.raises(ValueError):
        train_vae(_model(0), np.zeros((4, 784)), epochs=0, device="cpu")


#: Held-out negative ELBO (nats per image, 1,000 test digits, fixed noise) after 5 epochs of the
#: default 784-400-20 VAE on the 4,000 training digits: 158.5 +- 0.6 over seeds 0-7 on CPU
#: (157.6 to 159.2), from about 545 at initialisation. The independent-pixel Bernoulli model
#: fitted in closed form scores 204.1 on the same split.
HELD_OUT_THRESHOLD = 170.0


def _independent_pixel_baseline(train_x: np.ndarray, test_x: np.ndarray) -> float:
    p = np.clip(train_x.mean(axis=0), 1e-3, 1 - 1e-3)
    return float(
        -(test_x * np.log(p) + (1 - test_x) * np.log(1 - p)).sum(axis=1).mean()
    )


def _train_and_evaluate(
    device: str, seed: int
) -> tuple[list[float], float, float, float]:
    split = _split()
    model = _model(seed, hidden_dim=400, z_dim=20)
    test = torch.from_numpy(split.test_x).to(device)
    eps = torch.randn(len(test), 20, generator=torch.Generator().manual_seed(0)).to(
        device
    )

    def held_out() -> float:
        with torch.no_grad():
            return float(negative_elbo(test, *model.to(device)(test, eps)))

    start = held_out()
    history = train_vae(model, split.train_x, epochs=5, device=device, seed=seed)
    assert all(p.device.type == torch.device(device).type for p in model.parameters())
    return (
        history,
        start,
        held_out(),
        _independent_pixel_baseline(split.train_x, split.test_x),
    )


def _assert_learned(
    history: list[float], start: float, end: float, baseline: float
) -> None:
    assert len(history) == 5 and all(b < a for a, b in itertools.pairwise(history)), (
        history
    )
    assert end < HELD_OUT_THRESHOLD, (
        f"held-out negative ELBO {end:.1f} (from {start:.1f})"
    )
    assert end < baseline - 30.0, (
        f"{end:.1f} does not beat independent pixels ({baseline:.1f})"
    )


@pytest.mark.slow
def test_train_vae_lowers_the_held_out_negative_elbo_on_cpu():
    """Five epochs on CPU (about 10 s): held-out negative ELBO below 170 nats.

    False-failure probability below 1e-6: over 8 seeds the value was 158.5 +- 0.6, and the
    threshold is 19 standard deviations above the mean (the epoch-to-epoch decreases are at
    least 11 nats, about 10 standard deviations of their spread).
    """
    _assert_learned(*_train_and_evaluate("cpu", 0))


@pytest.mark.gpu
def test_train_vae_lowers_the_held_out_negative_elbo_on_cuda():
    """The same run on the GPU (same threshold; the CUDA random streams differ from CPU's).

    False-failure probability below 1e-6, as for the CPU test.
    """
    _assert_learned(*_train_and_evaluate("cuda", 0))


# ---------------------------------------------------------------------------- iwae_bound


def _tiny_vae(seed: int, x_dim: int = 4, z_dim: int = 1) -> VAE:
    """A float64 VAE small enough that log p(x) is a 1-D integral (z_dim = 1)."""
    torch.manual_seed(seed)
    return VAE(x_dim=x_dim, hidden_dim=8, z_dim=z_dim).double()


def _log_evidence_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) dz, trapezoid rule on [-12, 12].

    The integrand is smooth and its Gaussian tail beyond 12 is below exp(-72), so 24,001
    points give log p(x) to about 1e-9.
    """
    grid = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
    with torch.no_grad():
        logits = model.decoder(grid[:, None])  # (G, D)
        log_lik = bernoulli_log_likelihood(
            x[:, None, :].expand(-1, len(grid), -1), logits.expand(len(x), -1, -1)
        )  # (B, G)
        log_joint = log_lik + Normal(0.0, 1.0).log_prob(grid)
        return torch.logsumexp(log_joint, dim=1) + torch.log(grid[1] - grid[0])


def _single_sample_elbo(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) with torch.distributions, z = mu + sigma eps."""
    mu, logvar = model.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.loc + q.scale * eps
    log_lik = Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    return log_lik + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


@settings(max_examples=10)
@given(SEEDS)
def test_iwae_with_one_sample_is_the_single_sample_elbo(seed):
    model = _tiny_vae(seed % 1000, x_dim=6, z_dim=3)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(5, 6, generator=g, dtype=torch.float64) > 0.5).double()
    eps = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = iwae_bound(model, x, eps)
        want = _single_sample_elbo(model, x, eps[0])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)


def _many_bounds(
    model: VAE, x: torch.Tensor, k: int, draws: int, g: torch.Generator
) -> torch.Tensor:
    """``draws`` independent K-sample bounds of each image, ``(draws, B)``, in one call."""
    batch = x.shape[0]
    z_dim = model.encoder.mean.out_features
    eps = torch.randn(k, draws * batch, z_dim, generator=g, dtype=x.dtype)
    with torch.no_grad():
        return iwae_bound(model, x.repeat(draws, 1), eps).reshape(draws, batch)


def test_iwae_with_one_sample_averages_to_minus_the_negative_elbo():
    """E[log p(z) - log q(z|x)] = -KL, so the K = 1 bound averages to -(KL - E log p(x|z)).

    The K = 1 bound and -(KL - log p(x|z)) use the same 40,000 draws per image: their
    difference, log p(z) - log q(z|x) + KL, has mean 0; the tolerance is 6 of its standard
    errors (false failure below 1e-8 for this fixed seed's kind of draw).
    """
    model = _tiny_vae(3, x_dim=6, z_dim=3)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 6, generator=g, dtype=torch.float64) > 0.5).double()
    draws = 40_000
    eps = torch.randn(1, draws * 4, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        k1 = iwae_bound(model, x.repeat(draws, 1), eps).reshape(draws, 4)
        mu, logvar = model.encoder(x.repeat(draws, 1))
        logits = model.decoder(reparameterize(mu, logvar, eps[0]))
        minus_nelbo = (
            bernoulli_log_likelihood(x.repeat(draws, 1), logits)
            - gaussian_kl(mu, logvar)
        ).reshape(draws, 4)
    difference = k1 - minus_nelbo
    standard_error = difference.std(0) / np.sqrt(draws)
    assert bool((difference.mean(0).abs() < 6 * standard_error).all())
    assert bool((standard_error > 0).all())  # the two really differ draw by draw


def test_iwae_is_the_log_mean_exp_of_single_sample_bounds_and_never_underflows():
    """On a 784-pixel float32 model every weight exp(log w) underflows (log w is about -550)."""
    torch.manual_seed(0)
    model = VAE(hidden_dim=16, z_dim=5)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 784, generator=g)
    eps = torch.randn(7, 3, 5, generator=g)
    with torch.no_grad():
        got = iwae_bound(model, x, eps)
        singles = torch.stack([iwae_bound(model, x, e[None]) for e in eps])
    assert bool(torch.isfinite(got).all()) and float(singles.max()) < -300
    assert (
        float(torch.exp(singles).max()) == 0.0
    )  # a naive log(mean(exp)) would be -inf
    torch.testing.assert_close(
        got, torch.logsumexp(singles, 0) - np.log(7), rtol=1e-5, atol=1e-3
    )


@settings(max_examples=10)
@given(SEEDS, st.integers(1, 20))
def test_iwae_is_log_evidence_for_every_draw_when_q_is_the_posterior(seed, num_samples):
    """A decoder that ignores z has posterior = prior; an encoder giving N(0, I) then makes
    every importance weight p(x), so the bound is log p(x) exactly, whatever eps and K."""
    model = _tiny_vae(seed % 1000, x_dim=5, z_dim=2)
    with torch.no_grad():
        model.decoder.hidden.weight.zero_()
        for head in (model.encoder.mean, model.encoder.logvar):
            head.weight.zero_()
            head.bias.zero_()
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(4, 5, generator=g, dtype=torch.float64) > 0.5).double()
    eps = 3.0 * torch.randn(num_samples, 4, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits = model.decoder(torch.zeros(1, 2, dtype=torch.float64))
        log_evidence = bernoulli_log_likelihood(x, logits.expand(4, -1))
        got = iwae_bound(model, x, eps)
    torch.testing.assert_close(got, log_evidence, rtol=1e-12, atol=1e-12)


def test_iwae_lies_between_the_elbo_and_log_evidence_and_grows_with_k():
    """ELBO = E L_1 <= E L_10 <= E L_100 <= log p(x) (Burda et al. 2016, theorem 1).

    Exact log p(x) by quadrature (z_dim = 1), each expectation over 4,000 independent draws.
    The encoder is made narrow and off-centre so the gaps are of order a nat, many times the
    Monte Carlo standard errors, which the strict comparisons allow for (6 of them).
    """
    model = _tiny_vae(5, x_dim=8, z_dim=1)
    with torch.no_grad():
        model.encoder.logvar.bias.fill_(-3.0)  # q much narrower than the posterior
        model.encoder.mean.bias.add_(1.0)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 8, generator=g, dtype=torch.float64) > 0.5).double()
    log_evidence = _log_evidence_by_quadrature(model, x)
    bounds = {k: _many_bounds(model, x, k, 4000, g) for k in (1, 10, 100)}
    means = {k: b.mean(0) for k, b in bounds.items()}
    errors = {k: b.std(0) / np.sqrt(len(b)) for k, b in bounds.items()}
    for small, large in ((1, 10), (10, 100)):
        gap = means[large] - means[small]
        assert bool((gap > 6 * (errors[small] + errors[large])).all()), gap
    assert bool((means[100] < log_evidence + 6 * errors[100]).all())
    assert bool(
        (log_evidence - means[1] > 0.1).all()
    )  # q is far from the posterior here
