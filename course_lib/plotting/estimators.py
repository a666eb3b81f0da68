"""Figures for ``02_score`` and ``03_reparam``: gradient estimators and their variance.

Every function takes plain arrays (numpy or CPU tensors), draws one figure and returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from course_lib.plotting.em import PALETTE

__all__ = [
    "plot_estimates",
    "plot_sampler_check",
    "plot_score_function",
    "plot_variance_panels",
    "plot_variance_vs",
    "plot_variance_vs_samples",
]

ArrayLike = np.ndarray | Sequence[float]


def _np(values: object) -> np.ndarray:
    detach = getattr(values, "detach", None)
    if detach is not None:
        values = detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _axes(
    ax: Axes | None, figsize: tuple[float, float] = (5.5, 3.6)
) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, new_ax


def plot_score_function(
    z: ArrayLike,
    density: ArrayLike,
    scores: Mapping[str, ArrayLike],
    *,
    title: str = "",
) -> Figure:
    """A density and its score functions on one grid: where each score pushes the parameters.

    Args:
        z: Grid ``(M,)``.
        density: ``q(z)`` on the grid.
        scores: label -> the score (e.g. ``d log q / d mu``) on the grid.
        title: Figure title.
    """
    z = _np(z)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.0, 4.6), sharex=True, layout="constrained"
    )
    top.fill_between(z, _np(density), color=PALETTE[0], alpha=0.3)
    top.plot(z, _np(density), color=PALETTE[0])
    top.set(ylabel="$q(z)$", title=title)
    for i, (label, values) in enumerate(scores.items()):
        bottom.plot(
            z, _np(values), lw=2, color=PALETTE[(i + 1) % len(PALETTE)], label=label
        )
    bottom.axhline(0.0, color="black", lw=0.8)
    bottom.set(xlabel="$z$", ylabel="score")
    bottom.legend(frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def plot_estimates(
    estimates: Mapping[str, ArrayLike],
    true_value: float | None = None,
    *,
    xlabel: str = "gradient estimate",
    title: str = "",
    bins: int = 40,
) -> Figure:
    """Histograms of repeated gradient estimates, with the exact gradient as a line."""
    fig, ax = _axes(None)
    values = {label: _np(v).ravel() for label, v in estimates.items()}
    everything = np.concatenate(list(values.values()))
    lo, hi = np.quantile(everything, [0.005, 0.995])
    for i, (label, v) in enumerate(values.items()):
        ax.hist(
            v,
            bins=bins,
            range=(lo, hi),
            alpha=0.55,
            color=PALETTE[i % len(PALETTE)],
            label=f"{label} (sd {v.std():.3g})",
        )
    if true_value is not None:
        ax.axvline(
            true_value, color="black", lw=2, ls="--", label=f"exact {true_value:.3g}"
        )
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    ax.legend(frameon=False)
    return fig


def plot_variance_vs_samples(
    num_samples: ArrayLike,
    variances: Mapping[str, ArrayLike],
    *,
    title: str = "variance of the gradient estimate",
) -> Figure:
    """Variance against the number of samples on log-log axes, with a 1/S guide per curve."""
    s = _np(num_samples)
    fig, ax = _axes(None, (5.8, 4.0))
    for i, (label, v) in enumerate(variances.items()):
        v = _np(v)
        colour = PALETTE[i % len(PALETTE)]
        ax.loglog(s, v, marker="o", lw=2, color=colour, label=label)
        ax.loglog(s, v[0] * s[0] / s, ls=":", color=colour, lw=1)
    ax.plot([], [], ls=":", color="0.4", label=r"$\propto 1/S$")
    ax.set(xlabel="number of samples $S$", ylabel="variance", title=title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_variance_vs(
    x: ArrayLike,
    variances: Mapping[str, ArrayLike],
    *,
    xlabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = True,
    exact: Mapping[str, ArrayLike] | None = None,
) -> Figure:
    """Variance of several estimators against one knob (an offset, a frequency ...).

    ``exact`` optionally maps the same labels to closed-form variances, drawn as dashed lines.
    """
    x = _np(x)
    fig, ax = _axes(None, (5.8, 4.0))
    _draw_variances(ax, x, variances, exact)
    ax.set(xlabel=xlabel, ylabel="variance", title=title)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def _draw_variances(
    ax: Axes,
    x: np.ndarray,
    variances: Mapping[str, ArrayLike],
    exact: Mapping[str, ArrayLike] | None,
) -> None:
    """Exact curves as wide pale bands *under* the Monte Carlo markers, so both stay visible."""
    for i, (label, v) in enumerate(variances.items()):
        colour = PALETTE[i % len(PALETTE)]
        if exact is not None and label in exact:
            ax.plot(x, _np(exact[label]), lw=7, alpha=0.25, color=colour, zorder=1)
        ax.plot(
            x,
            _np(v),
            marker="o",
            ms=5,
            lw=1,
            ls=":",
            color=colour,
            label=label,
            zorder=3,
        )
    if exact:
        ax.plot([], [], lw=7, alpha=0.25, color="0.4", label="exact")


def plot_variance_panels(
    x: ArrayLike,
    panels: Mapping[str, Mapping[str, ArrayLike]],
    *,
    xlabel: str,
    exact: Mapping[str, Mapping[str, ArrayLike]] | None = None,
    suptitle: str = "",
    logx: bool = True,
) -> Figure:
    """Side-by-side :func:`plot_variance_vs` panels (one per parameter), sharing the x axis.

    ``panels`` maps a panel title to ``{estimator label: variances}``; ``exact`` has the same
    structure (missing entries are simply not drawn).
    """
    x = _np(x)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(5.0 * len(panels), 4.0),
        layout="constrained",
        squeeze=False,
    )
    for ax, (title, variances) in zip(axes[0], panels.items()):
        _draw_variances(ax, x, variances, (exact or {}).get(title))
        ax.set(xlabel=xlabel, ylabel="variance", title=title)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(frameon=False, fontsize="small")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_sampler_check(
    samples: Mapping[str, ArrayLike],
    densities: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    bins: int = 60,
) -> Figure:
    """One panel per family: a histogram of reparameterized samples over the true density.

    The histogram is normalised by *all* samples (not only those inside the range), so a
    heavy tail outside the window does not inflate the bars.
    """
    names = list(samples)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(3.4 * cols, 2.7 * rows),
        layout="constrained",
        squeeze=False,
    )
    for ax, name in zip(axes.ravel(), names):
        z = _np(samples[name]).ravel()
        lo, hi = (ranges or {}).get(name, tuple(np.quantile(z, [0.005, 0.995])))
        width = (hi - lo) / bins
        ax.hist(
            z,
            bins=bins,
            range=(lo, hi),
            weights=np.full(len(z), 1.0 / (len(z) * width)),
            color=PALETTE[0],
            alpha=0.5,
        )
        grid = np.linspace(lo, hi, 400)
        ax.plot(grid, densities[name](grid), color="black", lw=1.5)
        ax.set(title=name, xlim=(lo, hi), yticks=[])
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    return fig
