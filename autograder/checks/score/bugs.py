"""Known bugs of ``02_score`` and the hints that name them: wrong parts of an estimate
(:data:`SFG_PART_BUGS`, :data:`LOO_PART_BUGS`), a whole gradient off by a known factor
(:data:`RATIO_BUGS`), wrong Gaussian scores (:data:`SCORE_BUGS`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from autograder.compare import (
    Catalogue,
    KnownBug,
    all_known_bugs,
    first_known_bug,
    hint_for,
)


def _part(key: str) -> Callable[[dict[str, list[Tensor]]], list[Tensor]]:
    """The known wrong estimate ``key`` among those the tabulated estimate holds (:func:`tabulated_estimate`)."""
    return lambda parts: parts[key]


NO_GRAD_F_HINT = (
    "it equals the score term alone: f depends on the parameters here, so add the "
    "average of grad_lambda f(z_s) (keep f attached to the graph for that term)"
)


_UNDETACHED_F = (
    "it has an extra term log q(z_s)·grad f(z_s): detach f inside the score term "
    "(f.detach() * log_q), and add grad f through a separate f.mean()"
)


#: Known wrong estimates of ``score_function_grad`` on given samples.
SFG_PART_BUGS: Catalogue = (
    (
        KnownBug("score_function_grad/sfg_missing_grad_f_term", NO_GRAD_F_HINT),
        _part("no_grad_f"),
    ),
    (
        KnownBug("score_function_grad/sfg_does_not_detach_f", _UNDETACHED_F),
        _part("undetached_f"),
    ),
)


#: Known wrong estimates of ``score_function_grad_loo`` on given samples.
LOO_PART_BUGS: Catalogue = (
    (
        KnownBug(
            "score_function_grad_loo/loo_no_baseline",
            "it equals the plain estimator: subtract the leave-one-out baseline "
            "b_s = (sum_j f_j - f_s)/(S-1) from f_s in the score term",
        ),
        _part("no_baseline"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_in_sample_mean_baseline",
            "it uses the mean over all samples, f_s included, as the baseline: that baseline "
            "depends on z_s, so it does not cancel in expectation; leave sample s out, "
            "b_s = (sum_j f_j - f_s)/(S-1)",
        ),
        _part("in_sample_mean"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_baseline_not_detached",
            "the baseline is not detached: b_s must be a constant in the surrogate "
            "(compute it from f.detach())",
        ),
        _part("undetached_baseline"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_adds_baseline",
            "the baseline is added to f_s: it must be subtracted, (f_s - b_s)",
        ),
        _part("baseline_added"),
    ),
    (
        KnownBug(
            "score_function_grad_loo/loo_centred_form_scales_grad_f_too",
            "the factor S/(S-1) of the centred form belongs to the score term only, "
            "not to the grad f term",
        ),
        _part("centred_scales_grad_f"),
    ),
    (
        KnownBug("score_function_grad_loo/loo_missing_grad_f_term", NO_GRAD_F_HINT),
        _part("no_grad_f"),
    ),
    (
        KnownBug("score_function_grad_loo/loo_does_not_detach_f", _UNDETACHED_F),
        _part("undetached_f"),
    ),
)


def _fit_ratio(got: np.ndarray, want: np.ndarray) -> float | None:
    """The scalar ``r`` with ``got == r * want`` (to 1e-6), if there is one."""
    denom = float(np.sum(want * want))
    if denom == 0.0:
        return None
    r = float(np.sum(got * want)) / denom
    residual = float(np.max(np.abs(got - r * want))) if got.size else 0.0
    return (
        r
        if residual <= 1e-6 * (1.0 + float(np.max(np.abs(want)))) * max(1.0, abs(r))
        else None
    )


#: Known wrong gradients that are a fixed multiple of the right one: the factor, from the
#: number of samples ``S`` and of dimensions ``D``.
RATIO_BUGS: Catalogue = (
    (
        KnownBug(
            "score_function_grad/sfg_sums_over_samples",
            "the gradient is off by a factor of {S} = num_samples: did you sum over samples instead of averaging?",
        ),
        lambda S, D: float(S),
    ),
    (
        KnownBug(
            "score_function_grad/sfg_averages_twice",
            "the gradient is 1/{S} of the right one: did you divide by num_samples twice (a mean, then / S again)? "
            "Average the products f(z_s)·log q(z_s) once",
        ),
        lambda S, D: 1.0 / S,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_sign_flipped",
            "the gradient has the wrong sign: the estimator is +f(z)·grad log q(z) (no minus; this is not a loss to minimise)",
        ),
        lambda S, D: -1.0,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_averages_log_prob_over_dims",
            "the gradient is 1/{D} of the right one: did you average log q over the dimensions instead of summing?",
        ),
        lambda S, D: 1.0 / D,
    ),
    (
        KnownBug(
            "score_function_grad/sfg_backward_twice",
            "the gradient is twice the right one: is a term counted twice (rsample plus the score term?)",
        ),
        lambda S, D: 2.0,
    ),
    (
        # The size of this bias is a written question of 02: name the bug, not the factor.
        KnownBug(
            "score_function_grad_loo/loo_in_sample_mean_baseline",
            "the gradient is a fixed fraction of the right one: is the baseline the mean over all "
            "samples, f_s included? Leave sample s out",
        ),
        lambda S, D: (S - 1) / S,
    ),
)


def _same_factor(r: float, value: float) -> bool:
    return abs(r - value) <= 1e-6 * max(1.0, abs(value))


def ratio_hint(got: list[np.ndarray], want: list[np.ndarray], S: int, D: int) -> str:
    """A hint when the whole gradient is a known multiple of the right one.

    Several bugs can give the same factor (1/S and (S-1)/S when S = 2, 1/S and 1/D when
    S = D): the hint then names each of them rather than the first.
    """
    flat_got = np.concatenate([g.ravel() for g in got])
    flat_want = np.concatenate([w.ravel() for w in want])
    if np.all(np.abs(flat_got) <= 1e-12 * (1 + np.abs(flat_want).max())):
        return (
            "every gradient is 0: is log q computed under torch.no_grad(), from detached parameters, "
            "or from a distribution built before the parameters required grad?"
        )
    r = _fit_ratio(flat_got, flat_want)
    if r is None:
        return ""
    bugs = all_known_bugs(r, RATIO_BUGS, _same_factor, S, D)
    if bugs:
        return " Or: ".join(bug.text(S=S, D=D) for bug in bugs)
    return f"the gradient is {r:.4g} times the right one"


def parts_close(got: list[np.ndarray], candidate: list[Tensor]) -> bool:
    cand = [c.numpy() for c in candidate]
    return all(g.shape == c.shape for g, c in zip(got, cand)) and all(
        np.allclose(g, c, rtol=1e-6, atol=1e-9 * (1 + np.abs(c).max()))
        for g, c in zip(got, cand)
    )


def part_hint(
    got: list[np.ndarray], parts: dict[str, list[Tensor]], catalogue: Catalogue
) -> str:
    """A hint when the result equals a known wrong variant of the estimator."""
    return hint_for(got, catalogue, parts_close, parts)


#: Known wrong scores, from the standardised noise ``e``, ``sigma`` and ``log_sigma``.
SCORE_BUGS: Catalogue = (
    (
        KnownBug(
            "gaussian_score/gaussian_score_sign_flipped_mu",
            "d_mu has the wrong sign: grad_mu log q = (z - mu)/sigma², not (mu - z)/sigma²",
        ),
        lambda e, s, ls: (-e / s, e**2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_divides_by_sigma_once",
            "d_mu is (z - mu)/sigma: divide by sigma², the variance",
        ),
        lambda e, s, ls: (e, e**2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_variance_as_scale",
            "exp(log_sigma) is the standard deviation; you used its square as if it were",
        ),
        lambda e, s, ls: (e / s**3, (e / s) ** 2 - 1),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_forgets_minus_one",
            "d_log_sigma is missing the -1: grad_{log sigma} log q = ((z - mu)/sigma)² - 1",
        ),
        lambda e, s, ls: (e / s, e**2),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_wrt_sigma_not_log_sigma",
            "d_log_sigma is the gradient with respect to sigma, not log sigma: multiply by sigma (chain rule)",
        ),
        lambda e, s, ls: (e / s, (e**2 - 1) / s),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_swaps_outputs",
            "you returned (d_log_sigma, d_mu): the order is (d_mu, d_log_sigma)",
        ),
        lambda e, s, ls: (e**2 - 1, e / s),
    ),
    (
        KnownBug(
            "gaussian_score/gaussian_score_log_sigma_as_sigma",
            "you used log_sigma as if it were sigma: sigma = exp(log_sigma)",
        ),
        lambda e, s, ls: (e * s / ls**2, (e * s / ls) ** 2 - 1),
    ),
)


def _scores_close(got: tuple[np.ndarray, ...], candidate: tuple[Tensor, ...]) -> bool:
    return all(
        g.shape == c.shape and np.allclose(g, c.numpy(), rtol=1e-6, atol=1e-9)
        for g, c in zip(got, candidate)
    )


def _score_hint(
    got: tuple[np.ndarray, ...], z: Tensor, mu: Tensor, log_sigma: Tensor
) -> str:
    sigma = torch.exp(log_sigma)
    eps = (z - mu) / sigma
    bug = first_known_bug(got, SCORE_BUGS, _scores_close, eps, sigma, log_sigma)
    if bug is not None:
        return bug.text()
    return "per sample s and dimension d: d_mu = (z - mu)/sigma², d_log_sigma = ((z - mu)/sigma)² - 1, sigma = exp(log_sigma)"
