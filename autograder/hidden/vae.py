r"""Hidden checks for ``05_vae``: the reference at the assignment's real sizes and dtype, and
the properties a student should not tune against.

Functions are compared with :mod:`course_lib.reference.vae` in float32 on MNIST-sized batches
(``(B, 784)`` images, ``(B, 20)`` latents), the expected value coming from the same probe run
on the reference locally. Classes get the properties that make them usable (unconstrained
outputs, per-image independence, trainable parameters sized by ``hidden_dim``, gradients
through ``z``, standard-normal noise); ``train_vae`` gets the noise it feeds the model, whether
it zeroes gradients between optimizer steps, and its inputs and devices; ``iwae_bound`` is
compared with the reference at MNIST sizes and with as many draws as images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder import probes
from autograder.checks.vae import (
    TABULATED,
    ElboBatch,
    IwaeProblem,
    LatentBatch,
    PixelBatch,
    TrainConfig,
    answer_key,
    devices_probe,
    expect_untouched,
    held_for,
    iwae_probe,
    module_probe,
    noise_test,
    run_train_vae,
    vae_probe,
)
from autograder.compare import assert_close
from autograder.core import check, expect
from autograder.hidden import reference_subject
from autograder.profiles import GRADING, STATISTICAL
from autograder.strategies import seeds
from autograder.subject import Subject
from course_lib.reference import vae as vae_reference

_REFERENCE = reference_subject("vae")


def right_of(kind: str, problem: Any) -> np.ndarray:
    """The right answer per row or image for any problem of ``kind`` (see
    :data:`autograder.checks.vae.TABULATED`), from the reference in float64."""
    with torch.no_grad():
        arrays = [t.double() for t in problem.tensors()]
        if kind.startswith("kl"):
            value = vae_reference.gaussian_kl(*arrays[:2])
        elif kind.startswith("likelihood"):
            value = vae_reference.bernoulli_log_likelihood(*arrays)
        else:
            x, logits, mu, logvar = arrays
            value = vae_reference.gaussian_kl(
                mu, logvar
            ) - vae_reference.bernoulli_log_likelihood(x, logits)
    return value.numpy().astype(np.float64)


def tabulated_answers() -> dict[str, np.ndarray]:
    """Every tabulated problem's right answer, by :func:`~autograder.checks.vae.answer_key`
    (``scripts/tabulate_answers.py`` writes them to ``autograder/checks/vae_answers.py``)."""
    return {
        answer_key(kind, problem): right_of(kind, problem)
        for kind, problems in TABULATED.items()
        for problem in problems
    }


_SETTINGS = settings(GRADING, max_examples=10)
#: float32 against the float32 reference on (B, 784) inputs: each per-image sum has 784 terms
#: rounded to 6e-8 relative, typically sqrt(784) x 6e-8 = 2e-6 of values of about 500 nats, so
#: atol 1e-3 (2e-6 relative) plus rtol 1e-5 covers any summation order.
_FLOAT32 = {"rtol": 1e-5, "atol": 1e-3}


def _against_reference(
    subject: Subject, name: str, args: tuple[Any, ...], hint: str, **tol: float
) -> None:
    """Run ``name(*args)`` on both sides; same dtype, no side effects, close values."""
    got = subject.call(probes.invoke_probe, name, *args)
    want = _REFERENCE.call(probes.invoke_probe, name, *args)["value"]
    expect_untouched(got, name)
    value = got["value"]
    expect(
        isinstance(value, torch.Tensor),
        f"{name} returned a {type(value).__name__}, expected a torch.Tensor",
    )
    expect(
        value.dtype == want.dtype,
        f"{name} returned {value.dtype} for {want.dtype} inputs: keep the input dtype",
    )
    assert_close(value, want, f"the result of {name}", hint=hint, **{**_FLOAT32, **tol})


def _mnist_sized(batch: int, seed: int, dtype: str = "float32") -> LatentBatch:
    return LatentBatch(batch, 20, seed, dtype, -20.0, 10.0)


@check(
    "reparameterize",
    "matches the reference in float32 on (B, 20) latents, logvar from -20 to 10",
    points=1,
)
@_SETTINGS
@given(batch=st.integers(2, 64).filter(lambda b: b != 20), seed=seeds())
def reparameterize_reference(subject: Subject, batch: int, seed: int) -> None:
    mu, logvar, eps = _mnist_sized(batch, seed).tensors()
    _against_reference(
        subject,
        "reparameterize",
        (mu, logvar, eps),
        "z = mu + exp(logvar / 2) * eps",
        rtol=1e-5,
        atol=1e-6,
    )


@check(
    "gaussian_kl",
    "matches the reference in float32 on (B, 20) latents, logvar from -20 to 10",
    points=1,
)
@_SETTINGS
@given(batch=st.integers(2, 64).filter(lambda b: b != 20), seed=seeds())
def kl_reference(subject: Subject, batch: int, seed: int) -> None:
    mu, logvar, _ = _mnist_sized(batch, seed).tensors()
    _against_reference(
        subject,
        "gaussian_kl",
        (mu, logvar),
        "KL summed over the 20 latent dimensions, one value per image",
    )


@check(
    "bernoulli_log_likelihood",
    "matches the reference in float32 on (B, 784) images with logits up to +-1e4",
    points=1,
)
@_SETTINGS
@given(batch=st.integers(2, 16), seed=seeds(), extreme=st.booleans())
def likelihood_reference(
    subject: Subject, batch: int, seed: int, extreme: bool
) -> None:
    x, logits = PixelBatch(batch, 784, seed, "float32", extreme).tensors()
    _against_reference(
        subject,
        "bernoulli_log_likelihood",
        (x, logits),
        "sum over the 784 pixels of x log sigmoid(l) + (1 - x) log sigmoid(-l), stable for large |l|",
        rtol=1e-5,
        atol=2e-2 if extreme else 1e-3,
    )


@check(
    "negative_elbo",
    "matches the reference in float32 on (B, 784) images and (B, 20) latents",
    points=0.5,
)
@_SETTINGS
@given(batch=st.integers(2, 16), seed=seeds())
def negative_elbo_reference(subject: Subject, batch: int, seed: int) -> None:
    # The one negative_elbo property run with the student's own gaussian_kl and
    # bernoulli_log_likelihood, as they are wired (probes.invoke_probe, no stand-ins).
    x, logits, mu, logvar = ElboBatch(batch, 784, 20, seed, "float32").tensors()
    _against_reference(
        subject,
        "negative_elbo",
        (x, logits, mu, logvar),
        "the batch mean of KL - log-likelihood",
    )


# ----------------------------------------------------------------------------------------
# Encoder and Decoder
# ----------------------------------------------------------------------------------------

_MODULE_SETTINGS = settings(GRADING, max_examples=3)


def _images(batch: int, dim: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, dim, generator=torch.Generator().manual_seed(seed))


def _latents(batch: int, dim: int, seed: int) -> torch.Tensor:
    return 1.5 * torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


def _rows_differ(value: torch.Tensor) -> bool:
    return bool((value - value[:1]).abs().max() > 0)


@check(
    "Encoder",
    "mu and logvar are separate, unconstrained outputs that depend on the image",
    points=0.5,
)
@_MODULE_SETTINGS
@given(seed=seeds())
def encoder_unconstrained(subject: Subject, seed: int) -> None:
    report = subject.call(
        module_probe, "Encoder", (), {}, _images(64, 784, seed), seed, 2
    )
    mu, logvar = report["train"]
    expect(
        not torch.equal(mu, logvar),
        "mu and logvar are the same tensor: give logvar its own output layer (or half of one)",
    )
    expect(
        _rows_differ(mu),
        "mu is the same for every image: the encoder should depend on x",
    )
    expect(
        bool((mu < 0).any()) and bool((mu > 0).any()),
        "mu never changes sign: do not pass the mean through a ReLU, sigmoid or exp",
    )
    expect(
        bool((logvar < 0).any()),
        "logvar is never negative, so the variance is never below 1: logvar is a log-variance, "
        "the raw output of a linear layer (no ReLU, softplus or exp)",
    )


@check(
    "Encoder",
    "encodes each image on its own, with trainable parameters sized by hidden_dim",
    points=0.5,
)
@_MODULE_SETTINGS
@given(seed=seeds())
def encoder_structure(subject: Subject, seed: int) -> None:
    x = _images(7, 30, seed)
    small = subject.call(module_probe, "Encoder", (30, 12, 3), {}, x, seed, 2)
    large = subject.call(module_probe, "Encoder", (30, 24, 3), {}, x, seed, 2)
    expect(
        small["n_params"] > 0,
        "Encoder has no trainable parameters: register layers as attributes or in nn.ModuleList, not a Python list",
    )
    expect(
        small["reached"] > 0,
        "mu and logvar do not depend on any parameter of the Encoder",
    )
    expect(
        small["n_params"] != large["n_params"],
        "Encoder(30, 12, 3) and Encoder(30, 24, 3) have the same number of parameters: use hidden_dim",
    )
    for k, what in enumerate(("mu", "logvar")):
        assert_close(
            small["rows"][k],
            small["eval"][k],
            f"{what} encoded one image at a time",
            rtol=1e-5,
            atol=1e-6,
            hint="in eval mode each image's code should not depend on the other images of the batch",
        )


@check(
    "Decoder",
    "returns unconstrained logits (not probabilities) that depend on z",
    points=0.5,
)
@_MODULE_SETTINGS
@given(seed=seeds())
def decoder_unconstrained(subject: Subject, seed: int) -> None:
    (logits,) = subject.call(
        module_probe, "Decoder", (), {}, _latents(16, 20, seed), seed, 1
    )["train"]
    expect(
        _rows_differ(logits),
        "the logits are the same for every z: the decoder should depend on z",
    )
    expect(
        bool((logits < 0).any()) and bool((logits > 0).any()),
        "the decoder's outputs never change sign: return logits (the raw output of the last linear "
        "layer), not sigmoid probabilities or ReLU outputs",
    )


@check(
    "Decoder",
    "decodes each latent on its own, with trainable parameters sized by hidden_dim",
    points=0.5,
)
@_MODULE_SETTINGS
@given(seed=seeds())
def decoder_structure(subject: Subject, seed: int) -> None:
    z = _latents(7, 3, seed)
    small = subject.call(module_probe, "Decoder", (3, 12, 30), {}, z, seed, 1)
    large = subject.call(module_probe, "Decoder", (3, 24, 30), {}, z, seed, 1)
    expect(
        small["n_params"] > 0,
        "Decoder has no trainable parameters: register layers as attributes or in nn.ModuleList, not a Python list",
    )
    expect(
        small["reached"] > 0, "the logits do not depend on any parameter of the Decoder"
    )
    expect(
        small["n_params"] != large["n_params"],
        "Decoder(3, 12, 30) and Decoder(3, 24, 30) have the same number of parameters: use hidden_dim",
    )
    assert_close(
        small["rows"][0],
        small["eval"][0],
        "logits decoded one latent at a time",
        rtol=1e-5,
        atol=1e-6,
        hint="in eval mode each image's logits should not depend on the other latents of the batch",
    )


# ----------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------

VAE_NOISE_ALPHA = 1e-6


@check(
    "VAE",
    "the reconstruction gradient reaches the encoder through z, and the decoder",
    points=0.5,
)
@_MODULE_SETTINGS
@given(seed=seeds())
def vae_gradients(subject: Subject, seed: int) -> None:
    x = _images(6, 30, seed)
    eps = _latents(6, 3, seed + 1)
    # The one VAE property run with the student's own reparameterize, as it is wired.
    reached = subject.call(vae_probe, (30, 17, 3), x, eps, seed, gradients=True)[
        "reached"
    ]
    expect(
        reached["decoder"] > 0,
        "-log p(x|z) does not depend on the decoder's parameters",
    )
    expect(
        reached["encoder"] > 0,
        "-log p(x|z) sends no gradient to the encoder: z must stay connected to mu and logvar "
        "(no z.detach(), no .sample(), no torch.no_grad())",
    )


@check(
    "VAE",
    "forward(x) without eps draws eps ~ N(0, 1)",
    points=0.5,
    alpha=VAE_NOISE_ALPHA,
)
@settings(STATISTICAL, max_examples=1)
@given(seed=seeds())
def vae_noise_is_standard_normal(subject: Subject, seed: int) -> None:
    """eps = (z - mu) / exp(logvar / 2) recovered from 1,500 draws; false-failure probability
    at most 1e-6 (exact z and chi-square quantiles, see :func:`noise_test`)."""
    x = _images(500, 30, seed)
    report = subject.call(
        vae_probe, (30, 17, 3), x, None, seed % 2**31, held=held_for("VAE")
    )
    expect(
        report["hooked"],
        "VAE.forward should call self.encoder(x) and then self.decoder(z)",
    )
    mu, logvar, z = report["mu"], report["logvar"], report["z"]
    eps = (z.double() - mu.double()) / torch.exp(0.5 * logvar.double())
    problem = noise_test([eps], VAE_NOISE_ALPHA)
    expect(not problem, problem.replace("training step 0", "forward(x)"))


# ----------------------------------------------------------------------------------------
# train_vae
# ----------------------------------------------------------------------------------------

TRAIN_NOISE_ALPHA = 1e-6


@check(
    "train_vae",
    "every image gets fresh N(0, 1) noise at every step",
    points=0.5,
    alpha=TRAIN_NOISE_ALPHA,
)
@settings(STATISTICAL, max_examples=1)
@given(seed=seeds())
def train_noise(subject: Subject, seed: int) -> None:
    """The noise behind 8 steps of 32 images x 4 latent dims (1,024 draws); false-failure
    probability at most 1e-6 (:func:`noise_test`)."""
    config = TrainConfig(n_train=128, epochs=2, z_dim=4, seed=seed % 2**31)
    problem = noise_test(run_train_vae(subject, config)["noise"], TRAIN_NOISE_ALPHA)
    expect(not problem, problem)


@check("train_vae", "gradients are zeroed between optimizer steps", points=0.5)
def train_zero_grad(subject: Subject) -> None:
    report = run_train_vae(subject, TrainConfig(n_train=96, epochs=2))
    expect(
        report["accumulation"] < 1e-3,
        "at an optimizer step the gradients held more than this batch's gradient: call "
        "optimizer.zero_grad() before every loss.backward()",
    )


@check(
    "train_vae",
    "accepts a numpy array, leaves train_x unchanged, and trains on the requested device",
    points=0.5,
)
def train_inputs_and_device(subject: Subject) -> None:
    runs = [
        ("a numpy array", TrainConfig(numpy_input=True, epochs=1)),
        ("a tensor", TrainConfig(epochs=1)),
    ]
    here = subject.call(devices_probe)
    if here["cuda"]:
        runs.append(("device='cuda'", TrainConfig(epochs=1, device="cuda")))
    if here["default"] != "cpu":
        runs.append(("device=None", TrainConfig(epochs=1, device=None)))
    for what, config in runs:
        report = run_train_vae(subject, config)
        expect(
            report["data_unchanged"],
            f"train_vae modified train_x (given {what}): work on a copy",
        )
        expect(
            all(math.isfinite(v) for v in report["history"]),
            f"train_vae on {what} returned {report['history']}",
        )
        want = here["default"] if config.device is None else config.device
        found = sorted({d.split(":")[0] for d in report["devices"]})
        expect(
            found == [want],
            f"with {what} the model ended on {report['devices']}, expected {want}: move the model with model.to(device)",
        )


def _iwae(subject: Subject, problem: IwaeProblem) -> torch.Tensor:
    out = subject.call(iwae_probe, problem, None, held_for("iwae_bound"))
    expect_untouched(out, "iwae_bound")
    value: torch.Tensor = out["value"]
    expect(
        value.shape == (problem.batch,),
        f"iwae_bound returned shape {tuple(value.shape)}, expected ({problem.batch},)",
    )
    return value


@check(
    "iwae_bound",
    "matches the reference in float32 at MNIST sizes (784 pixels, Z = 20, K up to 64)",
    points=0.5,
)
@settings(GRADING, max_examples=4)
@given(batch=st.integers(2, 9), samples=st.sampled_from([2, 10, 64]), seed=seeds())
def iwae_reference(subject: Subject, batch: int, samples: int, seed: int) -> None:
    problem = IwaeProblem(batch, 784, 20, samples, seed, "float32", hidden_dim=64)
    got = _iwae(subject, problem)
    want = _iwae(_REFERENCE, problem)
    # float32 sums over 784 pixels and 20 dimensions of terms of a few nats: about 1e-6 of
    # |log w| (~600 nats), so 1e-3 relative plus 1e-2 absolute is rounding slack, and the
    # smallest bug (a missing -log K) moves the bound by log 2.
    assert_close(
        got,
        want,
        "the bound",
        rtol=1e-5,
        atol=1e-2,
        hint="log-mean-exp over the K draws of log p(x|z_k) + log p(z_k) - log q(z_k|x)",
    )


@check(
    "iwae_bound",
    "with as many draws as images (K = B) it still averages over the draws, image by image",
    points=0.5,
)
@settings(GRADING, max_examples=5)
@given(size=st.integers(2, 5), seed=seeds())
def iwae_images_independent(subject: Subject, size: int, seed: int) -> None:
    problem = IwaeProblem(
        size, 10, 3, size, seed
    )  # K = B: a swapped axis keeps the shape
    whole = _iwae(subject, problem)
    want = _iwae(_REFERENCE, problem)
    assert_close(
        whole,
        want,
        "the bound with as many draws as images",
        rtol=1e-8,
        atol=1e-8,
        hint="eps has shape (K, B, Z): reduce over axis 0 (the draws), pair eps[:, b] with x[b]",
    )
