r"""Plots for ``04_elbo``: fitted Gaussians against exact posteriors, ELBO traces, 2-D fits.

Every function draws on a new figure (or the ``ax`` it is given) and returns the figure;
nothing is shown or saved here, and nothing is written to stderr.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

__all__ = [
    "plot_covariance_fits",
    "plot_density_panels",
    "plot_elbo_traces",
    "plot_gaussian_fits",
    "plot_mean_field_2d",
    "plot_weight_posterior",
]

GaussianParams = tuple[torch.Tensor, torch.Tensor]  # (mu (D,), log_sigma (D,))


def _numpy(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _normal_pdf(grid: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2.0 * math.pi))


def plot_gaussian_fits(
    exact: GaussianParams, fits: Mapping[str, GaussianParams], *, width: float = 4.0
) -> Figure:
    r"""One panel per latent dimension: the exact posterior marginal and each fitted :math:`q`.

    Args:
        exact: ``(mu, log_sigma)`` of the exact posterior, each ``(D,)``.
        fits: Label -> ``(mu, log_sigma)`` of a fitted mean-field Gaussian.
        width: Half-width of each panel, in exact posterior standard deviations.
    """
    exact_mu, exact_sigma = _numpy(exact[0]), np.exp(_numpy(exact[1]))
    dim = exact_mu.shape[0]
    fig, axes = plt.subplots(1, dim, figsize=(4.2 * dim, 3.2), squeeze=False)
    for d, ax in enumerate(axes[0]):
        grid = np.linspace(
            exact_mu[d] - width * exact_sigma[d],
            exact_mu[d] + width * exact_sigma[d],
            400,
        )
        ax.fill_between(
            grid,
            _normal_pdf(grid, exact_mu[d], exact_sigma[d]),
            color="0.85",
            label="exact p(z|x)",
        )
        for (label, (mu, log_sigma)), style in zip(
            fits.items(), ("-", "--", ":", "-.")
        ):
            m, s = _numpy(mu)[d], math.exp(_numpy(log_sigma)[d])
            ax.plot(grid, _normal_pdf(grid, m, s), style, lw=2, label=f"q: {label}")
        ax.set_xlabel(f"$z_{{{d + 1}}}$")
        ax.set_yticks([])
    axes[0, 0].legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_elbo_traces(
    traces: Mapping[str, Sequence[float]],
    log_evidence: float | None = None,
    *,
    window: int = 25,
    zoom: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    r"""ELBO estimate per step for each estimator (raw, faint) with a running mean (bold).

    Args:
        traces: Label -> the ELBO estimate at every optimisation step.
        log_evidence: :math:`\log p(x)`, drawn as the ceiling no ELBO can cross.
        window: Length of the running mean.
        zoom: If given, the y-axis spans ``zoom`` nats below the ceiling (or the best value).
        ax: Axes to draw on; a new figure when ``None``.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    else:
        fig = cast(Figure, ax.figure)
    best = -math.inf
    for label, trace in traces.items():
        values = np.asarray(trace, dtype=np.float64)
        (line,) = ax.plot(values, lw=0.6, alpha=0.35)
        smooth = _running_mean(values, window)
        offset = len(values) - len(smooth)
        ax.plot(
            np.arange(offset, len(values)),
            smooth,
            lw=2,
            color=line.get_color(),
            label=label,
        )
        best = max(best, float(np.max(smooth)))
    top = best
    if log_evidence is not None:
        ax.axhline(log_evidence, color="k", ls="--", lw=1.2, label=r"$\log p(x)$")
        top = max(top, log_evidence)
    if zoom is not None:
        ax.set_ylim(top - zoom, top + 0.1 * zoom)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO estimate")
    ax.legend(frameon=False, loc="lower right")
    return fig


def _log_density_grid(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1))
    with torch.no_grad():
        values = _numpy(log_density(points)).reshape(grid_x.shape)
    return grid_x, grid_y, values


def plot_mean_field_2d(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    fits: Mapping[str, GaussianParams],
    *,
    xlim: tuple[float, float] = (-6.0, 6.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
    ax: Axes | None = None,
) -> Figure:
    r"""Contours of a 2-D target density with the 1σ and 2σ ellipses of each fitted :math:`q`.

    Args:
        log_density: ``log_density(z) -> (S,)`` for ``z`` of shape ``(S, 2)`` (float64).
        fits: Label -> ``(mu, log_sigma)`` of a mean-field Gaussian, each ``(2,)``.
        xlim, ylim: The plotted window.
        ax: Axes to draw on; a new figure when ``None``.
    """
    if ax is None:
        ax = plt.subplots(figsize=(6.4, 4.4))[1]
    as_covariance = {
        label: (mu, torch.diag(torch.exp(2 * torch.as_tensor(log_sigma))))
        for label, (mu, log_sigma) in fits.items()
    }
    return plot_covariance_fits(log_density, as_covariance, xlim=xlim, ylim=ylim, ax=ax)


def plot_weight_posterior(
    fits: Mapping[str, GaussianParams],
    names: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    r"""Posterior mean ± 2σ of every weight (e.g. of a Bayesian logistic regression), per fit.

    Args:
        fits: Label -> ``(mu, log_sigma)``, each ``(D,)``.
        names: Tick labels, one per weight.
        ax: Axes to draw on; a new figure when ``None``.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.4))
    else:
        fig = cast(Figure, ax.figure)
    n_fits = len(fits)
    for i, (label, (mu, log_sigma)) in enumerate(fits.items()):
        m, s = _numpy(mu), np.exp(_numpy(log_sigma))
        positions = np.arange(len(m)) + (i - (n_fits - 1) / 2) * 0.3
        ax.errorbar(positions, m, yerr=2 * s, fmt="o", ms=3, capsize=2, label=label)
    ax.axhline(0.0, color="0.6", lw=0.8)
    if names is not None:
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_ylabel(r"weight (mean $\pm 2\sigma$)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def _covariance_ellipse(
    mean: np.ndarray, cov: np.ndarray, radius: float, **style: object
) -> Ellipse:
    r"""The ellipse :math:`(z - m)^\top \Sigma^{-1} (z - m) = r^2` as a patch."""
    values, vectors = np.linalg.eigh(cov)
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * radius * np.sqrt(values[::-1])
    return Ellipse(tuple(mean), width, height, angle=angle, fill=False, **style)  # type: ignore[arg-type]


def plot_covariance_fits(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    fits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    xlim: tuple[float, float] = (-4.0, 6.0),
    ylim: tuple[float, float] = (-4.0, 3.0),
    ax: Axes | None = None,
) -> Figure:
    r"""Contours of a 2-D target with the 1σ and 2σ ellipses of Gaussians with any covariance.

    Args:
        log_density: ``log_density(z) -> (S,)`` for ``z`` of shape ``(S, 2)`` (float64).
        fits: Label -> ``(mean (2,), covariance (2, 2))``; a diagonal covariance draws an
            axis-aligned (mean-field) ellipse.
        xlim, ylim: The plotted window.
        ax: Axes to draw on; a new figure when ``None``.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
    else:
        fig = cast(Figure, ax.figure)
    grid_x, grid_y, values = _log_density_grid(log_density, xlim, ylim, 200)
    ax.contourf(grid_x, grid_y, np.exp(values), levels=12, cmap="Greys")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, (mean, cov)), color in zip(fits.items(), colors):
        m, c = _numpy(mean), _numpy(cov)
        for radius, style in ((1.0, "-"), (2.0, "--")):
            ax.add_patch(_covariance_ellipse(m, c, radius, lw=2, ls=style, color=color))
        ax.plot(*m, "o", color=color, label=label)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(frameon=True, fontsize=9, loc="upper left")
    return fig


def plot_density_panels(
    densities: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    xlim: tuple[float, float] = (-6.0, 6.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
) -> Figure:
    """One filled-contour panel per 2-D log density, on a shared colour scale.

    Args:
        densities: Title -> ``log_density(z) -> (S,)`` for ``z`` of shape ``(S, 2)``.
        xlim, ylim: The plotted window (the same for every panel).
    """
    n = len(densities)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False)
    grids = [_log_density_grid(f, xlim, ylim, 160) for f in densities.values()]
    top = max(float(np.exp(values).max()) for _, _, values in grids)
    levels = np.linspace(0.0, top, 13)
    for ax, title, (grid_x, grid_y, values) in zip(axes[0], densities, grids):
        ax.contourf(grid_x, grid_y, np.exp(values), levels=levels, cmap="Greys")
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
        ax.set_xlabel("$z_1$")
    axes[0, 0].set_ylabel("$z_2$")
    fig.tight_layout()
    return fig
