"""The figures of 04_elbo draw headless, quietly (no warning reaches stderr) and show what they claim."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from course_lib.models import Bimodal2D
from course_lib.plotting import vi


@pytest.fixture(autouse=True)
def _warnings_are_errors_and_figures_closed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    plt.close("all")


def _params(*values: float) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.tensor(values, dtype=torch.float64)
    return mu, torch.full_like(mu, -1.0)


def test_gaussian_fits_one_panel_per_dimension() -> None:
    fig = vi.plot_gaussian_fits(
        _params(1.0, -0.5, 0.0),
        {"reparam": _params(1.1, -0.4, 0.1), "score": _params(0.9, -0.6, 0.0)},
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    # the exact posterior is filled, each fit is a line
    assert all(len(ax.lines) == 2 for ax in fig.axes)


def test_elbo_traces_smooth_and_draw_the_ceiling() -> None:
    rng = np.random.default_rng(0)
    traces = {
        "reparam": list(
            -10 - np.exp(-np.arange(300) / 30) + 0.1 * rng.normal(size=300)
        ),
        "score": list(-12 + rng.normal(size=300)),
    }
    fig = vi.plot_elbo_traces(traces, log_evidence=-10.0, window=25, zoom=5.0)
    ax = fig.axes[0]
    ceiling = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(ceiling) == 1 and ceiling[0].get_ydata()[0] == pytest.approx(-10.0)
    bottom, top = ax.get_ylim()
    assert (
        -15.0 <= bottom <= -14.5 and top > -10.0
    )  # zoom nats below the ceiling or the best value
    # raw + running mean per trace; the running mean is shorter by window - 1
    smooth = [line for line in ax.lines if line.get_linewidth() == 2]
    assert [len(line.get_xdata()) for line in smooth] == [276, 276]


def test_elbo_traces_on_given_axes_and_short_traces() -> None:
    fig, ax = plt.subplots()
    assert vi.plot_elbo_traces({"few steps": [-3.0, -2.0]}, ax=ax) is fig


def test_mean_field_2d_draws_one_and_two_sigma_ellipses() -> None:
    fits = {
        "one mode": (
            torch.tensor([3.0, 0.0], dtype=torch.float64),
            torch.zeros(2, dtype=torch.float64),
        )
    }
    fig = vi.plot_mean_field_2d(Bimodal2D(separation=6.0), fits)
    ellipses = [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]
    assert sorted(e.width for e in ellipses) == pytest.approx([2.0, 4.0])
    assert all(e.center == pytest.approx((3.0, 0.0)) for e in ellipses)


def test_weight_posterior_labels_every_weight() -> None:
    names = ["intercept", "a", "b"]
    fig = vi.plot_weight_posterior({"reparam": _params(0.5, -1.0, 2.0)}, names)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    assert math.isfinite(fig.axes[0].get_ylim()[0])


def test_covariance_fits_draw_rotated_ellipses_of_the_right_size() -> None:
    from course_lib.models import CorrelatedGaussian2D

    target = CorrelatedGaussian2D(mean=(0.0, 0.0), stds=(1.0, 1.0), correlation=0.6)
    fits = {
        "exact": (target.mean, target.covariance),
        "diagonal": (torch.tensor([1.0, -1.0]), torch.diag(torch.tensor([4.0, 1.0]))),
    }
    fig = vi.plot_covariance_fits(target, fits)
    ellipses = [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 4
    exact_one_sigma, _, diag_one_sigma, diag_two_sigma = ellipses
    # eigenvalues of [[1, .6], [.6, 1]] are 1.6 and 0.4; the major axis lies on the diagonal
    assert sorted([exact_one_sigma.width, exact_one_sigma.height]) == pytest.approx(
        [2 * math.sqrt(0.4), 2 * math.sqrt(1.6)]
    )
    assert abs(exact_one_sigma.angle) % 180 == pytest.approx(45.0)
    assert sorted([diag_one_sigma.width, diag_one_sigma.height]) == pytest.approx(
        [2.0, 4.0]
    )
    assert diag_two_sigma.width == pytest.approx(2 * diag_one_sigma.width)
    assert diag_one_sigma.center == pytest.approx((1.0, -1.0))


def test_density_panels_share_one_colour_scale() -> None:
    wide = Bimodal2D(separation=6.0, std=2.0)
    narrow = Bimodal2D(separation=6.0, std=0.5)
    fig = vi.plot_density_panels({"wide": wide, "narrow": narrow})
    assert [ax.get_title() for ax in fig.axes] == ["wide", "narrow"]
    levels = [ax.collections[0].levels for ax in fig.axes]
    assert np.array_equal(levels[0], levels[1])
    # the narrow density's peak (about 0.32) sets the shared top level
    assert levels[0][-1] == pytest.approx(0.5 / (2 * math.pi * 0.25), rel=0.05)
