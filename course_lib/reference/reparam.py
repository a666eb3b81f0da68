r"""Reference solutions for ``03_reparam``: the reparameterization (pathwise) estimator.

Every sampler writes :math:`z = t(\epsilon, \lambda)` with the noise passed in, so samples are
differentiable functions of the parameters: Gaussian and log-normal (composition) from
standard normal noise, and the inverse-CDF families from uniform noise :math:`u \in (0, 1)`.
Two compositions take several noise draws per sample (``(S, k, D)``): Gamma with an integer
shape as a sum of exponentials, and Student's t as a normal over the root of a chi-squared.

References:
    Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014);
    Mohamed, Rosca, Figurnov & Mnih (2020), "Monte Carlo Gradient Estimation in ML", §5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from course_lib._validate import check_params, check_tensor, per_sample
from course_lib.reference._autograd import fresh_leaves, mean_grads

__all__ = [
    "cauchy_rsample",
    "exponential_rsample",
    "gamma_implicit_rsample",
    "gamma_rsample",
    "gaussian_rsample",
    "gumbel_rsample",
    "laplace_rsample",
    "lognormal_rsample",
    "reparam_grad",
    "student_t_rsample",
]


def gaussian_rsample(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    r""":math:`z = \mu + e^{\log\sigma}\,\epsilon` with :math:`\epsilon \sim \mathcal{N}(0, I)`.

    Args:
        mu: Mean, shape ``(D,)`` (broadcast against ``eps``).
        log_sigma: Log standard deviation, shape ``(D,)``.
        eps: Standard normal noise, shape ``(S, D)``.

    Returns:
        Samples of shape ``(S, D)``, differentiable in ``mu`` and ``log_sigma``.
    """
    return mu + torch.exp(log_sigma) * eps


def exponential_rsample(rate: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of :math:`\mathrm{Exp}(\lambda)`: :math:`z = -\log(1 - u)/\lambda`.

    ``log1p`` keeps the result accurate for tiny ``u``.
    """
    return -torch.log1p(-u) / rate


def gumbel_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of the Gumbel (max) law: :math:`z = \mu - \beta \log(-\log u)`."""
    return loc - scale * torch.log(-torch.log(u))


def cauchy_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Inverse CDF of the Cauchy law: :math:`z = x_0 + \gamma \tan(\pi(u - \tfrac12))`."""
    return loc + scale * torch.tan(math.pi * (u - 0.5))


def laplace_rsample(loc: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    r"""Location-scale: :math:`z = \mu + b\,F_0^{-1}(u)` with the standard Laplace quantile.

    :math:`F_0^{-1}(u) = -\operatorname{sign}(u - \tfrac12)\log(1 - 2|u - \tfrac12|)`.
    """
    centered = u - 0.5
    return loc - scale * torch.sign(centered) * torch.log1p(-2.0 * centered.abs())


def lognormal_rsample(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    r"""Composition: :math:`z = \exp(\mu + e^{\log\sigma}\epsilon)`."""
    return torch.exp(gaussian_rsample(mu, log_sigma, eps))


def gamma_rsample(rate: Tensor, u: Tensor) -> Tensor:
    r"""Composition: :math:`\mathrm{Gamma}(k, \lambda)` for an integer shape as a sum of exponentials.

    If :math:`E_1, \dots, E_k` are independent :math:`\mathrm{Exp}(\lambda)`, their sum is
    :math:`\mathrm{Gamma}(k, \lambda)`; each :math:`E_j = -\log(1 - u_j)/\lambda` by the inverse CDF,
    so :math:`z = \sum_{j=1}^k -\log(1 - u_j) / \lambda` and :math:`\partial z/\partial\lambda = -z/\lambda`.
    (Non-integer shapes have no such sum: they need implicit reparameterization.)

    Args:
        rate: Positive rate :math:`\lambda`, shape ``(D,)``.
        u: Uniform noise in ``(0, 1)``, shape ``(S, k, D)``; the shape is ``k = u.shape[1]``.

    Returns:
        Samples of shape ``(S, D)``, differentiable in ``rate``.

    Raises:
        ValueError: if ``u`` is not three-dimensional.
    """
    if u.dim() != 3:
        raise ValueError(
            f"u must have shape (S, k, D) (k uniforms per sample), got {tuple(u.shape)}"
        )
    return -torch.log1p(-u).sum(dim=1) / rate


def student_t_rsample(loc: Tensor, scale: Tensor, eps: Tensor) -> Tensor:
    r"""Location-scale with a composed noise: Student's t with :math:`\nu = k - 1` degrees of freedom.

    With :math:`\epsilon_0, \dots, \epsilon_\nu` independent standard normals,
    :math:`V = \sum_{j \ge 1} \epsilon_j^2 \sim \chi^2_\nu` is independent of :math:`\epsilon_0`, and
    :math:`t = \epsilon_0 / \sqrt{V/\nu}` is standard Student's t; then :math:`z = \mu + s\,t`.

    Args:
        loc: Location :math:`\mu`, shape ``(D,)``.
        scale: Positive scale :math:`s`, shape ``(D,)``.
        eps: Standard normal noise, shape ``(S, \nu + 1, D)`` with :math:`\nu \ge 1`.

    Returns:
        Samples of shape ``(S, D)``, differentiable in ``loc`` and ``scale``.

    Raises:
        ValueError: if ``eps`` is not three-dimensional or has fewer than 2 columns.
    """
    if eps.dim() != 3 or eps.shape[1] < 2:
        raise ValueError(
            f"eps must have shape (S, nu + 1, D) with nu >= 1, got {tuple(eps.shape)}"
        )
    chi2_over_nu = (eps[:, 1:] ** 2).mean(dim=1)
    return loc + scale * eps[:, 0] / torch.sqrt(chi2_over_nu)


def reparam_grad(
    f: Callable[[Tensor], Tensor],
    rsample: Callable[..., Tensor],
    params: tuple[Tensor, ...],
    noise: Tensor,
) -> tuple[Tensor, ...]:
    r"""Pathwise estimate :math:`\frac1S \sum_s \nabla_\lambda f(t(\epsilon_s, \lambda))`.

    Args:
        f: ``f(z) -> (S,)``.
        rsample: ``rsample(*params, noise) -> z`` with ``S`` samples along the first axis.
        params: Parameter tensors; never modified, no ``.grad`` left on them.
        noise: The noise :math:`\epsilon_s` (or :math:`u_s`), ``S`` along the first axis.

    Returns:
        One gradient tensor per parameter, shaped like it.
    """
    params = check_params(params)
    check_tensor("noise", noise)
    leaves = fresh_leaves(params)
    samples = rsample(*leaves, noise)
    values = per_sample("f", f(samples), noise.shape[0])
    return mean_grads(leaves, noise.shape[0], summed=values)


#: Richardson-extrapolated central differences of the regularised incomplete gamma function in
#: its shape argument (torch's ``gammainc`` has no derivative there): with step ``h`` the
#: error of a central difference is c h^2 + O(h^4); (4 D(h/2) - D(h)) / 3 cancels the h^2 term.
#: At h = 1e-3 (relative to max(shape, 1)) truncation is ~1e-12 and the round-off of gammainc
#: (~1e-15 absolute) divided by h is ~1e-12: about 1e-9 relative on dF/dshape for the shapes
#: and quantiles the course uses (checked against h = 1e-2: agreement to 1e-5 or better).
_SHAPE_STEP = 1e-3


def _d_cdf_d_shape(shape: Tensor, x: Tensor) -> Tensor:
    def central(step: float) -> Tensor:
        h = step * torch.clamp(shape, min=1.0)
        upper = torch.special.gammainc(shape + h, x)
        lower = torch.special.gammainc(shape - h, x)
        return (upper - lower) / (2.0 * h)

    return (4.0 * central(_SHAPE_STEP / 2) - central(_SHAPE_STEP)) / 3.0


def gamma_implicit_rsample(shape: Tensor, rate: Tensor, z0: Tensor) -> Tensor:
    r"""Gamma(shape, rate) samples with implicit reparameterization in the shape.

    ``z0`` are standard Gamma(shape, 1) samples drawn without gradient (for a non-integer shape
    there is no closed-form inverse CDF). Holding the CDF level :math:`u = F(z_0; \alpha)` fixed,
    :math:`\partial z_0/\partial\alpha = -\partial_\alpha F(z_0; \alpha) / q(z_0; \alpha)` (Figurnov,
    Mohamed & Mnih 2018) with :math:`F(z; \alpha) = P(\alpha, z)` and
    :math:`\log q = (\alpha - 1)\log z - z - \log\Gamma(\alpha)`. The rate is a scale:
    :math:`z = z_0 / \beta`.

    Args:
        shape: Concentration :math:`\alpha > 0`, shape ``(D,)``.
        rate: Rate :math:`\beta > 0`, shape ``(D,)``.
        z0: Standard Gamma samples, shape ``(S, D)``, positive.

    Returns:
        ``(S, D)`` samples with value ``z0 / rate``, differentiable in ``shape`` (by the
        identity) and ``rate``.
    """
    shape, rate, z0 = (
        check_tensor(n, t) for n, t in (("shape", shape), ("rate", rate), ("z0", z0))
    )
    fixed_shape, x = shape.detach(), z0.detach()
    log_density = (fixed_shape - 1.0) * torch.log(x) - x - torch.lgamma(fixed_shape)
    dz_dshape = -_d_cdf_d_shape(fixed_shape, x) / torch.exp(log_density)
    # value z0, derivative dz_dshape in the shape: the identity enters only through the gradient
    standard = x + dz_dshape * (shape - fixed_shape)
    return standard / rate
