"""The figures of 05_vae draw headless, quietly, from plain callables, on the model's device."""

from __future__ import annotations

import warnings
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from course_lib.plotting import vae


@pytest.fixture(autouse=True)
def _warnings_are_errors_and_figures_closed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    plt.close("all")


class _RecordingDecoder(nn.Module):
    """A linear decoder that remembers the latent codes it was asked to decode."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 784)
        self.seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.seen.append(z.detach().clone())
        return self.linear(z)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.linear(x)
        return out[:, :2], out[:, 2:]


def test_digit_grid_tiles_row_major_with_blank_padding() -> None:
    images = np.stack([np.full(784, k / 10, dtype=np.float32) for k in range(1, 6)])
    canvas = vae.digit_grid(images, n_cols=3)
    assert canvas.shape == (2 * 28, 3 * 28)
    assert canvas[0, 28] == pytest.approx(0.2)  # second image, first row
    assert canvas[28, 0] == pytest.approx(0.4)  # fourth image starts the second row
    assert canvas[28, 2 * 28] == 0.0  # the sixth slot is blank


def test_latent_manifold_decodes_the_prior_quantile_grid() -> None:
    decoder = _RecordingDecoder()
    fig = vae.plot_latent_manifold(decoder, n=4)
    (z,) = decoder.seen
    quantiles = [NormalDist().inv_cdf((i + 0.5) / 4) for i in range(4)]
    assert z.shape == (16, 2)
    assert z[:4, 0].tolist() == pytest.approx(quantiles, abs=1e-6)  # z_1 left to right
    assert z[0, 1].item() == pytest.approx(
        quantiles[-1], abs=1e-6
    )  # top row has the largest z_2
    assert fig.axes[0].images[0].get_array().shape == (4 * 28, 4 * 28)
    assert not decoder.linear.weight.requires_grad or decoder.linear.weight.grad is None


def test_latent_scatter_and_reconstructions_and_curves() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((50, 784), dtype=np.float32)
    labels = rng.integers(0, 10, size=50)
    fig = vae.plot_latent_scatter(_Encoder(), torch.as_tensor(images), labels)
    assert fig.axes[0].collections[0].get_offsets().shape == (50, 2)
    fig = vae.plot_reconstructions(images[:20], images[:20] * 0.5, n_cols=10)
    assert fig.axes[0].images[0].get_array().shape == (4 * 28, 10 * 28)
    fig = vae.plot_training_curves({"Z = 2": [200.0, 180.0, 170.0]}, {"Z = 2": 172.0})
    assert len(fig.axes[0].lines) == 2
    fig = vae.plot_digits(torch.as_tensor(images[:7]), n_cols=5, title="samples")
    assert fig.axes[0].get_title() == "samples"


@pytest.mark.gpu
def test_manifold_and_scatter_follow_the_model_to_the_gpu() -> None:
    decoder, encoder = _RecordingDecoder().cuda(), _Encoder().cuda()
    vae.plot_latent_manifold(decoder, n=3)
    assert decoder.seen[0].device.type == "cuda"
    images = torch.rand(10, 784, device="cuda")
    vae.plot_latent_scatter(encoder, images, np.arange(10))


def test_manifold_axes_are_labelled_with_latent_values() -> None:
    fig = vae.plot_latent_manifold(_RecordingDecoder(), n=4)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$z_1$", "$z_2$")
    first = NormalDist().inv_cdf(0.5 / 4)
    assert ax.get_xticklabels()[0].get_text() == f"{first:.1f}"
    assert ax.get_yticklabels()[0].get_text() == f"{-first:.1f}"  # top row: largest z_2


def test_elbo_terms_and_kl_per_dimension() -> None:
    terms = {
        "Z = 20": {"train": (80.0, 25.0), "held out": (85.0, 26.0)},
        "beta = 8": {"train": (150.0, 4.0), "held out": (151.0, 4.1)},
    }
    fig = vae.plot_elbo_terms(terms)
    heights = [bar.get_height() for bar in fig.axes[1].patches]
    assert heights == [25.0, 4.0, 26.0, 4.1]  # KL panel: train bars, then held-out bars
    fig = vae.plot_kl_per_dimension(np.array([0.001, 2.0, 0.5, 0.0]), threshold=0.01)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([2.0, 0.5, 0.001, 0.0])
    assert fig.axes[0].get_title().startswith("2 of 4 dimensions")
