r"""Reference solutions for ``02_score``: the score-function (REINFORCE) gradient estimator.

For :math:`q_\lambda` and an integrand :math:`f_\lambda`,

.. math::
    \nabla_\lambda \mathbb{E}_{q_\lambda}[f_\lambda(z)]
    = \mathbb{E}_{q_\lambda}\big[f_\lambda(z)\, \nabla_\lambda \log q_\lambda(z)
      + \nabla_\lambda f_\lambda(z)\big].

Only ``sample`` and ``log_prob`` are used, so discrete families work too.

References:
    Williams (1992), "Simple statistical gradient-following algorithms";
    Ranganath, Gerrish & Blei (2014), "Black Box Variational Inference";
    Kool, van Hoof & Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from course_lib._validate import check_params, check_tensor, per_sample
from course_lib.reference._autograd import fresh_leaves, mean_grads

__all__ = [
    "gaussian_score",
    "optimal_baseline",
    "score_function_grad",
    "score_function_grad_loo",
]

Integrand = Callable[..., Tensor]
Family = Callable[..., Distribution]


def gaussian_score(z: Tensor, mu: Tensor, log_sigma: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-sample score of :math:`q = \mathcal{N}(\mu, \operatorname{diag}(e^{\log\sigma})^2)`, by hand.

    With :math:`\epsilon = (z - \mu)/\sigma`:
    :math:`\nabla_\mu \log q = \epsilon / \sigma` and
    :math:`\nabla_{\log\sigma} \log q = \epsilon^2 - 1`.

    Args:
        z: Samples, shape ``(S, D)``.
        mu: Mean, shape ``(D,)``.
        log_sigma: Log standard deviation, shape ``(D,)``.

    Returns:
        ``(d_mu, d_log_sigma)``, each of shape ``(S, D)``; no autograd graph.
    """
    z, mu, log_sigma = (
        check_tensor(n, t).detach()
        for n, t in (("z", z), ("mu", mu), ("log_sigma", log_sigma))
    )
    sigma = torch.exp(log_sigma)
    standardized = (z - mu) / sigma
    return standardized / sigma, standardized.square() - 1.0


def _draw(q: Distribution, num_samples: int, z: Tensor | None) -> Tensor:
    if z is None:
        with torch.no_grad():
            return q.sample((num_samples,))
    check_tensor("z", z)
    if z.shape[0] != num_samples:
        raise ValueError(f"z has {z.shape[0]} samples but num_samples is {num_samples}")
    return z.detach()


def _joint_log_prob(q: Distribution, z: Tensor) -> Tensor:
    """:math:`\\log q(z_s)` summed over every axis but the sample axis: shape ``(S,)``."""
    log_q = q.log_prob(z).reshape(z.shape[0], -1)
    # One value per sample already (a scalar event, or one dimension): a view, not a pass
    # over all S values that sums single elements.
    return log_q.reshape(-1) if log_q.shape[1] == 1 else log_q.sum(dim=1)


def _score_grad(
    f: Integrand,
    make_q: Family,
    params: tuple[Tensor, ...],
    num_samples: int,
    z: Tensor | None,
    baseline: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, ...]:
    params = check_params(params)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    leaves = fresh_leaves(params)
    q = make_q(*leaves)
    samples = _draw(q, num_samples, z)
    log_q = _joint_log_prob(q, samples)
    values = per_sample("f", f(samples, *leaves), num_samples)
    weight = (
        values.detach()
        if baseline is None
        else values.detach() - baseline(values.detach())
    )
    # The estimator is the gradient of (1/S) sum_s [weight_s log q(z_s) + f_lambda(z_s)]: the
    # score term plus the pathwise gradient of f (non-zero only when f depends on the
    # parameters). The weights are constants, so they enter as the backward's incoming
    # gradient instead of through a surrogate product.
    return mean_grads(leaves, num_samples, weighted=(log_q, weight), summed=values)


def score_function_grad(
    f: Integrand,
    make_q: Family,
    params: tuple[Tensor, ...],
    num_samples: int,
    z: Tensor | None = None,
) -> tuple[Tensor, ...]:
    r"""Score-function estimate of :math:`\nabla_\lambda \mathbb{E}_{q_\lambda}[f_\lambda(z)]`.

    :math:`\hat g = \frac1S \sum_s f_\lambda(z_s) \nabla_\lambda \log q_\lambda(z_s) + \nabla_\lambda f_\lambda(z_s)`.

    Args:
        f: ``f(z, *params) -> (S,)``; may depend on the parameters.
        make_q: ``make_q(*params) -> Distribution``; only ``sample``/``log_prob`` are used.
        params: Parameter tensors :math:`\lambda`; never modified, no ``.grad`` left on them.
        num_samples: Number of samples :math:`S \ge 1`.
        z: Optional samples ``(S, *event_shape)`` to use instead of drawing.

    Returns:
        One gradient tensor per parameter, shaped like it.
    """
    return _score_grad(f, make_q, params, num_samples, z, baseline=None)


def _leave_one_out_mean(values: Tensor) -> Tensor:
    """:math:`b_s = \\frac{1}{S-1}\\sum_{j \\ne s} f_j`."""
    return (values.sum() - values) / (values.shape[0] - 1)


def score_function_grad_loo(
    f: Integrand,
    make_q: Family,
    params: tuple[Tensor, ...],
    num_samples: int,
    z: Tensor | None = None,
) -> tuple[Tensor, ...]:
    r"""Score-function estimate with the leave-one-out baseline :math:`b_s = \frac{1}{S-1}\sum_{j\ne s} f_j`.

    :math:`b_s` is independent of :math:`z_s`, so the estimator stays unbiased; it has lower
    variance than the plain one when :math:`f` has a large mean.

    Args:
        f: ``f(z, *params) -> (S,)``.
        make_q: ``make_q(*params) -> Distribution``.
        params: Parameter tensors; never modified.
        num_samples: Number of samples, at least 2.
        z: Optional samples ``(S, *event_shape)``.

    Returns:
        One gradient tensor per parameter, shaped like it.
    """
    if isinstance(num_samples, int) and num_samples < 2:
        raise ValueError(
            f"the leave-one-out baseline needs num_samples >= 2, got {num_samples}"
        )
    return _score_grad(f, make_q, params, num_samples, z, baseline=_leave_one_out_mean)


def optimal_baseline(f_values: Tensor, scores: Sequence[Tensor]) -> tuple[Tensor, ...]:
    r"""Sample estimate of the variance-minimising constant baseline, per parameter coordinate.

    For one coordinate :math:`i` with per-sample score :math:`s_i = \partial_i \log q(z)`,
    :math:`\mathbb{E}[s_i] = 0` makes :math:`\mathbb{E}[(f - b) s_i] = \mathbb{E}[f s_i]` free of
    :math:`b`, so :math:`\operatorname{Var}[(f - b) s_i] = \mathbb{E}[(f - b)^2 s_i^2] - \mathbb{E}[f s_i]^2`
    and :math:`d/db = -2\,\mathbb{E}[(f - b) s_i^2] = 0` gives
    :math:`b_i^* = \mathbb{E}[f s_i^2] / \mathbb{E}[s_i^2]`, estimated by sample sums.

    Args:
        f_values: ``f(z_s)``, shape ``(S,)``.
        scores: One tensor per parameter, ``(S, *param_shape)``: the per-sample scores.

    Returns:
        One baseline tensor per parameter, shaped like the parameter; no autograd graph.
    """
    f_values = check_tensor("f_values", f_values).detach()
    if f_values.ndim != 1:
        raise ValueError(f"f_values must have shape (S,), got {tuple(f_values.shape)}")
    baselines = []
    for index, score in enumerate(scores):
        score = check_tensor(f"scores[{index}]", score).detach()
        if score.ndim < 1 or score.shape[0] != f_values.shape[0]:
            raise ValueError(
                f"scores[{index}] must have shape (S, ...) with S = {f_values.shape[0]}, "
                f"got {tuple(score.shape)}"
            )
        weight = score.square()
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        baselines.append((values * weight).sum(dim=0) / weight.sum(dim=0))
    return tuple(baselines)
