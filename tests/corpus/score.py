"""Corpus for ``02_score``: correct variants (full marks) and mutants named after their bug.

The mutants follow the catalogue of realistic REINFORCE bugs (anchors-gradient-testing.md §4.2):
each is a complete, plausible student solution with one mistake. Several only show when the
function draws its own samples (``z=None``): those are what the statistical properties are for.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Normal

from tests.corpus import equivalent, mutant, variant

# --------------------------------------------------------------------------- building blocks


def _leaves(params):
    return tuple(p.detach().clone().requires_grad_(True) for p in params)


def _samples(q, num_samples, z):
    if z is not None:
        return z
    with torch.no_grad():
        return q.sample((num_samples,))


def _log_q(q, z):
    """log q(z_s) summed over every axis but the sample axis: (S,)."""
    log_q = q.log_prob(z)
    return log_q.reshape(z.shape[0], -1).sum(dim=1)


def _grads(surrogate, leaves):
    grads = torch.autograd.grad(surrogate, leaves, allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))


def _loo(values):
    return (values.sum() - values) / (values.shape[0] - 1)


def _surrogate_estimator(f, make_q, params, num_samples, z, weight=lambda v: v):
    """The usual construction with a hook on the weight of the score term (mutants change it)."""
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    surrogate = (weight(values.detach()) * _log_q(q, samples)).mean() + values.mean()
    return _grads(surrogate, leaves)


# --------------------------------------------------------------------------- gaussian_score


@variant("gaussian_score")
def gaussian_score_precision_form(z, mu, log_sigma):
    precision = torch.exp(-2 * log_sigma.detach())
    centred = z - mu.detach()
    return centred * precision, centred**2 * precision - 1


@variant("gaussian_score")
def gaussian_score_numpy(z, mu, log_sigma):
    z_, mu_, ls_ = (t.detach().numpy() for t in (z, mu, log_sigma))
    sigma2 = np.exp(2 * ls_)
    d_mu = (z_ - mu_) / sigma2
    d_log_sigma = (z_ - mu_) ** 2 / sigma2 - 1.0
    return torch.from_numpy(d_mu), torch.from_numpy(d_log_sigma)


@variant("gaussian_score")
def gaussian_score_expanded_square(z, mu, log_sigma):
    with torch.no_grad():
        sigma = log_sigma.exp()
        d_log_sigma = (z * z - 2 * z * mu + mu * mu) / sigma**2 - 1
        return (z - mu) / sigma / sigma, d_log_sigma


@variant("gaussian_score")
def gaussian_score_standardise_first(z, mu, log_sigma):
    mu, log_sigma = mu.detach(), log_sigma.detach()
    eps = (z - mu) * torch.exp(-log_sigma)
    return eps * torch.exp(-log_sigma), eps.pow(2) - 1


@mutant("gaussian_score")
def gaussian_score_autograd_create_graph(z, mu, log_sigma):
    # Right values by autograd on copies, but create_graph=True: the scores hold its graph.
    mu_s = mu.detach().expand_as(z).clone().requires_grad_(True)
    ls_s = log_sigma.detach().expand_as(z).clone().requires_grad_(True)
    log_q = Normal(mu_s, torch.exp(ls_s)).log_prob(z.detach()).sum()
    return torch.autograd.grad(log_q, (mu_s, ls_s), create_graph=True)


@mutant("gaussian_score")
def gaussian_score_sign_flipped_mu(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    return (mu.detach() - z) / sigma**2, ((z - mu.detach()) / sigma) ** 2 - 1


@mutant("gaussian_score")
def gaussian_score_divides_by_sigma_once(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    return eps, eps**2 - 1


@mutant("gaussian_score")
def gaussian_score_wrt_sigma_not_log_sigma(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    centred = z - mu.detach()
    return centred / sigma**2, (centred**2 - sigma**2) / sigma**3


@mutant("gaussian_score")
def gaussian_score_variance_as_scale(z, mu, log_sigma):
    # the variance, used as the standard deviation
    sigma = torch.exp(log_sigma.detach()) ** 2
    eps = (z - mu.detach()) / sigma
    return eps / sigma, eps**2 - 1


@mutant("gaussian_score")
def gaussian_score_forgets_minus_one(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    return eps / sigma, eps**2


@mutant("gaussian_score")
def gaussian_score_averages_over_samples(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    return (eps / sigma).mean(dim=0), (eps**2 - 1).mean(dim=0)


@mutant("gaussian_score")
def gaussian_score_swaps_outputs(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    return eps**2 - 1, eps / sigma


@mutant("gaussian_score")
def gaussian_score_log_sigma_as_sigma(z, mu, log_sigma):
    sigma = log_sigma.detach()
    eps = (z - mu.detach()) / sigma
    return eps / sigma, eps**2 - 1


@mutant("gaussian_score")
def gaussian_score_subtracts_in_place(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    z -= mu.detach()  # modifies the caller's samples
    return z / sigma**2, (z / sigma) ** 2 - 1


@mutant("gaussian_score")
def gaussian_score_leaves_grad_on_mu(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    # "sanity check" against autograd, on the caller's tensor
    mu.requires_grad_(True)
    Normal(mu, sigma).log_prob(z).sum().backward()
    return eps / sigma, eps**2 - 1


@mutant("gaussian_score")
def gaussian_score_squeezes_axes(z, mu, log_sigma):
    sigma = torch.exp(log_sigma.detach())
    eps = (z - mu.detach()) / sigma
    return (eps / sigma).squeeze(), (eps**2 - 1).squeeze()


# --------------------------------------------------------------------------- score_function_grad variants


@variant("score_function_grad")
def sfg_surrogate_backward(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    loss = (values.detach() * _log_q(q, samples)).mean() + values.mean()
    loss.backward()
    return tuple(torch.zeros_like(p) if p.grad is None else p.grad for p in leaves)


@variant("score_function_grad")
def sfg_per_sample_scores(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    log_q = _log_q(q, samples)
    total = [torch.zeros_like(p) for p in leaves]
    for s in range(num_samples):
        if log_q.requires_grad:
            score = torch.autograd.grad(
                log_q[s], leaves, retain_graph=True, allow_unused=True
            )
            score = [
                torch.zeros_like(p) if g is None else g for p, g in zip(leaves, score)
            ]
        else:
            score = [torch.zeros_like(p) for p in leaves]
        for i, g in enumerate(score):
            total[i] = total[i] + values[s].detach() * g
    grad_f = (
        _grads(values.mean(), leaves)
        if values.requires_grad
        else [torch.zeros_like(p) for p in leaves]
    )
    return tuple(t / num_samples + g for t, g in zip(total, grad_f))


@variant("score_function_grad")
def sfg_jacobian(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    with torch.no_grad():
        samples = _samples(make_q(*leaves), num_samples, z)
    jac = torch.autograd.functional.jacobian(
        lambda *ps: _log_q(make_q(*ps), samples), leaves
    )
    values = f(samples, *leaves)
    weights = values.detach() / num_samples
    score_term = [torch.tensordot(weights, j, dims=1) for j in jac]
    grad_f = (
        _grads(values.mean(), leaves)
        if values.requires_grad
        else [torch.zeros_like(p) for p in leaves]
    )
    return tuple(a + b for a, b in zip(score_term, grad_f))


@variant("score_function_grad")
def sfg_weighted_vjp(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    log_q = _log_q(q, samples)
    score_term = torch.autograd.grad(
        log_q, leaves, grad_outputs=values.detach() / num_samples, allow_unused=True
    )
    grad_f = (
        _grads(values.mean(), leaves) if values.requires_grad else [None] * len(leaves)
    )
    return tuple(
        (torch.zeros_like(p) if a is None else a) + (0 if b is None else b)
        for p, a, b in zip(leaves, score_term, grad_f)
    )


# --------------------------------------------------------------------------- score_function_grad mutants


@mutant("score_function_grad")
def sfg_create_graph_keeps_graph(f, make_q, params, num_samples, z=None):
    # Right values, but create_graph=True: each gradient holds the surrogate's graph.
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    surrogate = (values.detach() * _log_q(q, samples)).mean() + values.mean()
    grads = torch.autograd.grad(surrogate, leaves, allow_unused=True, create_graph=True)
    return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))


@mutant("score_function_grad")
def sfg_missing_grad_f_term(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves).detach()
    return _grads((values * _log_q(q, samples)).mean(), leaves)


@mutant("score_function_grad")
def sfg_does_not_detach_f(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads((values * _log_q(q, samples)).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_prob_instead_of_log_prob(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    prob = torch.exp(_log_q(q, samples))
    return _grads((values.detach() * prob).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_mean_times_mean(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads(
        _log_q(q, samples).mean() * values.detach().mean() + values.mean(), leaves
    )


@mutant("score_function_grad")
def sfg_sum_times_mean(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads(
        _log_q(q, samples).sum() * values.detach().mean() + values.mean(), leaves
    )


@mutant("score_function_grad")
def sfg_averages_twice(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    surrogate = (values.detach() * _log_q(q, samples)).mean() + values.mean()
    return _grads(surrogate / num_samples, leaves)


@mutant("score_function_grad")
def sfg_backward_twice(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    surrogate = (values.detach() * _log_q(q, samples)).mean() + values.mean()
    surrogate.backward(retain_graph=True)
    surrogate.backward()  # .grad accumulates: twice the gradient
    return tuple(leaf.grad for leaf in leaves)


@mutant("score_function_grad")
def sfg_sums_over_samples(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads((values.detach() * _log_q(q, samples)).sum() + values.sum(), leaves)


@mutant("score_function_grad")
def sfg_sign_flipped(f, make_q, params, num_samples, z=None):
    grads = _surrogate_estimator(f, make_q, params, num_samples, z)
    return tuple(-g for g in grads)


@mutant("score_function_grad")
def sfg_forgets_f(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads(_log_q(q, samples).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_log_prob_under_no_grad(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    with torch.no_grad():
        q = make_q(*leaves)
        samples = _samples(q, num_samples, z)
        log_q = _log_q(q, samples)
    values = f(samples, *leaves)
    surrogate = (values.detach() * log_q).mean() + values.mean()
    if not surrogate.requires_grad:
        return tuple(torch.zeros_like(p) for p in leaves)
    return _grads(surrogate, leaves)


@mutant("score_function_grad")
def sfg_fresh_sample_for_score(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    # a second, independent draw when z is None
    score_samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads(
        (values.detach() * _log_q(q, score_samples)).mean() + values.mean(), leaves
    )


@mutant("score_function_grad")
def sfg_ignores_given_z(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(f, make_q, params, num_samples, None)


@mutant("score_function_grad")
def sfg_calls_optimizer_step(f, make_q, params, num_samples, z=None):
    params = tuple(p.requires_grad_(True) if not p.requires_grad else p for p in params)
    opt = torch.optim.SGD(params, lr=0.01)
    opt.zero_grad()
    q = make_q(*params)
    samples = _samples(q, num_samples, z)
    values = f(samples, *params)
    ((values.detach() * _log_q(q, samples)).mean() + values.mean()).backward()
    grads = tuple(
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params
    )
    opt.step()
    opt.zero_grad(set_to_none=True)
    return grads


@mutant("score_function_grad")
def sfg_leaves_grad_on_params(f, make_q, params, num_samples, z=None):
    for p in params:
        p.requires_grad_(True)
    q = make_q(*params)
    samples = _samples(q, num_samples, z)
    values = f(samples, *params)
    ((values.detach() * _log_q(q, samples)).mean() + values.mean()).backward()
    return tuple(
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params
    )


@mutant("score_function_grad")
def sfg_sets_requires_grad_on_callers_params(f, make_q, params, num_samples, z=None):
    leaves = tuple(p.requires_grad_(True) for p in params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    return _grads((values.detach() * _log_q(q, samples)).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_rsample_double_counts(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = q.rsample((num_samples,)) if z is None else z
    values = f(samples, *leaves)
    return _grads(
        (values.detach() * _log_q(q, samples.detach())).mean() + values.mean(), leaves
    )


@mutant("score_function_grad")
def sfg_draws_with_rsample(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    if z is None:
        with torch.no_grad():
            # fine for a Gaussian, missing for Bernoulli/Categorical
            z = q.rsample((num_samples,))
    values = f(z, *leaves)
    return _grads((values.detach() * _log_q(q, z)).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_averages_log_prob_over_dims(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    log_q = q.log_prob(samples).reshape(num_samples, -1).mean(dim=1)
    return _grads((values.detach() * log_q).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_sums_log_prob_over_last_axis(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    # wrong when log_prob is already (S,) or has two batch/event axes
    log_q = q.log_prob(samples).sum(dim=-1)
    return _grads((values.detach() * log_q).mean() + values.mean(), leaves)


@mutant("score_function_grad")
def sfg_normalises_f_by_std(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v / (v.std() + 1e-8)
    )


@mutant("score_function_grad")
def sfg_one_sample_repeated(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    if z is None:
        with torch.no_grad():
            z = q.sample().expand(num_samples, *q.batch_shape, *q.event_shape)
    values = f(z, *leaves)
    return _grads((values.detach() * _log_q(q, z)).mean() + values.mean(), leaves)


# --------------------------------------------------------------------------- score_function_grad_loo variants


@variant("score_function_grad_loo")
def loo_explicit_baseline(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v - _loo(v)
    )


@variant("score_function_grad_loo")
def loo_centred_form(f, make_q, params, num_samples, z=None):
    S = num_samples
    return _surrogate_estimator(
        f, make_q, params, S, z, weight=lambda v: S / (S - 1) * (v - v.mean())
    )


@variant("score_function_grad_loo")
def loo_loop_over_others(f, make_q, params, num_samples, z=None):
    def baseline(v):
        return torch.stack(
            [torch.cat([v[:s], v[s + 1 :]]).mean() for s in range(v.shape[0])]
        )

    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v - baseline(v)
    )


@variant("score_function_grad_loo")
def loo_weighted_vjp(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    v = values.detach()
    weights = (v - (v.sum() - v) / (num_samples - 1)) / num_samples
    score_term = torch.autograd.grad(
        _log_q(q, samples), leaves, grad_outputs=weights, allow_unused=True
    )
    grad_f = (
        _grads(values.mean(), leaves) if values.requires_grad else [0] * len(leaves)
    )
    return tuple(
        (torch.zeros_like(p) if a is None else a) + b
        for p, a, b in zip(leaves, score_term, grad_f)
    )


# --------------------------------------------------------------------------- score_function_grad_loo mutants


@mutant("score_function_grad_loo")
def loo_backward_create_graph_keeps_graph(f, make_q, params, num_samples, z=None):
    # Right values, .backward(create_graph=True) on copies: the returned .grad hold the graph.
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    fixed = values.detach()
    surrogate = ((fixed - _loo(fixed)) * _log_q(q, samples)).mean() + values.mean()
    surrogate.backward(create_graph=True)
    return tuple(torch.zeros_like(p) if p.grad is None else p.grad for p in leaves)


@mutant("score_function_grad_loo")
def loo_does_not_detach_f(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    weight = values - _loo(values.detach())
    return _grads((weight * _log_q(q, samples)).mean() + values.mean(), leaves)


@mutant("score_function_grad_loo")
def loo_in_sample_mean_baseline(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v - v.mean()
    )


@mutant("score_function_grad_loo")
def loo_no_baseline(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(f, make_q, params, num_samples, z)


@mutant("score_function_grad_loo")
def loo_baseline_not_detached(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    baseline = _loo(values)  # carries the gradient of f
    return _grads(
        ((values.detach() - baseline) * _log_q(q, samples)).mean() + values.mean(),
        leaves,
    )


@mutant("score_function_grad_loo")
def loo_sums_over_samples(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    values = f(samples, *leaves)
    v = values.detach()
    return _grads(((v - _loo(v)) * _log_q(q, samples)).sum() + values.sum(), leaves)


@mutant("score_function_grad_loo")
def loo_baseline_divides_by_S(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f,
        make_q,
        params,
        num_samples,
        z,
        weight=lambda v: v - (v.sum() - v) / num_samples,
    )


@mutant("score_function_grad_loo")
def loo_adds_baseline(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v + _loo(v)
    )


@mutant("score_function_grad_loo")
def loo_missing_grad_f_term(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    v = f(samples, *leaves).detach()
    return _grads(((v - _loo(v)) * _log_q(q, samples)).mean(), leaves)


@mutant("score_function_grad_loo")
def loo_centred_form_scales_grad_f_too(f, make_q, params, num_samples, z=None):
    S = num_samples
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, S, z)
    values = f(samples, *leaves)
    centred = (
        (values.detach() - values.detach().mean()) * _log_q(q, samples)
    ).mean() + values.mean()
    return _grads(S / (S - 1) * centred, leaves)


@mutant("score_function_grad_loo")
def loo_ignores_given_z(f, make_q, params, num_samples, z=None):
    return _surrogate_estimator(
        f, make_q, params, num_samples, None, weight=lambda v: v - _loo(v)
    )


@mutant("score_function_grad_loo")
def loo_leaves_grad_on_params(f, make_q, params, num_samples, z=None):
    for p in params:
        p.requires_grad_(True)
    q = make_q(*params)
    samples = _samples(q, num_samples, z)
    values = f(samples, *params)
    v = values.detach()
    (((v - _loo(v)) * _log_q(q, samples)).mean() + values.mean()).backward()
    return tuple(
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params
    )


@mutant("score_function_grad_loo")
def loo_sign_flipped(f, make_q, params, num_samples, z=None):
    grads = _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v - _loo(v)
    )
    return tuple(-g for g in grads)


@mutant("score_function_grad_loo")
def loo_no_baseline_when_drawing(f, make_q, params, num_samples, z=None):
    if z is None:  # "the baseline is only needed for the graded comparison"
        return _surrogate_estimator(f, make_q, params, num_samples, None)
    return _surrogate_estimator(
        f, make_q, params, num_samples, z, weight=lambda v: v - _loo(v)
    )


@mutant("score_function_grad_loo")
def loo_fresh_samples_for_baseline(f, make_q, params, num_samples, z=None):
    leaves = _leaves(params)
    q = make_q(*leaves)
    samples = _samples(q, num_samples, z)
    with torch.no_grad():
        # an independent batch, even when z is given
        others = f(q.sample((num_samples,)), *leaves)
    values = f(samples, *leaves)
    return _grads(
        ((values.detach() - others.mean()) * _log_q(q, samples)).mean() + values.mean(),
        leaves,
    )


# --------------------------------------------------------------------------- left out

equivalent(
    "score_function_grad",
    "sfg_log_of_exp_log_prob",
    "torch.log(q.log_prob(z).exp()) equals log_prob to rounding for these families (no underflow at "
    "their parameter ranges): the same estimator",
)
equivalent(
    "score_function_grad_loo",
    "loo_independent_baseline_when_drawing",
    "with z=None, a baseline from a second independent batch is unbiased and its variance is within "
    "a factor 1.5 of the leave-one-out one at S = 6 (below the factor 3 the variance check resolves); "
    "with z given it must use the leave-one-out baseline, which the deterministic checks enforce",
)


# --------------------------------------------------------------------------- optimal_baseline


@variant("optimal_baseline")
def optimal_baseline_python_loops(f_values, scores):
    out = []
    for score in scores:
        flat = score.reshape(score.shape[0], -1)
        coords = []
        for i in range(flat.shape[1]):
            top = sum(
                float(f_values[s]) * float(flat[s, i]) ** 2
                for s in range(flat.shape[0])
            )
            bottom = sum(float(flat[s, i]) ** 2 for s in range(flat.shape[0]))
            coords.append(top / bottom)
        out.append(torch.tensor(coords, dtype=torch.float64).reshape(score.shape[1:]))
    return tuple(out)


@variant("optimal_baseline")
def optimal_baseline_einsum_means(f_values, scores):
    result = []
    for s in scores:
        flat = s.reshape(len(s), -1)
        b = torch.einsum("s,si->i", f_values, flat**2) / len(s) / (flat**2).mean(0)
        result.append(b.view(s.shape[1:]))
    return result


@variant("optimal_baseline")
def optimal_baseline_normalised_weights_numpy(f_values, scores):
    f = f_values.detach().numpy()
    baselines = []
    for score in scores:
        w = score.detach().numpy() ** 2
        w = w / w.sum(axis=0, keepdims=True)
        baselines.append(torch.from_numpy(np.tensordot(f, w, axes=(0, 0))))
    return tuple(baselines)


@variant("optimal_baseline")
def optimal_baseline_moves_sample_axis_last(f_values, scores):
    def one(score):
        s2 = torch.movedim(score, 0, -1) * torch.movedim(score, 0, -1)
        return (s2 * f_values).sum(-1) / s2.sum(-1)

    return tuple(map(one, scores))


@mutant("optimal_baseline")
def optimal_baseline_plain_mean_of_f(f_values, scores):
    return tuple(
        torch.full(s.shape[1:], float(f_values.mean()), dtype=torch.float64)
        for s in scores
    )


@mutant("optimal_baseline")
def optimal_baseline_unsquared_score(f_values, scores):
    out = []
    for score in scores:
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        out.append((values * score).sum(0) / score.sum(0))
    return tuple(out)


@mutant("optimal_baseline")
def optimal_baseline_pooled_over_coordinates(f_values, scores):
    out = []
    for score in scores:
        weight = (score**2).reshape(len(score), -1).sum(1)
        out.append(
            ((f_values * weight).sum() / weight.sum())
            * torch.ones(score.shape[1:], dtype=torch.float64)
        )
    return tuple(out)


@mutant("optimal_baseline")
def optimal_baseline_squares_scores_in_place(f_values, scores):
    out = []
    for score in scores:
        score.pow_(2)  # the caller's scores are gone
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        out.append((values * score).sum(0) / score.sum(0))
    return tuple(out)


@mutant("optimal_baseline")
def optimal_baseline_keeps_sample_axis(f_values, scores):
    out = []
    for score in scores:
        weight = score**2
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        out.append((values * weight).sum(0, keepdim=True) / weight.sum(0, keepdim=True))
    return tuple(out)


@mutant("optimal_baseline")
def optimal_baseline_one_stacked_tensor(f_values, scores):
    out = []
    for score in scores:
        weight = score**2
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        out.append(((values * weight).sum(0) / weight.sum(0)).reshape(-1))
    return torch.cat(out)
