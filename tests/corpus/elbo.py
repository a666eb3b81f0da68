"""Corpus for ``04_elbo``: correct variants (full marks) and mutants named after their bug.

Mutants follow the catalogue of realistic student bugs (anchors-gradient-testing.md §4.4):
missing entropy or -log q, sign errors, sigma vs sigma^2, missing constants, sums instead of
means, log-densities not summed over dimensions, samples from the wrong distribution,
gradients cut or not detached, and BBVI loops that ignore their arguments.

Decision on "sticking the landing" (Roeder et al. 2017): the spec asks for the total derivative
of the ELBO, so an ``elbo`` that stops the gradient through q's parameters inside log q is a
mutant here (``elbo_sticking_the_landing``), not a variant, and its feedback says why.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from course_lib.reference.elbo import elbo as _notebook_elbo
from course_lib.reference.elbo import elbo_score_grad as _notebook_score_grad
from tests.corpus import equivalent, mutant, variant

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2PI_E = math.log(2 * math.pi * math.e)


# --------------------------------------------------------------------------- building blocks


def _log_q(z, mu, log_sigma):
    """Correct log N(z; mu, diag sigma^2) per row, by hand: shape (S,)."""
    return (
        -0.5 * ((z - mu) / torch.exp(log_sigma)) ** 2 - log_sigma - HALF_LOG_2PI
    ).sum(-1)


def _entropy(log_sigma):
    return log_sigma.sum() + 0.5 * LOG_2PI_E * log_sigma.shape[-1]


def _score(z, mu, log_sigma):
    """Per-sample (d/dmu, d/dlog_sigma) of log q, by hand: each (S, D)."""
    sigma = torch.exp(log_sigma)
    eps = (z - mu) / sigma
    return eps / sigma, eps**2 - 1


def _score_grad(log_joint, mu, log_sigma, z):
    mu, log_sigma, z = mu.detach(), log_sigma.detach(), z.detach()
    with torch.no_grad():
        weight = log_joint(z) - _log_q(z, mu, log_sigma)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return (weight[:, None] * d_mu).mean(0), (weight[:, None] * d_ls).mean(0)


def _check_estimator(estimator):
    if estimator not in ("reparam", "score"):
        raise ValueError(f"unknown estimator {estimator!r}")


# --------------------------------------------------------------------------- gaussian_entropy


@variant("gaussian_entropy")
def gaussian_entropy_torch_normal(log_sigma):
    return Normal(torch.zeros_like(log_sigma), torch.exp(log_sigma)).entropy().sum()


@variant("gaussian_entropy")
def gaussian_entropy_half_log_of_2_pi_e_variance(log_sigma):
    return (0.5 * torch.log(2 * math.pi * math.e * torch.exp(2 * log_sigma))).sum()


@variant("gaussian_entropy")
def gaussian_entropy_mvn_log_det(log_sigma):
    d = log_sigma.shape[0]
    log_det = 2 * log_sigma.sum()
    return 0.5 * (d * LOG_2PI_E + log_det)


@variant("gaussian_entropy")
def gaussian_entropy_rounded_constant(log_sigma):
    # 1/2 log(2 pi e) typed to seven decimals, as students do (3.3e-8 off per dimension).
    return (log_sigma + 1.4189385).sum()


@variant("gaussian_entropy")
def gaussian_entropy_independent(log_sigma):
    return Independent(
        Normal(torch.zeros_like(log_sigma), log_sigma.exp()), 1
    ).entropy()


@mutant("gaussian_entropy")
def gaussian_entropy_log_variance(log_sigma):
    return (2 * log_sigma).sum() + 0.5 * LOG_2PI_E * log_sigma.shape[0]


@mutant("gaussian_entropy")
def gaussian_entropy_missing_half(log_sigma):
    return log_sigma.sum() + LOG_2PI_E * log_sigma.shape[0]


@mutant("gaussian_entropy")
def gaussian_entropy_missing_e(log_sigma):
    return log_sigma.sum() + HALF_LOG_2PI * log_sigma.shape[0]


@mutant("gaussian_entropy")
def gaussian_entropy_sigma_for_log_sigma(log_sigma):
    return torch.exp(log_sigma).sum() + 0.5 * LOG_2PI_E * log_sigma.shape[0]


@mutant("gaussian_entropy")
def gaussian_entropy_mean_over_dims(log_sigma):
    return (log_sigma + 0.5 * LOG_2PI_E).mean()


@mutant("gaussian_entropy")
def gaussian_entropy_not_summed(log_sigma):
    return log_sigma + 0.5 * LOG_2PI_E


@mutant("gaussian_entropy")
def gaussian_entropy_returns_python_float(log_sigma):
    return float(
        sum(math.log(math.exp(v)) + 0.5 * LOG_2PI_E for v in log_sigma.tolist())
    )


@mutant("gaussian_entropy")
def gaussian_entropy_wrong_sign(log_sigma):
    return -(log_sigma.sum() + 0.5 * LOG_2PI_E * log_sigma.shape[0])


@mutant("gaussian_entropy")
def gaussian_entropy_log_sigma_as_log_variance(log_sigma):
    return (0.5 * log_sigma).sum() + 0.5 * LOG_2PI_E * log_sigma.shape[0]


@mutant("gaussian_entropy")
def gaussian_entropy_detached(log_sigma):
    return (log_sigma.detach().sum() + 0.5 * LOG_2PI_E * log_sigma.shape[0]).clone()


# --------------------------------------------------------------------------- elbo


@variant("elbo")
def elbo_torch_normal_log_prob(log_joint, mu, log_sigma, eps):
    q = Normal(mu, torch.exp(log_sigma))
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) - q.log_prob(z).sum(-1)).mean()


@variant("elbo")
def elbo_log_q_from_eps(log_joint, mu, log_sigma, eps):
    # log q(mu + sigma*eps) = sum_d (-eps^2/2 - log sigma - log(2 pi)/2): the same function of (mu, log_sigma)
    z = mu + log_sigma.exp() * eps
    log_q = (-0.5 * eps**2 - log_sigma - HALF_LOG_2PI).sum(dim=1)
    return torch.mean(log_joint(z) - log_q)


@variant("elbo")
def elbo_rounded_half_log_2pi(log_joint, mu, log_sigma, eps):
    # log q with 1/2 log(2 pi) typed to seven decimals: 0.9189385 (1.5e-8 off per dimension)
    z = mu + log_sigma.exp() * eps
    log_q = (-0.5 * eps**2 - log_sigma - 0.9189385).sum(dim=1)
    return torch.mean(log_joint(z) - log_q)


@variant("elbo")
def elbo_independent_normal(log_joint, mu, log_sigma, eps):
    q = Independent(Normal(mu, log_sigma.exp()), 1)
    z = q.mean + q.stddev * eps
    return (log_joint(z) - q.log_prob(z)).sum() / eps.shape[0]


@variant("elbo")
def elbo_mvn_diagonal(log_joint, mu, log_sigma, eps):
    q = MultivariateNormal(mu, scale_tril=torch.diag(torch.exp(log_sigma)))
    z = mu + eps @ torch.diag(torch.exp(log_sigma))
    return (log_joint(z) - q.log_prob(z)).mean()


@variant("elbo")
def elbo_loop_over_samples(log_joint, mu, log_sigma, eps):
    terms = []
    for s in range(eps.shape[0]):
        z = (mu + torch.exp(log_sigma) * eps[s]).unsqueeze(0)
        terms.append(log_joint(z)[0] - _log_q(z, mu, log_sigma)[0])
    return torch.stack(terms).mean()


@mutant("elbo")
def elbo_missing_log_q(log_joint, mu, log_sigma, eps):
    return log_joint(mu + torch.exp(log_sigma) * eps).mean()


@mutant("elbo")
def elbo_plus_log_q(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) + _log_q(z, mu, log_sigma)).mean()


@mutant("elbo")
def elbo_variance_as_scale(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (
        log_joint(z) - Normal(mu, torch.exp(log_sigma) ** 2).log_prob(z).sum(-1)
    ).mean()


@mutant("elbo")
def elbo_missing_half_log_2pi(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    log_q = (-0.5 * ((z - mu) / torch.exp(log_sigma)) ** 2 - log_sigma).sum(-1)
    return (log_joint(z) - log_q).mean()


@mutant("elbo")
def elbo_sums_over_samples(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) - _log_q(z, mu, log_sigma)).sum()


@mutant("elbo")
def elbo_log_q_not_summed_over_dims(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    log_q = Normal(mu, torch.exp(log_sigma)).log_prob(z)  # (S, D): forgot .sum(-1)
    return (log_joint(z)[:, None] - log_q).mean()


@mutant("elbo")
def elbo_z_from_prior(log_joint, mu, log_sigma, eps):
    z = eps
    return (log_joint(z) - _log_q(z, mu, log_sigma)).mean()


@mutant("elbo")
def elbo_detached_samples(log_joint, mu, log_sigma, eps):
    z = (mu + torch.exp(log_sigma) * eps).detach()
    return (log_joint(z) - _log_q(z, mu, log_sigma)).mean()


@mutant("elbo")
def elbo_sticking_the_landing(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) - _log_q(z, mu.detach(), log_sigma.detach())).mean()


@mutant("elbo")
def elbo_draws_own_noise(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * torch.randn_like(eps)
    return (log_joint(z) - _log_q(z, mu, log_sigma)).mean()


@mutant("elbo")
def elbo_log_sigma_as_sigma(log_joint, mu, log_sigma, eps):
    z = mu + log_sigma * eps
    return (log_joint(z) - _log_q(z, mu, log_sigma)).mean()


@mutant("elbo")
def elbo_log_q_uncentred(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) - _log_q(z, torch.zeros_like(mu), log_sigma)).mean()


@mutant("elbo")
def elbo_returns_item(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return (log_joint(z) - _log_q(z, mu, log_sigma)).mean().item()


# --------------------------------------------------------------------------- elbo_entropy_form


@variant("elbo_entropy_form")
def elbo_entropy_form_by_hand(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + _entropy(log_sigma)


@variant("elbo_entropy_form")
def elbo_entropy_form_rounded_constant(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + (log_sigma + 1.4189385).sum()


@variant("elbo_entropy_form")
def elbo_entropy_form_torch_normal(log_joint, mu, log_sigma, eps):
    q = Normal(mu, torch.exp(log_sigma))
    return log_joint(q.loc + q.scale * eps).mean() + q.entropy().sum()


@variant("elbo_entropy_form")
def elbo_entropy_form_independent(log_joint, mu, log_sigma, eps):
    q = Independent(Normal(mu, log_sigma.exp()), 1)
    z = mu + q.stddev * eps
    return log_joint(z).sum() / len(eps) + q.entropy()


@variant("elbo_entropy_form")
def elbo_entropy_form_mvn(log_joint, mu, log_sigma, eps):
    q = MultivariateNormal(mu, covariance_matrix=torch.diag(torch.exp(2 * log_sigma)))
    z = mu + eps * torch.exp(log_sigma)
    return torch.mean(log_joint(z)) + q.entropy()


@mutant("elbo_entropy_form")
def elbo_entropy_form_missing_entropy(log_joint, mu, log_sigma, eps):
    return log_joint(mu + torch.exp(log_sigma) * eps).mean()


@mutant("elbo_entropy_form")
def elbo_entropy_form_log_variance_entropy(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + (2 * log_sigma).sum() + 0.5 * LOG_2PI_E * len(mu)


@mutant("elbo_entropy_form")
def elbo_entropy_form_entropy_missing_half(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + log_sigma.sum() + LOG_2PI_E * len(mu)


@mutant("elbo_entropy_form")
def elbo_entropy_form_minus_entropy(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() - _entropy(log_sigma)


@mutant("elbo_entropy_form")
def elbo_entropy_form_sums_over_samples(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).sum() + _entropy(log_sigma)


@mutant("elbo_entropy_form")
def elbo_entropy_form_z_from_prior(log_joint, mu, log_sigma, eps):
    return log_joint(eps).mean() + _entropy(log_sigma)


@mutant("elbo_entropy_form")
def elbo_entropy_form_detached_samples(log_joint, mu, log_sigma, eps):
    z = (mu + torch.exp(log_sigma) * eps).detach()
    return log_joint(z).mean() + _entropy(log_sigma)


@mutant("elbo_entropy_form")
def elbo_entropy_form_entropy_mean_over_dims(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + (log_sigma + 0.5 * LOG_2PI_E).mean()


@mutant("elbo_entropy_form")
def elbo_entropy_form_sigma_in_entropy(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + (torch.exp(log_sigma) + 0.5 * LOG_2PI_E).sum()


@mutant("elbo_entropy_form")
def elbo_entropy_form_entropy_missing_e(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + (log_sigma + HALF_LOG_2PI).sum()


# --------------------------------------------------------------------------- elbo_score_grad


@variant("elbo_score_grad")
def elbo_score_grad_by_hand(log_joint, mu, log_sigma, z):
    return _score_grad(log_joint, mu, log_sigma, z)


@variant("elbo_score_grad")
def elbo_score_grad_surrogate_autograd(log_joint, mu, log_sigma, z):
    mu_, ls_ = (
        mu.detach().clone().requires_grad_(),
        log_sigma.detach().clone().requires_grad_(),
    )
    log_q = Normal(mu_, ls_.exp()).log_prob(z.detach()).sum(-1)
    with torch.no_grad():
        weight = log_joint(z) - log_q
    surrogate = (log_q * weight).mean()
    return tuple(torch.autograd.grad(surrogate, (mu_, ls_)))


@variant("elbo_score_grad")
def elbo_score_grad_per_sample_autograd(log_joint, mu, log_sigma, z):
    g_mu, g_ls = torch.zeros_like(mu), torch.zeros_like(log_sigma)
    for s in range(z.shape[0]):
        m, ls = mu.clone().requires_grad_(True), log_sigma.clone().requires_grad_(True)
        log_q = Independent(Normal(m, torch.exp(ls)), 1).log_prob(z[s])
        d_mu, d_ls = torch.autograd.grad(log_q, (m, ls))
        weight = (log_joint(z[s : s + 1])[0] - log_q).detach()
        g_mu, g_ls = g_mu + weight * d_mu, g_ls + weight * d_ls
    return g_mu / z.shape[0], g_ls / z.shape[0]


@variant("elbo_score_grad")
def elbo_score_grad_sigma_chain_rule(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        sigma = torch.exp(log_sigma)
        weight = log_joint(z) - Normal(mu, sigma).log_prob(z).sum(1)
        d_mu = (z - mu) / sigma**2
        d_sigma = (z - mu) ** 2 / sigma**3 - 1 / sigma
        d_log_sigma = d_sigma * sigma  # d/dlog sigma = sigma * d/dsigma
        return (weight[:, None] * d_mu).mean(0), (weight[:, None] * d_log_sigma).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_keeps_graph(log_joint, mu, log_sigma, z):
    # create_graph=True: right values, but the result still carries an autograd graph.
    mu_, ls_ = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
    log_q = Normal(mu_, ls_.exp()).log_prob(z).sum(-1)
    surrogate = (log_q * (log_joint(z) - log_q).detach()).mean()
    return tuple(torch.autograd.grad(surrogate, (mu_, ls_), create_graph=True))


@mutant("elbo_score_grad")
def elbo_score_grad_by_hand_keeps_inputs_graph(log_joint, mu, log_sigma, z):
    # By hand, right values, nothing detached: with plain inputs the results are plain, but
    # with fit_bbvi's leaves (requires_grad) they hold the step's graph back into mu, log_sigma.
    weight = log_joint(z) - _log_q(z, mu, log_sigma)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return (weight[:, None] * d_mu).mean(0), (weight[:, None] * d_ls).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_returns_leaves_requiring_grad(log_joint, mu, log_sigma, z):
    # requires_grad=True without a grad_fn: "so the caller can differentiate it"
    return tuple(
        g.requires_grad_(True) for g in _score_grad(log_joint, mu, log_sigma, z)
    )


@mutant("elbo_score_grad")
def elbo_score_grad_no_grad_view_of_graph(log_joint, mu, log_sigma, z):
    # One create_graph call for both parameters, split under no_grad: the views keep the graph.
    flat = torch.cat([mu, log_sigma]).detach().requires_grad_(True)
    mu_, ls_ = flat[: mu.shape[0]], flat[mu.shape[0] :]
    log_q = Normal(mu_, ls_.exp()).log_prob(z).sum(-1)
    surrogate = (log_q * (log_joint(z) - log_q).detach()).mean()
    (grad,) = torch.autograd.grad(surrogate, flat, create_graph=True)
    with torch.no_grad():
        return grad[: mu.shape[0]], grad[mu.shape[0] :]


@mutant("elbo_score_grad")
def elbo_score_grad_keeps_graph_in_a_list(log_joint, mu, log_sigma, z):
    # .backward(create_graph=True) on copies, .grad returned in a list: .grad holds the graph.
    mu_, ls_ = (
        mu.detach().clone().requires_grad_(),
        log_sigma.detach().clone().requires_grad_(),
    )
    log_q = Normal(mu_, ls_.exp()).log_prob(z).sum(-1)
    (log_q * (log_joint(z) - log_q).detach()).mean().backward(create_graph=True)
    return [mu_.grad, ls_.grad]


@mutant("elbo_score_grad")
def elbo_score_grad_weight_missing_log_q(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        weight = log_joint(z)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return (weight[:, None] * d_mu).mean(0), (weight[:, None] * d_ls).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_sums_over_samples(log_joint, mu, log_sigma, z):
    g_mu, g_ls = _score_grad(log_joint, mu, log_sigma, z)
    return g_mu * z.shape[0], g_ls * z.shape[0]


@mutant("elbo_score_grad")
def elbo_score_grad_wrt_sigma(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        sigma = torch.exp(log_sigma)
        weight = log_joint(z) - _log_q(z, mu, log_sigma)
        d_sigma = (
            z - mu
        ) ** 2 / sigma**3 - 1 / sigma  # forgot the chain rule to log sigma
        return (weight[:, None] * (z - mu) / sigma**2).mean(0), (
            weight[:, None] * d_sigma
        ).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_log_sigma_score_missing_minus_one(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        sigma = torch.exp(log_sigma)
        weight = log_joint(z) - _log_q(z, mu, log_sigma)
        return (weight[:, None] * (z - mu) / sigma**2).mean(0), (
            weight[:, None] * ((z - mu) / sigma) ** 2
        ).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_mu_score_over_sigma(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        sigma = torch.exp(log_sigma)
        weight = log_joint(z) - _log_q(z, mu, log_sigma)
        eps = (z - mu) / sigma
        return (weight[:, None] * eps).mean(0), (weight[:, None] * (eps**2 - 1)).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_wrong_sign(log_joint, mu, log_sigma, z):
    g_mu, g_ls = _score_grad(log_joint, mu, log_sigma, z)
    return -g_mu, -g_ls


@mutant("elbo_score_grad")
def elbo_score_grad_weight_not_detached(log_joint, mu, log_sigma, z):
    mu_, ls_ = (
        mu.detach().clone().requires_grad_(),
        log_sigma.detach().clone().requires_grad_(),
    )
    log_q = Normal(mu_, ls_.exp()).log_prob(z).sum(-1)
    surrogate = (
        log_q * (log_joint(z) - log_q)
    ).mean()  # the weight carries gradient too
    return tuple(torch.autograd.grad(surrogate, (mu_, ls_)))


@mutant("elbo_score_grad")
def elbo_score_grad_log_q_not_summed_over_dims(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        weight = log_joint(z)[:, None] - Normal(mu, torch.exp(log_sigma)).log_prob(
            z
        )  # (S, D)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return (weight * d_mu).mean(0), (weight * d_ls).mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_subtracts_score(log_joint, mu, log_sigma, z):
    # d/dlambda of E[log p - log q] with the direct -grad log q term kept: zero mean, not the spec's formula
    g_mu, g_ls = _score_grad(log_joint, mu, log_sigma, z)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return g_mu - d_mu.mean(0), g_ls - d_ls.mean(0)


@mutant("elbo_score_grad")
def elbo_score_grad_variance_as_scale_in_weight(log_joint, mu, log_sigma, z):
    with torch.no_grad():
        weight = log_joint(z) - Normal(mu, torch.exp(2 * log_sigma)).log_prob(z).sum(-1)
    d_mu, d_ls = _score(z, mu, log_sigma)
    return (weight[:, None] * d_mu).mean(0), (weight[:, None] * d_ls).mean(0)


# --------------------------------------------------------------------------- fit_bbvi
# A plain, correct loop with switches for the single mistake each mutant makes.


def _bbvi(
    log_joint,
    dim,
    estimator,
    num_steps,
    num_samples,
    lr,
    seed,
    *,
    generator_seed=None,
    global_rng=False,
    validate=True,
    force=None,
    zero_grad=True,
    ascend=True,
    detach=True,
    record="elbo",
    samples=None,
    prior=False,
    weight="full",
    dtype=torch.float64,
    fixed_lr=None,
):
    if validate:
        _check_estimator(estimator)
    estimator = force or estimator
    generator = torch.Generator().manual_seed(
        seed if generator_seed is None else generator_seed
    )
    mu = torch.zeros(dim, dtype=dtype, requires_grad=True)
    log_sigma = torch.zeros(dim, dtype=dtype, requires_grad=True)
    optimizer = torch.optim.Adam(
        [mu, log_sigma], lr=lr if fixed_lr is None else fixed_lr
    )
    elbos = []
    s = samples or num_samples
    for _ in range(num_steps):
        eps = (
            torch.randn(s, dim, dtype=torch.float64)
            if global_rng
            else torch.randn(s, dim, generator=generator, dtype=torch.float64)
        )
        eps = eps.to(dtype)
        if zero_grad:
            optimizer.zero_grad()
        if estimator == "reparam":
            z = eps if prior else mu + torch.exp(log_sigma) * eps
            value = (log_joint(z) - _log_q(z, mu, log_sigma)).mean()
            (-value if ascend else value).backward()
        else:
            with torch.no_grad():
                z = mu + torch.exp(log_sigma) * eps
                log_p = log_joint(z)
                w = log_p - _log_q(z, mu, log_sigma) if weight == "full" else log_p
                value = (log_p - _log_q(z, mu, log_sigma)).mean()
            d_mu, d_ls = _score(z, mu.detach(), log_sigma.detach())
            g_mu, g_ls = (w[:, None] * d_mu).mean(0), (w[:, None] * d_ls).mean(0)
            sign = -1 if ascend else 1
            if mu.grad is None or zero_grad:
                mu.grad, log_sigma.grad = sign * g_mu, sign * g_ls
            else:
                mu.grad, log_sigma.grad = (
                    mu.grad + sign * g_mu,
                    log_sigma.grad + sign * g_ls,
                )
        optimizer.step()
        if record == "elbo":
            elbos.append(value.item())
        elif record == "loss":
            elbos.append(-value.item())
        elif record == "tensor":
            elbos.append(value)
        elif record == "sum":
            elbos.append(value.item() * s)
    if detach:
        return mu.detach(), log_sigma.detach(), elbos
    return mu, log_sigma, elbos


@variant("fit_bbvi")
def fit_bbvi_manual_adam(
    log_joint,
    dim,
    *,
    estimator="reparam",
    num_steps=2000,
    num_samples=16,
    lr=0.05,
    seed=0,
):
    _check_estimator(estimator)
    gen = torch.Generator().manual_seed(seed)
    params = torch.zeros(2, dim, dtype=torch.float64)  # rows: mu, log_sigma
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    beta1, beta2, tiny = 0.9, 0.999, 1e-8
    elbos = []
    for t in range(1, num_steps + 1):
        eps = torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
        if estimator == "reparam":
            p = params.clone().requires_grad_(True)
            z = p[0] + torch.exp(p[1]) * eps
            value = (log_joint(z) - _log_q(z, p[0], p[1])).mean()
            (grad,) = torch.autograd.grad(value, p)
        else:
            z = params[0] + torch.exp(params[1]) * eps
            with torch.no_grad():
                value = (log_joint(z) - _log_q(z, params[0], params[1])).mean()
            grad = torch.stack(_score_grad(log_joint, params[0], params[1], z))
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        step = (m / (1 - beta1**t)) / (torch.sqrt(v / (1 - beta2**t)) + tiny)
        params = params + lr * step  # ascent
        elbos.append(float(value.detach()))
    return params[0].clone(), params[1].clone(), elbos


@variant("fit_bbvi")
def fit_bbvi_iterate_averaging(
    log_joint,
    dim,
    *,
    estimator="reparam",
    num_steps=2000,
    num_samples=16,
    lr=0.05,
    seed=0,
):
    _check_estimator(estimator)
    gen = torch.Generator().manual_seed(seed)
    mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    avg_mu, avg_ls, count, elbos = (
        torch.zeros(dim, dtype=torch.float64),
        torch.zeros(dim, dtype=torch.float64),
        0,
        [],
    )
    for step in range(num_steps):
        eps = torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        if estimator == "reparam":
            z = mu + log_sigma.exp() * eps
            value = (
                log_joint(z) - Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)
            ).mean()
            (-value).backward()
        else:
            z = (mu + log_sigma.exp() * eps).detach()
            log_q = Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)
            with torch.no_grad():
                w = log_joint(z) - log_q
            value = w.mean()
            (-(log_q * w).mean()).backward()
        opt.step()
        elbos.append(value.item())
        if step >= num_steps // 2:  # Polyak-Ruppert averaging of the second half
            with torch.no_grad():
                avg_mu += mu
                avg_ls += log_sigma
            count += 1
    return avg_mu / max(count, 1), avg_ls / max(count, 1), elbos


@variant("fit_bbvi")
def fit_bbvi_lr_decay(
    log_joint,
    dim,
    *,
    estimator="reparam",
    num_steps=2000,
    num_samples=16,
    lr=0.05,
    seed=0,
):
    if estimator not in {"reparam", "score"}:
        raise ValueError("estimator must be 'reparam' or 'score'")
    gen = torch.Generator()
    gen.manual_seed(seed)
    params = [
        torch.zeros(dim, dtype=torch.float64, requires_grad=True) for _ in range(2)
    ]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 / math.sqrt(1.0 + t / 100.0)
    )
    elbos = []
    for _ in range(num_steps):
        mu, log_sigma = params
        eps = torch.randn((num_samples, dim), generator=gen, dtype=torch.float64)
        opt.zero_grad()
        if estimator == "reparam":
            z = mu + torch.exp(log_sigma) * eps
            value = log_joint(z).mean() + _entropy(
                log_sigma
            )  # entropy form: same gradient
            (-value).backward()
        else:
            with torch.no_grad():
                z = mu + torch.exp(log_sigma) * eps
                value = (log_joint(z) - _log_q(z, mu, log_sigma)).mean()
            g_mu, g_ls = _score_grad(log_joint, mu, log_sigma, z)
            mu.grad, log_sigma.grad = -g_mu, -g_ls
        opt.step()
        sched.step()
        elbos.append(float(value.detach()))
    return params[0].detach().clone(), params[1].detach().clone(), elbos


@variant("fit_bbvi")
def fit_bbvi_student_helpers(
    log_joint,
    dim,
    *,
    estimator="reparam",
    num_steps=2000,
    num_samples=16,
    lr=0.05,
    seed=0,
):
    # Calls the notebook's own elbo / elbo_score_grad (here the reference's); Adam on one (2, dim) tensor.
    _check_estimator(estimator)
    gen = torch.Generator().manual_seed(seed)
    lam = torch.zeros(2, dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([lam], lr=lr)
    elbos = []
    for _ in range(num_steps):
        eps = torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        if estimator == "reparam":
            value = _notebook_elbo(log_joint, lam[0], lam[1], eps)
            (-value).backward()
        else:
            with torch.no_grad():
                z = lam[0] + lam[1].exp() * eps
                value = _notebook_elbo(log_joint, lam[0], lam[1], eps)
            lam.grad = -torch.stack(_notebook_score_grad(log_joint, lam[0], lam[1], z))
        opt.step()
        elbos.append(value.item())
    return lam[0].detach().clone(), lam[1].detach().clone(), elbos


@variant("fit_bbvi")
def fit_bbvi_stl_and_loo_baseline(
    log_joint,
    dim,
    *,
    estimator="reparam",
    num_steps=2000,
    num_samples=16,
    lr=0.05,
    seed=0,
):
    # Lower-variance unbiased gradients: "sticking the landing" (Roeder et al. 2017) for the
    # pathwise estimator, a leave-one-out baseline for the score estimator. fit_bbvi only
    # promises the posterior, so either choice is correct here (elbo() itself is pinned).
    _check_estimator(estimator)
    gen = torch.Generator().manual_seed(seed)
    mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    elbos = []
    for _ in range(num_steps):
        eps = torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        z = mu + torch.exp(log_sigma) * eps
        if estimator == "reparam":
            per_sample = log_joint(z) - _log_q(z, mu.detach(), log_sigma.detach())
            (-per_sample.mean()).backward()
            value = per_sample.detach().mean()
        else:
            z = z.detach()
            with torch.no_grad():
                w = log_joint(z) - _log_q(z, mu, log_sigma)
                baseline = (w.sum() - w) / (num_samples - 1)
            surrogate = (_log_q(z, mu, log_sigma) * (w - baseline)).mean()
            (-surrogate).backward()
            value = w.mean()
        opt.step()
        elbos.append(value.item())
    return mu.detach(), log_sigma.detach(), elbos


def _fit_mutant(**bug):
    def fit_bbvi(
        log_joint,
        dim,
        *,
        estimator="reparam",
        num_steps=2000,
        num_samples=16,
        lr=0.05,
        seed=0,
    ):
        return _bbvi(log_joint, dim, estimator, num_steps, num_samples, lr, seed, **bug)

    return fit_bbvi


def _named(name, fn):
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    return mutant("fit_bbvi")(fn)


fit_bbvi_ignores_estimator = _named(
    "fit_bbvi_ignores_estimator", _fit_mutant(force="reparam")
)
fit_bbvi_always_score = _named("fit_bbvi_always_score", _fit_mutant(force="score"))
fit_bbvi_ignores_seed_global_rng = _named(
    "fit_bbvi_ignores_seed_global_rng", _fit_mutant(global_rng=True)
)
fit_bbvi_fixed_seed_zero = _named(
    "fit_bbvi_fixed_seed_zero", _fit_mutant(generator_seed=0)
)
fit_bbvi_no_zero_grad = _named("fit_bbvi_no_zero_grad", _fit_mutant(zero_grad=False))
fit_bbvi_descends = _named("fit_bbvi_descends", _fit_mutant(ascend=False))
fit_bbvi_returns_non_detached = _named(
    "fit_bbvi_returns_non_detached", _fit_mutant(detach=False)
)
fit_bbvi_records_loss = _named("fit_bbvi_records_loss", _fit_mutant(record="loss"))
fit_bbvi_records_tensors = _named(
    "fit_bbvi_records_tensors", _fit_mutant(record="tensor")
)
fit_bbvi_records_summed_elbo = _named(
    "fit_bbvi_records_summed_elbo", _fit_mutant(record="sum")
)
fit_bbvi_hardcodes_16_samples = _named(
    "fit_bbvi_hardcodes_16_samples", _fit_mutant(samples=16)
)
fit_bbvi_one_sample = _named("fit_bbvi_one_sample", _fit_mutant(samples=1))
fit_bbvi_z_from_prior = _named("fit_bbvi_z_from_prior", _fit_mutant(prior=True))
fit_bbvi_score_weight_missing_log_q = _named(
    "fit_bbvi_score_weight_missing_log_q", _fit_mutant(weight="log_p")
)
fit_bbvi_no_value_error = _named("fit_bbvi_no_value_error", _fit_mutant(validate=False))
fit_bbvi_float32 = _named("fit_bbvi_float32", _fit_mutant(dtype=torch.float32))
fit_bbvi_hardcodes_lr_0_05 = _named(
    "fit_bbvi_hardcodes_lr_0_05", _fit_mutant(fixed_lr=0.05)
)


equivalent(
    "fit_bbvi",
    "fit_bbvi_score_with_zero_mean_term",
    "adding the zero-mean -grad log q term to the score estimator leaves it unbiased, so the fit "
    "is correct (elbo_score_grad itself is pinned to the lecture's formula and that mutant is caught)",
)
equivalent(
    "fit_bbvi",
    "fit_bbvi_random_init",
    "starting from a seeded random (mu, log_sigma) instead of (0, 0) is correct: the spec fixes "
    "no initialisation",
)


# =========================================================================== which q?
# Full-covariance Gaussian q = N(mu, L L^T), L = tril(R, -1) + diag(exp(diag R)).


def _tril(raw_tril):
    return torch.tril(raw_tril, -1) + torch.diag(torch.exp(torch.diagonal(raw_tril)))


# --------------------------------------------------------------------------- fullcov_rsample


@variant("fullcov_rsample")
def fullcov_rsample_matmul_per_row(mu, raw_tril, eps):
    tril = _tril(raw_tril)
    return mu + (tril @ eps.T).T


@variant("fullcov_rsample")
def fullcov_rsample_multivariate_normal(mu, raw_tril, eps):
    q = MultivariateNormal(mu, scale_tril=_tril(raw_tril))
    return q.loc + torch.einsum("ij,sj->si", q.scale_tril, eps)


@variant("fullcov_rsample")
def fullcov_rsample_loops_and_mask(mu, raw_tril, eps):
    d = raw_tril.shape[0]
    mask = torch.ones(d, d, dtype=torch.bool).tril(-1)
    tril = torch.where(mask, raw_tril, torch.zeros_like(raw_tril))
    tril = tril + torch.diag_embed(raw_tril.diagonal().exp())
    rows = [mu + tril @ eps[s] for s in range(eps.shape[0])]
    return torch.stack(rows)


@variant("fullcov_rsample")
def fullcov_rsample_float64_cast(mu, raw_tril, eps):
    tril = raw_tril.tril(-1) + torch.diag_embed(raw_tril.diagonal().exp())
    return (mu.double() + eps.double() @ tril.double().T).to(mu.dtype)


@mutant("fullcov_rsample")
def fullcov_rsample_raw_diagonal_without_exp(mu, raw_tril, eps):
    return mu + eps @ torch.tril(raw_tril).T


@mutant("fullcov_rsample")
def fullcov_rsample_upper_triangle(mu, raw_tril, eps):
    tril = torch.triu(raw_tril, 1) + torch.diag(torch.exp(torch.diagonal(raw_tril)))
    return mu + eps @ tril.T


@mutant("fullcov_rsample")
def fullcov_rsample_l_transpose_eps(mu, raw_tril, eps):
    return mu + eps @ _tril(raw_tril)


@mutant("fullcov_rsample")
def fullcov_rsample_strict_upper_not_masked(mu, raw_tril, eps):
    full = raw_tril - torch.diag(torch.diagonal(raw_tril))
    return mu + eps @ (full + torch.diag(torch.exp(torch.diagonal(raw_tril)))).T


@mutant("fullcov_rsample")
def fullcov_rsample_exp_whole_triangle(mu, raw_tril, eps):
    return mu + eps @ torch.tril(torch.exp(raw_tril)).T


@mutant("fullcov_rsample")
def fullcov_rsample_eye_times_exp(mu, raw_tril, eps):
    # exp of the whole matrix, masked by eye: 0 * inf = nan once an unused entry exceeds ~709
    eye = torch.eye(raw_tril.shape[0], dtype=raw_tril.dtype)
    tril = raw_tril.tril(-1) + eye * raw_tril.exp()
    return mu + eps @ tril.T


@mutant("fullcov_rsample")
def fullcov_rsample_missing_mu(mu, raw_tril, eps):
    return eps @ _tril(raw_tril).T


@mutant("fullcov_rsample")
def fullcov_rsample_diagonal_only(mu, raw_tril, eps):
    return mu + eps * torch.exp(torch.diagonal(raw_tril))


@mutant("fullcov_rsample")
def fullcov_rsample_detached_tril(mu, raw_tril, eps):
    return mu + eps @ _tril(raw_tril.detach()).T


# --------------------------------------------------------------------------- fullcov_entropy


@variant("fullcov_entropy")
def fullcov_entropy_multivariate_normal(raw_tril):
    d = raw_tril.shape[0]
    return MultivariateNormal(
        torch.zeros(d, dtype=raw_tril.dtype), scale_tril=_tril(raw_tril)
    ).entropy()


@variant("fullcov_entropy")
def fullcov_entropy_slogdet(raw_tril):
    cov = _tril(raw_tril) @ _tril(raw_tril).T
    return 0.5 * torch.linalg.slogdet(2 * math.pi * math.e * cov).logabsdet


@variant("fullcov_entropy")
def fullcov_entropy_rounded_constant(raw_tril):
    # 1/2 log(2 pi e) to 8 significant digits, as a student copies it from a calculator.
    return torch.diagonal(raw_tril).sum() + 1.4189385 * raw_tril.shape[0]


@variant("fullcov_entropy")
def fullcov_entropy_log_of_exp_diagonal_loop(raw_tril):
    total = 0.5 * raw_tril.shape[0] * math.log(2 * math.pi) + 0.5 * raw_tril.shape[0]
    for d in range(raw_tril.shape[0]):
        total = total + torch.log(torch.exp(raw_tril[d, d]))
    return total


@mutant("fullcov_entropy")
def fullcov_entropy_sums_exp_diagonal(raw_tril):
    return (
        torch.exp(torch.diagonal(raw_tril)).sum() + 0.5 * LOG_2PI_E * raw_tril.shape[0]
    )


@mutant("fullcov_entropy")
def fullcov_entropy_sums_lower_triangle(raw_tril):
    return torch.tril(raw_tril).sum() + 0.5 * LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_slogdet_of_eye_times_exp(raw_tril):
    # log det L of a factor built with eye * exp(raw_tril): nan once an unused entry exceeds ~709
    eye = torch.eye(raw_tril.shape[0], dtype=raw_tril.dtype)
    tril = raw_tril.tril(-1) + eye * raw_tril.exp()
    return torch.linalg.slogdet(tril).logabsdet + 0.5 * LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_wrong_sign(raw_tril):
    return -(torch.diagonal(raw_tril).sum() + 0.5 * LOG_2PI_E * raw_tril.shape[0])


@mutant("fullcov_entropy")
def fullcov_entropy_sums_whole_matrix(raw_tril):
    return raw_tril.sum() + 0.5 * LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_log_det_cov_not_halved(raw_tril):
    return 2 * torch.diagonal(raw_tril).sum() + 0.5 * LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_constant_not_halved(raw_tril):
    return torch.diagonal(raw_tril).sum() + LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_missing_e(raw_tril):
    return torch.diagonal(raw_tril).sum() + HALF_LOG_2PI * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_constant_for_one_dimension(raw_tril):
    return torch.diagonal(raw_tril).sum() + 0.5 * LOG_2PI_E


@mutant("fullcov_entropy")
def fullcov_entropy_returns_float(raw_tril):
    return float(torch.diagonal(raw_tril).sum()) + 0.5 * LOG_2PI_E * raw_tril.shape[0]


@mutant("fullcov_entropy")
def fullcov_entropy_slogdet_of_raw(raw_tril):
    cov = raw_tril @ raw_tril.T
    return (
        0.5 * torch.linalg.slogdet(cov).logabsdet + 0.5 * LOG_2PI_E * raw_tril.shape[0]
    )


# --------------------------------------------------------------------------- mean_field_sigma


@variant("mean_field_sigma")
def mean_field_sigma_inverse(covariance):
    return torch.diagonal(torch.linalg.inv(covariance)).rsqrt()


@variant("mean_field_sigma")
def mean_field_sigma_solve_per_coordinate(covariance):
    # Lambda_dd = e_d^T Sigma^-1 e_d, one linear solve per coordinate.
    eye = torch.eye(covariance.shape[0], dtype=covariance.dtype)
    return torch.stack(
        [
            1.0 / torch.sqrt(torch.linalg.solve(covariance, e)[d])
            for d, e in enumerate(eye)
        ]
    )


@variant("mean_field_sigma")
def mean_field_sigma_schur_complement(covariance):
    # sigma_d^2 = Var(z_d | z_rest) = Sigma_dd - Sigma_d,r Sigma_rr^-1 Sigma_r,d.
    d = covariance.shape[0]
    out = []
    for i in range(d):
        rest = [j for j in range(d) if j != i]
        if not rest:
            out.append(covariance[i, i].sqrt())
            continue
        s_ir = covariance[i, rest]
        s_rr = covariance[rest][:, rest]
        out.append(torch.sqrt(covariance[i, i] - s_ir @ torch.linalg.solve(s_rr, s_ir)))
    return torch.stack(out)


@mutant("mean_field_sigma")
def mean_field_sigma_marginal_sd(covariance):
    return torch.diagonal(covariance).sqrt()


@mutant("mean_field_sigma")
def mean_field_sigma_returns_variance(covariance):
    return 1.0 / torch.diagonal(torch.linalg.inv(covariance))


@mutant("mean_field_sigma")
def mean_field_sigma_sqrt_of_precision(covariance):
    return torch.diagonal(torch.linalg.inv(covariance)).sqrt()


@mutant("mean_field_sigma")
def mean_field_sigma_two_d_formula_everywhere(covariance):
    # (1 - rho^2) Sigma_dd with rho from the first pair only: right in 2-D, wrong beyond.
    rho = covariance[0, 1] / torch.sqrt(covariance[0, 0] * covariance[1, 1])
    return torch.sqrt((1 - rho**2) * torch.diagonal(covariance))


@mutant("mean_field_sigma")
def mean_field_sigma_float32(covariance):
    inverse = torch.linalg.inv(covariance.float())
    return torch.diagonal(inverse).rsqrt().double()


# --------------------------------------------------------------------------- mixture_log_prob


def _log_normal(z, mu, log_sigma):
    """(S, K) diagonal-Gaussian log densities by hand."""
    diff = (z[:, None, :] - mu[None]) / torch.exp(log_sigma)[None]
    return (-0.5 * diff**2 - log_sigma[None] - HALF_LOG_2PI).sum(-1)


@variant("mixture_log_prob")
def mixture_log_prob_mixture_same_family(z, logits, mu, log_sigma):
    from torch.distributions import Categorical, MixtureSameFamily

    q = MixtureSameFamily(
        Categorical(logits=logits), Independent(Normal(mu, log_sigma.exp()), 1)
    )
    return q.log_prob(z)


@variant("mixture_log_prob")
def mixture_log_prob_max_shift_by_hand(z, logits, mu, log_sigma):
    log_w = logits - torch.logsumexp(logits, 0)
    terms = _log_normal(z, mu, log_sigma) + log_w
    top = terms.max(dim=1, keepdim=True).values
    return top.squeeze(1) + torch.log(torch.exp(terms - top).sum(1))


@variant("mixture_log_prob")
def mixture_log_prob_loop_over_components(z, logits, mu, log_sigma):
    weights = torch.softmax(logits, dim=-1)
    columns = []
    for k in range(mu.shape[0]):
        comp = Normal(mu[k], torch.exp(log_sigma[k])).log_prob(z).sum(1)
        columns.append(torch.log(weights[k]) + comp)
    return torch.logsumexp(torch.stack(columns, dim=1), dim=1)


@variant("mixture_log_prob")
def mixture_log_prob_loop_over_points(z, logits, mu, log_sigma):
    log_w = torch.log_softmax(logits, 0)
    out = []
    for s in range(z.shape[0]):
        per = (Normal(mu, log_sigma.exp()).log_prob(z[s]).sum(-1)) + log_w
        out.append(torch.logsumexp(per, 0))
    return torch.stack(out)


@mutant("mixture_log_prob")
def mixture_log_prob_naive_log_sum_exp(z, logits, mu, log_sigma):
    weights = torch.softmax(logits, 0)
    return torch.log((weights * torch.exp(_log_normal(z, mu, log_sigma))).sum(1))


@mutant("mixture_log_prob")
def mixture_log_prob_missing_log_weights(z, logits, mu, log_sigma):
    return torch.logsumexp(_log_normal(z, mu, log_sigma), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_unnormalised_logits(z, logits, mu, log_sigma):
    return torch.logsumexp(_log_normal(z, mu, log_sigma) + logits, 1)


@mutant("mixture_log_prob")
def mixture_log_prob_weights_not_logged(z, logits, mu, log_sigma):
    return torch.logsumexp(_log_normal(z, mu, log_sigma) + torch.softmax(logits, 0), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_softmax_over_wrong_axis(z, logits, mu, log_sigma):
    # Normalises the weighted terms over the points instead of over the components.
    terms = _log_normal(z, mu, log_sigma) + logits
    return torch.logsumexp(torch.log_softmax(terms, dim=0), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_logsumexp_over_points(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    return torch.logsumexp(terms, 0).sum() + 0 * terms[:, 0]


@mutant("mixture_log_prob")
def mixture_log_prob_variance_as_std(z, logits, mu, log_sigma):
    q = Normal(mu, torch.exp(2 * log_sigma))
    comp = q.log_prob(z[:, None, :]).sum(-1)
    return torch.logsumexp(comp + torch.log_softmax(logits, 0), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_log_sigma_as_log_variance(z, logits, mu, log_sigma):
    comp = Normal(mu, torch.exp(0.5 * log_sigma)).log_prob(z[:, None, :]).sum(-1)
    return torch.logsumexp(comp + torch.log_softmax(logits, 0), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_averages_components(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    return torch.logsumexp(terms, 1) - math.log(mu.shape[0])


@mutant("mixture_log_prob")
def mixture_log_prob_product_of_components(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    return terms.sum(1)


@mutant("mixture_log_prob")
def mixture_log_prob_missing_two_pi(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    return torch.logsumexp(terms, 1) + 0.5 * math.log(2 * math.pi) * z.shape[1]


@mutant("mixture_log_prob")
def mixture_log_prob_max_instead_of_sum(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    return terms.max(1).values


@mutant("mixture_log_prob")
def mixture_log_prob_missing_log_sigma_term(z, logits, mu, log_sigma):
    diff = (z[:, None, :] - mu[None]) / torch.exp(log_sigma)[None]
    comp = (-0.5 * diff**2 - HALF_LOG_2PI).sum(-1)
    return torch.logsumexp(comp + torch.log_softmax(logits, 0), 1)


@mutant("mixture_log_prob")
def mixture_log_prob_detached_weights(z, logits, mu, log_sigma):
    log_w = torch.log_softmax(logits.detach(), 0)
    return torch.logsumexp(_log_normal(z, mu, log_sigma) + log_w, 1)


@mutant("mixture_log_prob")
def mixture_log_prob_max_shift_without_adding_back(z, logits, mu, log_sigma):
    terms = _log_normal(z, mu, log_sigma) + torch.log_softmax(logits, 0)
    top = terms.max(dim=1, keepdim=True).values
    return torch.log(torch.exp(terms - top).sum(1))


# --------------------------------------------------------------------------- mixture_score_surrogate


@variant("mixture_score_surrogate")
def mixture_score_surrogate_loop(log_q, log_p):
    weights = [float(p - q) for p, q in zip(log_p, log_q)]
    total, count = sum(weights), len(weights)
    terms = [q * (w - (total - w) / (count - 1)) for q, w in zip(log_q, weights)]
    return torch.stack(terms).mean()


@variant("mixture_score_surrogate")
def mixture_score_surrogate_rescaled_centering(log_q, log_p):
    # w_s - b_s = S / (S - 1) * (w_s - mean(w)).
    with torch.no_grad():
        weights = log_p - log_q
        count = weights.shape[0]
        centred = count / (count - 1) * (weights - weights.mean())
    return (log_q * centred).sum() / count


@variant("mixture_score_surrogate")
def mixture_score_surrogate_plus_elbo_value(log_q, log_p):
    # Adds the ELBO estimate as a constant, so the value reads as the ELBO: same gradient.
    weights = (log_p - log_q).detach()
    baseline = (weights.sum() - weights) / (len(weights) - 1)
    return (log_q * (weights - baseline)).mean() + weights.mean()


@mutant("mixture_score_surrogate")
def mixture_score_surrogate_no_baseline(log_q, log_p):
    return (log_q * (log_p - log_q).detach()).mean()


@mutant("mixture_score_surrogate")
def mixture_score_surrogate_baseline_includes_own_sample(log_q, log_p):
    weights = (log_p - log_q).detach()
    return (log_q * (weights - weights.mean())).mean()


@mutant("mixture_score_surrogate")
def mixture_score_surrogate_weights_not_detached(log_q, log_p):
    weights = log_p - log_q
    baseline = (weights.sum() - weights) / (len(weights) - 1)
    return (log_q * (weights - baseline)).mean()


@mutant("mixture_score_surrogate")
def mixture_score_surrogate_sum_not_mean(log_q, log_p):
    weights = (log_p - log_q).detach()
    baseline = (weights.sum() - weights) / (len(weights) - 1)
    return (log_q * (weights - baseline)).sum()


@mutant("mixture_score_surrogate")
def mixture_score_surrogate_negated(log_q, log_p):
    weights = (log_p - log_q).detach()
    baseline = (weights.sum() - weights) / (len(weights) - 1)
    return -(log_q * (weights - baseline)).mean()
