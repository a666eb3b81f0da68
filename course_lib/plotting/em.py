"""Figures for ``01_em``: mixtures over their data, EM's progress, the free energy.

Every function takes plain arrays, draws one figure and returns it; nothing is computed
with a student's code here, and nothing writes to stderr.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

__all__ = [
    "plot_bound_and_gap",
    "mixture_log_density",
    "plot_em_snapshots",
    "plot_free_energy_path",
    "plot_free_energy_steps",
    "plot_gmm",
    "plot_log_likelihood",
]

#: One colour per component (colour-blind-safe Okabe–Ito palette), as RGB in [0, 1].
PALETTE = np.array(
    [
        [0.000, 0.447, 0.698],
        [0.835, 0.369, 0.000],
        [0.000, 0.620, 0.451],
        [0.800, 0.475, 0.655],
        [0.941, 0.894, 0.259],
        [0.337, 0.706, 0.914],
        [0.902, 0.624, 0.000],
        [0.000, 0.000, 0.000],
    ]
)


def _axes(
    ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)
) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, new_ax


def mixture_log_density(
    points: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> np.ndarray:
    r""":math:`\log \sum_k \pi_k \mathcal{N}(x; \mu_k, \Sigma_k)` at each row of ``points`` ``(M, D)``."""
    per_component = np.stack(
        [
            np.log(w) + multivariate_normal(mean=m, cov=c).logpdf(points)
            for w, m, c in zip(weights, means, covs)
        ],
        axis=-1,
    )
    return logsumexp(per_component.reshape(len(points), len(weights)), axis=-1)


def _point_colours(resp: np.ndarray) -> np.ndarray:
    """Mix the component colours by responsibility: a soft assignment reads as a blend."""
    k = resp.shape[1]
    palette = PALETTE[np.arange(k) % len(PALETTE)]
    return np.clip(np.asarray(resp) @ palette, 0.0, 1.0)


def _ellipse(
    ax: Axes, mean: np.ndarray, cov: np.ndarray, colour: np.ndarray, n_std: float = 2.0
) -> None:
    values, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    width, height = 2.0 * n_std * np.sqrt(np.maximum(values[::-1], 0.0))
    ax.add_patch(
        Ellipse(
            tuple(mean), width, height, angle=angle, fill=False, lw=2.0, color=colour
        )
    )


def plot_gmm(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    *,
    resp: np.ndarray | None = None,
    ax: Axes | None = None,
    title: str = "",
    grid_size: int = 120,
) -> Figure:
    """2-D data over the mixture's density contours, with a 2σ ellipse per component.

    Args:
        X: Data ``(N, 2)``.
        weights, means, covs: The mixture, shapes ``(K,)``, ``(K, 2)``, ``(K, 2, 2)``.
        resp: Optional responsibilities ``(N, K)``: points are coloured by their blend.
        ax: Draw into these axes instead of a new figure.
        title: Axes title.
        grid_size: Contour grid resolution per axis.
    """
    X, means, covs = (
        np.asarray(X, float),
        np.asarray(means, float),
        np.asarray(covs, float),
    )
    if X.shape[1] != 2:
        raise ValueError(f"plot_gmm draws 2-D data, got {X.shape[1]} dimensions")
    fig, ax = _axes(ax)
    pad = 0.15 * (X.max(axis=0) - X.min(axis=0)) + 1e-9
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(
        np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)
    )
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    density = mixture_log_density(
        grid, np.asarray(weights, float), means, covs
    ).reshape(gx.shape)
    top = density.max()
    ax.contourf(
        gx,
        gy,
        density,
        levels=np.linspace(top - 12.0, top, 13),
        cmap="Greys",
        alpha=0.35,
        extend="min",
    )
    colours = _point_colours(resp) if resp is not None else np.full((len(X), 3), 0.35)
    ax.scatter(X[:, 0], X[:, 1], s=9, c=colours, alpha=0.8, linewidths=0)
    for k in range(len(means)):
        _ellipse(ax, means[k], covs[k], PALETTE[k % len(PALETTE)])
        ax.plot(*means[k], marker="x", ms=9, mew=2.5, color=PALETTE[k % len(PALETTE)])
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), title=title, xticks=[], yticks=[])
    ax.set_aspect("equal")
    return fig


def plot_em_snapshots(
    X: np.ndarray,
    snapshots: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> Figure:
    """One panel per ``(iteration, weights, means, covs, resp)``: EM finding the clusters."""
    fig, axes = plt.subplots(
        1, len(snapshots), figsize=(3.2 * len(snapshots), 3.4), layout="constrained"
    )
    for ax, (iteration, weights, means, covs, resp) in zip(
        np.atleast_1d(axes), snapshots
    ):
        plot_gmm(
            X,
            weights,
            means,
            covs,
            resp=resp,
            ax=ax,
            title=f"after {iteration} iteration{'s' * (iteration != 1)}",
        )
    return fig


def plot_log_likelihood(
    log_likelihoods: Sequence[float], *, ax: Axes | None = None, title: str = ""
) -> Figure:
    """The log-likelihood per EM iteration, with the largest drop (if any) called out."""
    values = np.asarray(log_likelihoods, dtype=float)
    fig, ax = _axes(ax, (5.5, 3.6))
    steps = np.arange(len(values))
    ax.plot(steps, values, marker="o", ms=3.5, lw=1.5, color=PALETTE[0])
    drops = np.diff(values)
    worst = float(drops.min()) if len(drops) else 0.0
    if worst < 0:
        at = int(np.argmin(drops)) + 1
        ax.plot(at, values[at], marker="o", ms=10, mfc="none", mec="red", mew=2)
        note = f"falls by {-worst:.3g} at iteration {at}: is the E-step right?"
    else:
        note = "never falls"
    ax.set(
        xlabel="EM iteration",
        ylabel=r"$\log p(X \mid \theta)$",
        title=title or f"log-likelihood ({note})",
    )
    ax.grid(alpha=0.3)
    return fig


def plot_free_energy_path(
    ts: np.ndarray,
    free_energies: np.ndarray,
    neg_log_likelihood: float,
    *,
    ax: Axes | None = None,
) -> Figure:
    r""":math:`F(q_t, \theta)` along :math:`q_t = (1 - t)\,q_0 + t\,p(z \mid x, \theta)`, above :math:`-\log p(X \mid \theta)`."""
    fig, ax = _axes(ax, (5.5, 3.6))
    ax.plot(ts, free_energies, lw=2, color=PALETTE[1], label=r"$F(q_t, \theta)$")
    ax.axhline(
        neg_log_likelihood,
        ls="--",
        color="black",
        lw=1.2,
        label=r"$-\log p(X \mid \theta)$",
    )
    ax.set(xlabel=r"$t$  ($t = 1$: the E-step's $q$)", ylabel="free energy")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def plot_free_energy_steps(
    after_e: Sequence[float], after_m: Sequence[float], *, ax: Axes | None = None
) -> Figure:
    """EM as coordinate descent on F: the value after each E-step and after each M-step."""
    e_values, m_values = np.asarray(after_e, float), np.asarray(after_m, float)
    fig, ax = _axes(ax, (5.5, 3.6))
    path = np.ravel(np.column_stack([e_values, m_values]))
    x = np.arange(len(path)) / 2.0
    ax.step(x, path, where="post", color="0.5", lw=1)
    ax.plot(
        x[0::2], e_values, "o", color=PALETTE[0], label=r"after E-step ($F = -\log p$)"
    )
    ax.plot(x[1::2], m_values, "s", color=PALETTE[1], label="after M-step")
    ax.set(
        xlabel="EM iteration", ylabel=r"$F(q, \theta)$", title="each half-step lowers F"
    )
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def plot_bound_and_gap(
    free_energies: Sequence[float],
    neg_log_likelihoods: Sequence[float],
    *,
    title: str = "",
) -> Figure:
    r"""EM half-steps (E, M, E, M, ...): :math:`F(q, \theta)` beside :math:`-\log p(X \mid \theta)`, and their gap.

    The gap :math:`F + \log p(X \mid \theta) = \sum_n \mathrm{KL}(q_n \Vert p(z_n \mid x_n, \theta))` is drawn
    as bars on its own axis, so a gap of a few nats stays visible next to values in the thousands.

    Args:
        free_energies: :math:`F` after each half-step, E-step first (even length).
        neg_log_likelihoods: :math:`-\log p(X \mid \theta)` at the same half-steps.
        title: Figure title.
    """
    f = np.asarray(free_energies, float)
    nll = np.asarray(neg_log_likelihoods, float)
    if f.shape != nll.shape or f.ndim != 1 or len(f) % 2:
        raise ValueError(
            "free_energies and neg_log_likelihoods must be 1-D, of the same even length "
            f"(E, M, E, M, ...); got {f.shape} and {nll.shape}"
        )
    x = np.arange(len(f)) / 2.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), layout="constrained")
    left.step(x, f, where="post", color="0.6", lw=1)
    left.plot(x[0::2], f[0::2], "o", color=PALETTE[0], label="F after an E-step")
    left.plot(x[1::2], f[1::2], "s", color=PALETTE[1], label="F after an M-step")
    left.plot(
        x,
        nll,
        ls="--",
        marker="x",
        color="black",
        lw=1,
        label=r"$-\log p(X \mid \theta)$",
    )
    left.set(xlabel="EM iteration", ylabel="nats", title="the bound and the objective")
    left.legend(frameon=False, fontsize="small")
    left.grid(alpha=0.3)
    gap = f - nll
    colours = [PALETTE[0] if i % 2 == 0 else PALETTE[1] for i in range(len(f))]
    right.bar(x, gap, width=0.4, color=colours)
    right.axhline(0.0, color="black", lw=0.8)
    right.set(
        xlabel="EM iteration",
        ylabel=r"$F + \log p(X \mid \theta) = \sum_n \mathrm{KL}$",
        title="the gap after each half-step",
    )
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
