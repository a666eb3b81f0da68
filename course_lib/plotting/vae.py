r"""Plots for ``05_vae``: training curves, digit grids, reconstructions, the 2-D latent space.

Functions that need a model take plain callables (``decode(z) -> logits``,
``encode(x) -> (mu, logvar)``) and run them without gradients, on the model's device, in
batches; every function returns a figure and writes nothing to stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "digit_grid",
    "plot_digits",
    "plot_elbo_terms",
    "plot_kl_per_dimension",
    "plot_latent_manifold",
    "plot_latent_scatter",
    "plot_reconstructions",
    "plot_training_curves",
]

SIDE = 28  # MNIST images are 28 x 28


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def digit_grid(images: torch.Tensor | np.ndarray, n_cols: int) -> np.ndarray:
    """Tile ``images`` ``(N, 784)`` into one ``(rows * 28, n_cols * 28)`` array (blank padding)."""
    flat = _numpy(images).reshape(-1, SIDE, SIDE)
    n_rows = -(-len(flat) // n_cols)
    canvas = np.zeros((n_rows * SIDE, n_cols * SIDE), dtype=np.float32)
    for k, image in enumerate(flat):
        r, c = divmod(k, n_cols)
        canvas[r * SIDE : (r + 1) * SIDE, c * SIDE : (c + 1) * SIDE] = image
    return canvas


def _show(ax: plt.Axes, canvas: np.ndarray, title: str) -> None:
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def plot_training_curves(
    histories: Mapping[str, Sequence[float]],
    held_out: Mapping[str, float] | None = None,
) -> Figure:
    """Mean negative ELBO per epoch for each model, with optional held-out values as markers.

    Args:
        histories: Label -> the per-epoch mean negative ELBO returned by training.
        held_out: Label -> the negative ELBO on held-out images after training.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, history in histories.items():
        epochs = np.arange(1, len(history) + 1)
        (line,) = ax.plot(epochs, history, "o-", ms=3, label=f"{label} (train)")
        if held_out and label in held_out:
            ax.plot(
                epochs[-1],
                held_out[label],
                "s",
                ms=8,
                mfc="none",
                color=line.get_color(),
                label=f"{label} (held out)",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats / image)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_digits(
    images: torch.Tensor | np.ndarray, *, n_cols: int = 10, title: str = ""
) -> Figure:
    """A grid of digits, ``images`` of shape ``(N, 784)`` with values in ``[0, 1]``."""
    canvas = digit_grid(images, n_cols)
    fig, ax = plt.subplots(figsize=(0.6 * n_cols, 0.6 * canvas.shape[0] / SIDE + 0.4))
    _show(ax, canvas, title)
    return fig


def plot_reconstructions(
    originals: torch.Tensor | np.ndarray,
    reconstructions: torch.Tensor | np.ndarray,
    *,
    n_cols: int = 10,
) -> Figure:
    """Originals above their reconstructions, row by row (each ``(N, 784)`` in ``[0, 1]``)."""
    originals, reconstructions = _numpy(originals), _numpy(reconstructions)
    rows = []
    for start in range(0, len(originals), n_cols):
        rows.append(digit_grid(originals[start : start + n_cols], n_cols))
        rows.append(digit_grid(reconstructions[start : start + n_cols], n_cols))
    canvas = np.concatenate(rows, axis=0)
    fig, ax = plt.subplots(figsize=(0.6 * n_cols, 0.6 * canvas.shape[0] / SIDE + 0.4))
    _show(
        ax, canvas, "held-out digits (odd rows) and their reconstructions (even rows)"
    )
    return fig


def _device_of(fn: Callable[..., object]) -> torch.device:
    module = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if isinstance(module, torch.nn.Module):
        for parameter in module.parameters():
            return parameter.device
    return torch.device("cpu")


def plot_latent_manifold(
    decode: Callable[[torch.Tensor], torch.Tensor], *, n: int = 15, title: str = ""
) -> Figure:
    r"""Decode an ``n x n`` grid of a 2-D latent space and show the mean images.

    The grid points are the standard normal quantiles :math:`\Phi^{-1}((i + \frac12)/n)`, so
    equal areas of the prior get equal room (Kingma & Welling (2014), figure 4).

    Args:
        decode: ``decode(z) -> logits`` for ``z`` of shape ``(S, 2)``, e.g. ``model.decoder``.
        n: Grid points per axis.
        title: Figure title.
    """
    quantiles = np.array(
        [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)], dtype=np.float32
    )
    # rows from top (large z_2) to bottom, columns left to right (z_1)
    z = np.array(
        [[z1, z2] for z2 in quantiles[::-1] for z1 in quantiles], dtype=np.float32
    )
    device = _device_of(decode)
    with torch.no_grad():
        images = torch.sigmoid(decode(torch.as_tensor(z, device=device)))
    canvas = digit_grid(images, n)
    fig, ax = plt.subplots(figsize=(6, 6))
    _show(
        ax,
        canvas,
        title or r"decoded means over the latent grid $\Phi^{-1}$(quantiles)",
    )
    ax.set_axis_on()  # the axes carry z_1 and z_2 at every other grid point
    centres = SIDE * (np.arange(n) + 0.5)
    labels = [f"{q:.1f}" for q in quantiles]
    ax.set_xticks(centres[::2], labels[::2], fontsize=8)
    ax.set_yticks(centres[::2], labels[::-1][::2], fontsize=8)
    ax.set_xlabel(r"$z_1$")
    ax.set_ylabel(r"$z_2$")
    return fig


def plot_elbo_terms(terms: Mapping[str, Mapping[str, tuple[float, float]]]) -> Figure:
    r"""The ELBO's two terms side by side: reconstruction and KL, training and held-out images.

    Args:
        terms: Model label -> ``{"train": (reconstruction, kl), "held out": (reconstruction,
            kl)}``, where reconstruction is :math:`-\mathbb{E}_q \log p_\theta(x|z)` (the
            distortion) and kl is :math:`\mathrm{KL}(q_\phi(z|x) \| p(z))` (the rate), both in
            nats per image.
    """
    labels = list(terms)
    parts = ("train", "held out")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4))
    width = 0.38
    where = np.arange(len(labels))
    for column, (ax, name) in enumerate(
        zip(axes, (r"reconstruction $-\mathbb{E}_q \log p(x|z)$", r"KL$(q \| p)$"))
    ):
        for shift, part in enumerate(parts):
            values = [terms[label][part][column] for label in labels]
            bars = ax.bar(where + (shift - 0.5) * width, values, width, label=part)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(where, labels, fontsize=8)
        ax.set_ylabel("nats / image")
        ax.set_title(name, fontsize=10)
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_kl_per_dimension(
    kl_per_dimension: torch.Tensor | np.ndarray, *, threshold: float = 0.01
) -> Figure:
    r"""Mean KL of each latent dimension over held-out images, sorted, with the activity cut.

    Args:
        kl_per_dimension: ``(Z,)`` mean over images of
            :math:`\tfrac12(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`.
        threshold: Dimensions below it (nats) are drawn as inactive.
    """
    values = _numpy(kl_per_dimension).reshape(-1)
    order = np.argsort(values)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    colours = ["C0" if values[j] > threshold else "C7" for j in order]
    ax.bar(np.arange(len(values)), values[order], color=colours)
    ax.set_xticks(np.arange(len(values)), [str(j) for j in order], fontsize=7)
    ax.set_xlabel("latent dimension j (sorted)")
    ax.set_ylabel("mean KL (nats)")
    active = int((values > threshold).sum())
    ax.set_title(
        f"{active} of {len(values)} dimensions carry information (KL > {threshold})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_latent_scatter(
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor | np.ndarray,
    labels: np.ndarray,
    *,
    title: str = "",
) -> Figure:
    r"""Posterior means :math:`\mu_\phi(x)` of a 2-D encoder, coloured by digit label.

    Args:
        encode: ``encode(x) -> (mu, logvar)``, e.g. ``model.encoder``; ``mu`` must be ``(N, 2)``.
        images: ``(N, 784)`` in ``[0, 1]``.
        labels: ``(N,)`` digit labels.
        title: Figure title.
    """
    device = _device_of(encode)
    with torch.no_grad():
        mu, _ = encode(torch.as_tensor(_numpy(images), device=device))
    points = _numpy(mu)
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(
        points[:, 0],
        points[:, 1],
        c=np.asarray(labels),
        cmap="tab10",
        s=6,
        vmin=-0.5,
        vmax=9.5,
    )
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel(r"$\mu_1(x)$")
    ax.set_ylabel(r"$\mu_2(x)$")
    ax.set_title(title or "held-out digits in the latent space", fontsize=10)
    fig.tight_layout()
    return fig
