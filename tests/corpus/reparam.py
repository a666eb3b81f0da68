"""Corpus for ``03_reparam``: correct variants and wrong-on-purpose samplers and estimators.

Decision recorded here: the SPEC fixes each sample as a function of its noise
(``z = F^-1(u) = -log(1 - u) / rate`` and so on), not only its law. Implementations that
use ``u`` where the SPEC says ``1 - u`` (``-log(u) / rate``, Gumbel from ``1 - u``,
Cauchy ``tan(pi u)``, a mirrored Laplace) draw from the right distribution but are a
different function of the given noise; the checks compare per sample, so they are
*mutants* here (named ``..._law_equivalent_...``) and the feedback says why. True
equivalents (same function up to rounding) are listed with ``equivalent`` at the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Cauchy, Exponential, Gumbel, Laplace, Normal

from tests.corpus import equivalent, mutant, variant

# --------------------------------------------------------------------------------------
# gaussian_rsample(mu, log_sigma, eps)
# --------------------------------------------------------------------------------------


@variant("gaussian_rsample")
def gaussian_rsample_addcmul(mu, log_sigma, eps):
    return torch.addcmul(mu, torch.exp(log_sigma), eps)


@variant("gaussian_rsample")
def gaussian_rsample_affine_transform(mu, log_sigma, eps):
    from torch.distributions.transforms import AffineTransform

    return AffineTransform(mu, log_sigma.exp())(eps)


@variant("gaussian_rsample")
def gaussian_rsample_explicit_broadcast(mu, log_sigma, eps):
    sigma = torch.exp(log_sigma).unsqueeze(0).expand_as(eps)
    return eps * sigma + mu.unsqueeze(0)


@mutant("gaussian_rsample")
def gaussian_rsample_variance_as_std(mu, log_sigma, eps):
    return mu + torch.exp(2 * log_sigma) * eps


@mutant("gaussian_rsample")
def gaussian_rsample_half_log_sigma_logvar_confusion(mu, log_sigma, eps):
    return mu + torch.exp(0.5 * log_sigma) * eps


@mutant("gaussian_rsample")
def gaussian_rsample_log_sigma_as_sigma(mu, log_sigma, eps):
    return mu + log_sigma * eps


@mutant("gaussian_rsample")
def gaussian_rsample_detaches_sigma(mu, log_sigma, eps):
    return mu + torch.exp(log_sigma).detach() * eps


@mutant("gaussian_rsample")
def gaussian_rsample_calls_sample(mu, log_sigma, eps):
    return Normal(mu, log_sigma.exp()).sample(eps.shape[:1])


@mutant("gaussian_rsample")
def gaussian_rsample_ignores_eps_draws_uniform(mu, log_sigma, eps):
    return mu + torch.exp(log_sigma) * torch.rand_like(eps)


@mutant("gaussian_rsample")
def gaussian_rsample_in_place_on_eps(mu, log_sigma, eps):
    # Reuses eps's memory: the caller's noise is overwritten.
    return eps.mul_(torch.exp(log_sigma)).add_(mu)


@mutant("gaussian_rsample")
def gaussian_rsample_clamps_noise(mu, log_sigma, eps):
    return mu + torch.exp(log_sigma) * eps.clamp(-6.0, 6.0)


@mutant("gaussian_rsample")
def gaussian_rsample_round_trip_through_cdf(mu, log_sigma, eps):
    # Normal(mu, sigma).icdf(Phi(eps)): right in the bulk, but Phi(eps) rounds to 1 for eps > 8.3.
    return Normal(mu, log_sigma.exp()).icdf(torch.special.ndtr(eps))


@mutant("gaussian_rsample")
def gaussian_rsample_params_as_columns(mu, log_sigma, eps):
    # Treats the parameters as column vectors: returns (D, S) instead of (S, D).
    return mu[:, None] + torch.exp(log_sigma)[:, None] * eps.T


@mutant("gaussian_rsample")
def gaussian_rsample_minus_sign(mu, log_sigma, eps):
    return mu - torch.exp(log_sigma) * eps


# --------------------------------------------------------------------------------------
# exponential_rsample(rate, u)
# --------------------------------------------------------------------------------------


@variant("exponential_rsample")
def exponential_rsample_naive_log(rate, u):
    return -torch.log(1 - u) / rate


@variant("exponential_rsample")
def exponential_rsample_distribution_icdf(rate, u):
    return Exponential(rate).icdf(u)


@variant("exponential_rsample")
def exponential_rsample_times_reciprocal(rate, u):
    return torch.log1p(-u).neg() * rate.reciprocal()


@variant("exponential_rsample")
def exponential_rsample_dtype_generic(rate, u):
    one = torch.ones((), dtype=u.dtype)
    return -torch.log(one - u) / rate


@mutant("exponential_rsample")
def exponential_rsample_rate_scale_swap(rate, u):
    return -torch.log1p(-u) * rate


@mutant("exponential_rsample")
def exponential_rsample_law_equivalent_log_u(rate, u):
    return -torch.log(u) / rate


@mutant("exponential_rsample")
def exponential_rsample_ignores_rate(rate, u):
    return -torch.log1p(-u) + 0.0 * rate


@mutant("exponential_rsample")
def exponential_rsample_missing_minus(rate, u):
    return torch.log1p(-u) / rate


@mutant("exponential_rsample")
def exponential_rsample_detaches_rate(rate, u):
    return -torch.log1p(-u) / rate.detach()


@mutant("exponential_rsample")
def exponential_rsample_calls_sample(rate, u):
    return Exponential(rate).sample(u.shape[:1])


@mutant("exponential_rsample")
def exponential_rsample_clamps_u_in_place(rate, u):
    u.clamp_(1e-6, 1 - 1e-6)
    return -torch.log1p(-u) / rate


@mutant("exponential_rsample")
def exponential_rsample_epsilon_in_log(rate, u):
    return -torch.log(1 - u + 1e-8) / rate


@mutant("exponential_rsample")
def exponential_rsample_float32(rate, u):
    return -torch.log1p(-u.float()) / rate.float()


@mutant("exponential_rsample")
def exponential_rsample_through_numpy(rate, u):
    return torch.from_numpy(-np.log1p(-u.detach().numpy()) / rate.detach().numpy())


# --------------------------------------------------------------------------------------
# gumbel_rsample(loc, scale, u)
# --------------------------------------------------------------------------------------


@variant("gumbel_rsample")
def gumbel_rsample_distribution_icdf(loc, scale, u):
    return Gumbel(loc, scale).icdf(u)


@variant("gumbel_rsample")
def gumbel_rsample_log_of_reciprocal(loc, scale, u):
    return loc - scale * torch.log(torch.log(1.0 / u))


@variant("gumbel_rsample")
def gumbel_rsample_negated_double_log(loc, scale, u):
    standard = -torch.log(-torch.log(u))
    return loc + scale * standard


@mutant("gumbel_rsample")
def gumbel_rsample_min_sign(loc, scale, u):
    return loc + scale * torch.log(-torch.log(u))


@mutant("gumbel_rsample")
def gumbel_rsample_law_equivalent_one_minus_u(loc, scale, u):
    return loc - scale * torch.log(-torch.log1p(-u))


@mutant("gumbel_rsample")
def gumbel_rsample_divides_by_scale(loc, scale, u):
    return loc - torch.log(-torch.log(u)) / scale


@mutant("gumbel_rsample")
def gumbel_rsample_single_log(loc, scale, u):
    return loc - scale * torch.log(u)


@mutant("gumbel_rsample")
def gumbel_rsample_missing_inner_minus(loc, scale, u):
    return loc - scale * torch.log(torch.log(u))


@mutant("gumbel_rsample")
def gumbel_rsample_detaches_scale(loc, scale, u):
    return loc - scale.detach() * torch.log(-torch.log(u))


@mutant("gumbel_rsample")
def gumbel_rsample_clamps_u(loc, scale, u):
    u = u.clamp(1e-6, 1 - 1e-6)
    return loc - scale * torch.log(-torch.log(u))


# --------------------------------------------------------------------------------------
# cauchy_rsample(loc, scale, u)
# --------------------------------------------------------------------------------------


@variant("cauchy_rsample")
def cauchy_rsample_minus_cot(loc, scale, u):
    # tan(pi (u - 1/2)) = -cot(pi u): the same function.
    return loc - scale / torch.tan(math.pi * u)


@variant("cauchy_rsample")
def cauchy_rsample_distribution_icdf(loc, scale, u):
    return Cauchy(loc, scale).icdf(u)


@variant("cauchy_rsample")
def cauchy_rsample_cos_over_sin(loc, scale, u):
    angle = math.pi * u
    return loc - scale * torch.cos(angle) / torch.sin(angle)


@mutant("cauchy_rsample")
def cauchy_rsample_law_equivalent_tan_pi_u(loc, scale, u):
    return loc + scale * torch.tan(math.pi * u)


@mutant("cauchy_rsample")
def cauchy_rsample_law_equivalent_mirrored(loc, scale, u):
    # tan(pi (1/2 - u)) is the Cauchy sample at 1 - u: same law, another function of u
    return loc + scale * torch.tan(math.pi * (0.5 - u))


@mutant("cauchy_rsample")
def cauchy_rsample_missing_pi(loc, scale, u):
    return loc + scale * torch.tan(u - 0.5)


@mutant("cauchy_rsample")
def cauchy_rsample_atan_instead_of_tan(loc, scale, u):
    return loc + scale * torch.atan(math.pi * (u - 0.5))


@mutant("cauchy_rsample")
def cauchy_rsample_divides_by_scale(loc, scale, u):
    return loc + torch.tan(math.pi * (u - 0.5)) / scale


@mutant("cauchy_rsample")
def cauchy_rsample_detaches_loc(loc, scale, u):
    return loc.detach() + scale * torch.tan(math.pi * (u - 0.5))


@mutant("cauchy_rsample")
def cauchy_rsample_clamps_output(loc, scale, u):
    return (loc + scale * torch.tan(math.pi * (u - 0.5))).clamp(-1e4, 1e4)


@mutant("cauchy_rsample")
def cauchy_rsample_float32(loc, scale, u):
    return (loc + scale * torch.tan(math.pi * (u.float() - 0.5))).double()


# --------------------------------------------------------------------------------------
# laplace_rsample(loc, scale, u)
# --------------------------------------------------------------------------------------


@variant("laplace_rsample")
def laplace_rsample_two_branches(loc, scale, u):
    lower = loc + scale * torch.log(2 * u)
    upper = loc - scale * torch.log(2 - 2 * u)
    return torch.where(u < 0.5, lower, upper)


@variant("laplace_rsample")
def laplace_rsample_distribution_icdf(loc, scale, u):
    return Laplace(loc, scale).icdf(u)


@variant("laplace_rsample")
def laplace_rsample_sign_log(loc, scale, u):
    centered = u - 0.5
    return loc - scale * torch.sign(centered) * torch.log(1 - 2 * centered.abs())


@variant("laplace_rsample")
def laplace_rsample_exponential_difference_of_tails(loc, scale, u):
    # F0^-1(u) = log(2u) below 1/2 and -log(2(1 - u)) above, written with min/max.
    low = torch.log(2 * torch.minimum(u, torch.full_like(u, 0.5)))
    high = -torch.log(2 * (1 - torch.maximum(u, torch.full_like(u, 0.5))))
    return loc + scale * (low + high)


@mutant("laplace_rsample")
def laplace_rsample_never_above_loc(loc, scale, u):
    return loc + scale * torch.log1p(-2 * (u - 0.5).abs())


@mutant("laplace_rsample")
def laplace_rsample_missing_sign(loc, scale, u):
    return loc - scale * torch.log1p(-2 * (u - 0.5).abs())


@mutant("laplace_rsample")
def laplace_rsample_no_factor_two(loc, scale, u):
    centered = u - 0.5
    return loc - scale * torch.sign(centered) * torch.log1p(-centered.abs())


@mutant("laplace_rsample")
def laplace_rsample_exponential_quantile_only(loc, scale, u):
    return loc - scale * torch.log1p(-u)


@mutant("laplace_rsample")
def laplace_rsample_law_equivalent_mirrored(loc, scale, u):
    centered = u - 0.5
    return loc + scale * torch.sign(centered) * torch.log1p(-2 * centered.abs())


@mutant("laplace_rsample")
def laplace_rsample_detaches_scale(loc, scale, u):
    centered = u - 0.5
    return loc - scale.detach() * torch.sign(centered) * torch.log1p(
        -2 * centered.abs()
    )


@mutant("laplace_rsample")
def laplace_rsample_swapped_branch_condition(loc, scale, u):
    lower = loc + scale * torch.log(2 * u)
    upper = loc - scale * torch.log(2 - 2 * u)
    return torch.where(u > 0.5, lower, upper)


@mutant("laplace_rsample")
def laplace_rsample_divides_by_scale(loc, scale, u):
    centered = u - 0.5
    return loc - torch.sign(centered) * torch.log1p(-2 * centered.abs()) / scale


# --------------------------------------------------------------------------------------
# lognormal_rsample(mu, log_sigma, eps)
# --------------------------------------------------------------------------------------


@variant("lognormal_rsample")
def lognormal_rsample_product_of_exps(mu, log_sigma, eps):
    return torch.exp(mu) * torch.exp(torch.exp(log_sigma) * eps)


@variant("lognormal_rsample")
def lognormal_rsample_exp_transform(mu, log_sigma, eps):
    from torch.distributions.transforms import AffineTransform, ExpTransform

    return ExpTransform()(AffineTransform(mu, log_sigma.exp())(eps))


@variant("lognormal_rsample")
def lognormal_rsample_composes_gaussian(mu, log_sigma, eps):
    gaussian = torch.addcmul(mu, log_sigma.exp(), eps)
    return gaussian.exp()


@mutant("lognormal_rsample")
def lognormal_rsample_exp_mu_plus_sigma_eps(mu, log_sigma, eps):
    return torch.exp(mu) + torch.exp(log_sigma) * eps


@mutant("lognormal_rsample")
def lognormal_rsample_exp_mu_plus_sigma_times_eps(mu, log_sigma, eps):
    return torch.exp(mu + torch.exp(log_sigma)) * eps


@mutant("lognormal_rsample")
def lognormal_rsample_log_sigma_as_sigma(mu, log_sigma, eps):
    return torch.exp(mu + log_sigma * eps)


@mutant("lognormal_rsample")
def lognormal_rsample_variance_as_std(mu, log_sigma, eps):
    return torch.exp(mu + torch.exp(2 * log_sigma) * eps)


@mutant("lognormal_rsample")
def lognormal_rsample_missing_exp(mu, log_sigma, eps):
    return mu + torch.exp(log_sigma) * eps


@mutant("lognormal_rsample")
def lognormal_rsample_detached(mu, log_sigma, eps):
    return torch.exp(mu + torch.exp(log_sigma) * eps).detach()


@mutant("lognormal_rsample")
def lognormal_rsample_detaches_mu(mu, log_sigma, eps):
    return torch.exp(mu.detach() + torch.exp(log_sigma) * eps)


# --------------------------------------------------------------------------------------
# reparam_grad(f, rsample, params, noise)
# --------------------------------------------------------------------------------------


@variant("reparam_grad")
def reparam_grad_backward_on_copies(f, rsample, params, noise):
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    f(rsample(*copies, noise)).mean().backward()
    # .grad stays None for a parameter rsample does not use: that gradient is zero
    return tuple(torch.zeros_like(c) if c.grad is None else c.grad for c in copies)


@variant("reparam_grad")
def reparam_grad_torch_func(f, rsample, params, noise):
    def objective(*ps):
        return f(rsample(*ps, noise)).mean()

    grads = torch.func.grad(objective, argnums=tuple(range(len(params))))(
        *(p.detach() for p in params)
    )
    return tuple(grads)


@variant("reparam_grad")
def reparam_grad_sample_by_sample(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    total = [torch.zeros_like(p) for p in params]
    for s in range(noise.shape[0]):
        grads = torch.autograd.grad(
            f(rsample(*leaves, noise[s : s + 1])).sum(), leaves, allow_unused=True
        )
        total = [t + (0 if g is None else g) for t, g in zip(total, grads)]
    return tuple(t / noise.shape[0] for t in total)


@variant("reparam_grad")
def reparam_grad_copies_with_requires_grad_flag(f, rsample, params, noise):
    # Works whether or not the params arrive requiring grad.
    leaves = [p.clone().detach().requires_grad_() for p in params]
    value = f(rsample(*leaves, noise)).sum() / noise.shape[0]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))


@mutant("reparam_grad")
def reparam_grad_create_graph_keeps_graph(f, rsample, params, noise):
    # Right values as a list, but create_graph=True: each gradient holds the step's graph.
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(
        f(rsample(*leaves, noise)).mean(), leaves, allow_unused=True, create_graph=True
    )
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


@mutant("reparam_grad")
def reparam_grad_returns_none_for_unused_param(f, rsample, params, noise):
    # allow_unused=True without replacing None: the notebook asks for a zero tensor.
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(
        f(rsample(*leaves, noise)).mean(), leaves, allow_unused=True
    )


@mutant("reparam_grad")
def reparam_grad_needs_params_that_require_grad(f, rsample, params, noise):
    # Differentiates the given tensors directly: fails on plain tensors (the notebook's case).
    return torch.autograd.grad(f(rsample(*params, noise)).mean(), params)


@mutant("reparam_grad")
def reparam_grad_switches_requires_grad_on_callers_params(f, rsample, params, noise):
    for p in params:
        p.requires_grad_(True)
    grads = torch.autograd.grad(f(rsample(*params, noise)).mean(), params)
    return grads


@mutant("reparam_grad")
def reparam_grad_sums_over_samples(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(f(rsample(*leaves, noise)).sum(), leaves)


@mutant("reparam_grad")
def reparam_grad_divides_by_numel(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(f(rsample(*leaves, noise)).sum() / noise.numel(), leaves)


@mutant("reparam_grad")
def reparam_grad_wrong_sign(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    return tuple(
        -g for g in torch.autograd.grad(f(rsample(*leaves, noise)).mean(), leaves)
    )


@mutant("reparam_grad")
def reparam_grad_leaves_grad_on_params(f, rsample, params, noise):
    # Copies only the params that don't require grad; backward() then fills the caller's .grad.
    leaves = [p if p.requires_grad else p.detach().requires_grad_() for p in params]
    f(rsample(*leaves, noise)).mean().backward()
    return tuple(leaf.grad.clone() for leaf in leaves)


@mutant("reparam_grad")
def reparam_grad_accumulates_grad(f, rsample, params, noise):
    # backward() adds into .grad: a second call on the same params returns twice the gradient.
    leaves = [p if p.requires_grad else p.detach().requires_grad_() for p in params]
    f(rsample(*leaves, noise)).mean().backward()
    return tuple(leaf.grad for leaf in leaves)


@mutant("reparam_grad")
def reparam_grad_updates_params_in_place(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(f(rsample(*leaves, noise)).mean(), leaves)
    with torch.no_grad():  # "one step of gradient descent while we're at it"
        for p, g in zip(params, grads):
            p -= 0.01 * g
    return grads


@mutant("reparam_grad")
def reparam_grad_draws_fresh_noise(f, rsample, params, noise):
    fresh = (
        torch.rand_like(noise) * 0.998 + 0.001
        if bool((noise > 0).all())
        else torch.randn_like(noise)
    )
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(f(rsample(*leaves, fresh)).mean(), leaves)


@mutant("reparam_grad")
def reparam_grad_first_sample_only(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(f(rsample(*leaves, noise))[0], leaves)


@mutant("reparam_grad")
def reparam_grad_detached_samples(f, rsample, params, noise):
    leaves = [p.detach().requires_grad_(True) for p in params]
    with torch.no_grad():
        z = rsample(*leaves, noise)
    loss = f(z).mean()
    if not loss.requires_grad:
        return tuple(torch.zeros_like(p) for p in params)
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@mutant("reparam_grad")
def reparam_grad_assumes_two_params(f, rsample, params, noise):
    mu, log_sigma = (p.detach().requires_grad_(True) for p in params)
    return torch.autograd.grad(f(rsample(mu, log_sigma, noise)).mean(), (mu, log_sigma))


@mutant("reparam_grad")
def reparam_grad_clamps_noise_in_place(f, rsample, params, noise):
    # "Keep u away from 1 so log(1 - u) stays finite", in place on the caller's tensor.
    noise.clamp_(max=0.99)
    leaves = [p.detach().requires_grad_(True) for p in params]
    return torch.autograd.grad(f(rsample(*leaves, noise)).mean(), leaves)


# --------------------------------------------------------------------------------------
# gamma_rsample(rate, u): u (S, k, D), a sum of k exponentials
# --------------------------------------------------------------------------------------


@variant("gamma_rsample")
def gamma_rsample_loop_over_exponentials(rate, u):
    total = torch.zeros_like(u[:, 0])
    for j in range(u.shape[1]):
        total = total + (-torch.log(1 - u[:, j]) / rate)
    return total


@variant("gamma_rsample")
def gamma_rsample_exponential_icdf(rate, u):
    return Exponential(rate).icdf(u).sum(dim=1)


@variant("gamma_rsample")
def gamma_rsample_log_of_product(rate, u):
    # sum_j -log(1 - u_j) = -log prod_j (1 - u_j): one log, fine in float64 for k <= 6
    return -torch.log1p(-u).sum(1) * rate.reciprocal()


@variant("gamma_rsample")
def gamma_rsample_einsum(rate, u):
    return torch.einsum("skd,d->sd", -torch.log1p(-u), 1.0 / rate)


@mutant("gamma_rsample")
def gamma_rsample_mean_instead_of_sum(rate, u):
    return -torch.log1p(-u).mean(dim=1) / rate


@mutant("gamma_rsample")
def gamma_rsample_law_equivalent_log_u(rate, u):
    # Same law (u and 1 - u are both uniform), different function of the noise.
    return -torch.log(u).sum(dim=1) / rate


@mutant("gamma_rsample")
def gamma_rsample_log_one_plus_u_changes_law(rate, u):
    return torch.log1p(u).sum(dim=1) / rate


@mutant("gamma_rsample")
def gamma_rsample_multiplies_by_rate(rate, u):
    return -torch.log1p(-u).sum(dim=1) * rate


@mutant("gamma_rsample")
def gamma_rsample_first_column_only(rate, u):
    return -torch.log1p(-u[:, 0]) / rate


@mutant("gamma_rsample")
def gamma_rsample_sums_over_last_axis(rate, u):
    return (-torch.log1p(-u) / rate).sum(dim=-1)


@mutant("gamma_rsample")
def gamma_rsample_detaches_rate(rate, u):
    return -torch.log1p(-u).sum(dim=1) / rate.detach()


@mutant("gamma_rsample")
def gamma_rsample_clamps_u_in_place(rate, u):
    u.clamp_(1e-6, 1 - 1e-6)
    return -torch.log1p(-u).sum(dim=1) / rate


@mutant("gamma_rsample")
def gamma_rsample_epsilon_in_log(rate, u):
    return -torch.log(1 - u + 1e-8).sum(dim=1) / rate


@mutant("gamma_rsample")
def gamma_rsample_calls_sample(rate, u):
    from torch.distributions import Gamma

    return Gamma(torch.full_like(rate, float(u.shape[1])), rate).sample((u.shape[0],))


# --------------------------------------------------------------------------------------
# student_t_rsample(loc, scale, eps): eps (S, nu + 1, D)
# --------------------------------------------------------------------------------------


@variant("student_t_rsample")
def student_t_rsample_loop_over_chi_squared(loc, scale, eps):
    nu = eps.shape[1] - 1
    chi2 = torch.zeros_like(eps[:, 0])
    for j in range(1, nu + 1):
        chi2 = chi2 + eps[:, j] * eps[:, j]
    return loc + scale * eps[:, 0] / (chi2 / nu) ** 0.5


@variant("student_t_rsample")
def student_t_rsample_rsqrt_and_norm(loc, scale, eps):
    nu = eps.shape[1] - 1
    norm = torch.linalg.vector_norm(eps[:, 1:], dim=1)
    return torch.addcmul(loc, scale, eps[:, 0] * math.sqrt(nu) / norm)


@variant("student_t_rsample")
def student_t_rsample_affine_of_normal_ratio(loc, scale, eps):
    from torch.distributions.transforms import AffineTransform

    t = eps[:, 0] * torch.rsqrt(eps[:, 1:].square().mean(dim=1))
    return AffineTransform(loc, scale)(t)


@mutant("student_t_rsample")
def student_t_rsample_divides_by_sum_not_mean(loc, scale, eps):
    return loc + scale * eps[:, 0] / torch.sqrt((eps[:, 1:] ** 2).sum(dim=1))


@mutant("student_t_rsample")
def student_t_rsample_missing_sqrt(loc, scale, eps):
    return loc + scale * eps[:, 0] / (eps[:, 1:] ** 2).mean(dim=1)


@mutant("student_t_rsample")
def student_t_rsample_wrong_dof_includes_eps0(loc, scale, eps):
    return loc + scale * eps[:, 0] / torch.sqrt((eps**2).mean(dim=1))


@mutant("student_t_rsample")
def student_t_rsample_wrong_dof_divides_by_columns(loc, scale, eps):
    return loc + scale * eps[:, 0] / torch.sqrt(
        (eps[:, 1:] ** 2).sum(dim=1) / eps.shape[1]
    )


@mutant("student_t_rsample")
def student_t_rsample_abs_instead_of_square(loc, scale, eps):
    return loc + scale * eps[:, 0] / eps[:, 1:].abs().mean(dim=1)


@mutant("student_t_rsample")
def student_t_rsample_gaussian_only(loc, scale, eps):
    return loc + scale * eps[:, 0]


@mutant("student_t_rsample")
def student_t_rsample_divides_by_scale(loc, scale, eps):
    return loc + eps[:, 0] / torch.sqrt((eps[:, 1:] ** 2).mean(dim=1)) / scale


@mutant("student_t_rsample")
def student_t_rsample_detaches_scale(loc, scale, eps):
    return loc + scale.detach() * eps[:, 0] / torch.sqrt((eps[:, 1:] ** 2).mean(dim=1))


@mutant("student_t_rsample")
def student_t_rsample_squares_in_place(loc, scale, eps):
    chi2 = eps[:, 1:].pow_(2).mean(dim=1)
    return loc + scale * eps[:, 0] / torch.sqrt(chi2)


@mutant("student_t_rsample")
def student_t_rsample_calls_sample(loc, scale, eps):
    from torch.distributions import StudentT

    nu = float(eps.shape[1] - 1)
    return StudentT(nu, loc, scale).sample((eps.shape[0],))


# --------------------------------------------------------------------------------------
# Recorded, not registered: same function (up to rounding) or not a bug under the SPEC.
# --------------------------------------------------------------------------------------

equivalent(
    "cauchy_rsample",
    "cauchy_rsample_tan_shifted_by_pi",
    "tan(pi (u - 1/2) + pi) is the same function (tan has period pi); it agrees to ~1e-15 and is correct",
)
equivalent(
    "exponential_rsample",
    "exponential_rsample_clamps_u_at_float_tiny",
    "u.clamp(min=torch.finfo(u.dtype).tiny) changes nothing for u in (0, 1): same function, not a bug",
)
equivalent(
    "laplace_rsample",
    "laplace_rsample_half_in_upper_branch",
    "sending u = 1/2 to the other branch of torch.where gives the same value (0) there: same function",
)
equivalent(
    "reparam_grad",
    "reparam_grad_create_graph",
    "returning gradients built with create_graph=True gives the same values; the SPEC does not forbid a graph",
)


# --------------------------------------------------------------------------- gamma_implicit_rsample


def _log_gamma_density(shape, z):
    return (shape - 1) * torch.log(z) - z - torch.lgamma(shape)


@variant("gamma_implicit_rsample")
def gamma_implicit_central_difference(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    dz = -d_cdf / torch.exp(_log_gamma_density(a, z0))
    return (z0 + dz * (shape - a)) / rate


class _ImplicitStandardGamma(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shape, z0):
        ctx.save_for_backward(shape, z0)
        return z0.clone()

    @staticmethod
    def backward(ctx, grad_output):
        shape, z0 = ctx.saved_tensors
        step = 1e-4
        d_cdf = (
            torch.special.gammainc(shape + step, z0)
            - torch.special.gammainc(shape - step, z0)
        ) / (2 * step)
        density = z0 ** (shape - 1) * torch.exp(-z0) / torch.exp(torch.lgamma(shape))
        return grad_output * (-d_cdf / density), None


@variant("gamma_implicit_rsample")
def gamma_implicit_autograd_function(shape, rate, z0):
    return _ImplicitStandardGamma.apply(shape.expand_as(z0), z0) / rate


@variant("gamma_implicit_rsample")
def gamma_implicit_scipy(shape, rate, z0):
    from scipy import special

    a = shape.detach().numpy()
    x = z0.detach().numpy()
    h = 1e-5
    d_cdf = (special.gammainc(a + h, x) - special.gammainc(a - h, x)) / (2 * h)
    log_q = special.xlogy(a - 1, x) - x - special.gammaln(a)
    dz = torch.from_numpy(-d_cdf * np.exp(-log_q))
    return (z0 + dz * (shape - shape.detach())) * rate.reciprocal()


@variant("gamma_implicit_rsample")
def gamma_implicit_forward_difference_log_space(shape, rate, z0):
    a = shape.detach()
    h = 1e-7 * a
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a, z0)) / h
    log_dz = torch.log(-d_cdf) - _log_gamma_density(a, z0)
    # F decreases in the shape (a larger shape moves mass right), so dF/dshape < 0, dz > 0
    standard = z0 + torch.exp(log_dz) * (shape - a)
    return standard / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_sign_flipped(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    dz = d_cdf / torch.exp(_log_gamma_density(a, z0))
    return (z0 + dz * (shape - a)) / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_forgets_density(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    return (z0 - d_cdf * (shape - a)) / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_density_without_normaliser(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    dz = -d_cdf / (z0 ** (a - 1) * torch.exp(-z0))  # forgot 1 / Gamma(shape)
    return (z0 + dz * (shape - a)) / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_coarse_forward_difference(shape, rate, z0):
    a = shape.detach()
    h = 0.1
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a, z0)) / h
    dz = -d_cdf / torch.exp(_log_gamma_density(a, z0))
    return (z0 + dz * (shape - a)) / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_no_shape_gradient(shape, rate, z0):
    return z0 / rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_rate_as_scale(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    dz = -d_cdf / torch.exp(_log_gamma_density(a, z0))
    return (z0 + dz * (shape - a)) * rate


@mutant("gamma_implicit_rsample")
def gamma_implicit_divides_z0_in_place(shape, rate, z0):
    a = shape.detach()
    h = 1e-6
    d_cdf = (torch.special.gammainc(a + h, z0) - torch.special.gammainc(a - h, z0)) / (
        2 * h
    )
    dz = -d_cdf / torch.exp(_log_gamma_density(a, z0))
    z0 /= rate  # the caller's noise changes
    return z0 + dz / rate * (shape - a)
