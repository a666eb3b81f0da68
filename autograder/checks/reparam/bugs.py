"""Known bugs of ``03_reparam`` and the diagnoses that name them: a sampler's distortions
(:func:`diagnose`, from its family's suspects), wrong gradients (:data:`GRAD_BUGS`), and the
compositions' (:data:`_GAMMA_SUSPECTS`, :data:`_T_SUSPECTS`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autograder.checks.reparam.closed_forms import _t_ratio, _unit_exponentials
from autograder.checks.reparam.probes import DTYPE
from autograder.checks.reparam.problems import _DIVIDED, Family, GradProblem, _suspect
from autograder.compare import (
    Catalogue,
    KnownBug,
    first_known_bug,
)


def show_noise(x: float) -> str:
    """A noise value, with u near 1 written as ``1 - 1e-12`` rather than rounded to 1."""
    return f"1 - {1 - x:.3g}" if 0.999 < x < 1 else f"{x:.4g}"


def show_pair(got: float, want: float) -> tuple[str, str]:
    """Both numbers with just enough digits to tell them apart."""
    a = b = ""
    for digits in (5, 8, 12, 17):
        a, b = f"{got:.{digits}g}", f"{want:.{digits}g}"
        if a != b:
            break
    return a, b


def _close(a: Tensor, b: Tensor, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    # Used to recognise known distortions (a factor S, a sign, one sample): those differ by
    # O(1), so 1e-6 only needs to exceed float64 round-off (about 1e-15 relative).
    return a.shape == b.shape and bool(
        torch.isclose(a.to(DTYPE), b.to(DTYPE), rtol=rtol, atol=atol).all()
    )


def diagnose(
    family: Family,
    z: Tensor,
    zstar: Tensor,
    zflip: Tensor,
    noise: Tensor,
    params: Sequence[Tensor],
) -> str:
    """A hint naming the bug when ``z`` matches a known wrong formula, else the family's hint.

    Args:
        z: The student's samples. zstar: the right samples. zflip: the right samples at the
        flipped noise (1 - u, or -eps). noise, params: the inputs.
    """
    if not torch.isfinite(z).all():
        return "z has NaN or infinite entries: is a log taken of a negative number or of 0? check the signs inside the logs"
    bug = first_known_bug(
        z, family.suspects, _finite_close, zstar, zflip, noise, *params
    )
    return family.hint if bug is None else bug.hint


def _finite_close(z: Tensor, candidate: Tensor) -> bool:
    return bool(torch.isfinite(candidate).all()) and _close(z, candidate)


#: Known wrong pathwise gradients, from the right ones ``w`` and the per-sample ones ``p``.
GRAD_BUGS: Catalogue = (
    (
        KnownBug(
            "reparam_grad/reparam_grad_sums_over_samples",
            "the gradient is {s} times too large: average over the {s} samples (mean), don't sum",
        ),
        lambda want, per_sample, s, d: [w * s for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_divides_by_numel",
            "the gradient is {d} times too small: divide by the number of samples S = {s}, not by S * D",
        ),
        lambda want, per_sample, s, d: [w / d for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_wrong_sign", "the gradient has the wrong sign"
        ),
        lambda want, per_sample, s, d: [-w for w in want],
    ),
    (
        KnownBug(
            "reparam_grad/reparam_grad_first_sample_only",
            "this is the gradient of the first sample only: average over all samples",
        ),
        lambda want, per_sample, s, d: [p[0] for p in per_sample],
    ),
)


def _all_close(got: Sequence[Tensor], candidate: Sequence[Tensor]) -> bool:
    return all(_close(g, c) for g, c in zip(got, candidate))


def grad_hint(
    problem: GradProblem, got: Sequence[Tensor], want: Sequence[Tensor]
) -> str:
    """Name the likely bug when the student's gradients are a known distortion of the right ones."""
    if all(bool((g.abs() < 1e-12).all()) for g in got):
        return "the gradients are zero: is z connected to params? don't detach, don't use .sample() or torch.no_grad()"
    s, d = problem.num_samples, problem.dim
    bug = first_known_bug(got, GRAD_BUGS, _all_close, want, problem.per_sample(), s, d)
    if bug is not None:
        return bug.text(s=s, d=d)
    return "call rsample(*params, noise) with the noise you were given (draw nothing new) and average the gradient of f over the samples"


_GAMMA_SUSPECTS: Catalogue = (
    _suspect(
        "gamma_rsample/gamma_rsample_mean_instead_of_sum",
        lambda u, rate: _unit_exponentials(u).mean(1) / rate,
        "you averaged the k exponentials: Gamma(k, rate) is their sum (sum over axis 1, don't take the mean)",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_law_equivalent_log_u",
        lambda u, rate: _unit_exponentials(1 - u).sum(1) / rate,
        "you used u_j where the exponential's inverse CDF has 1 - u_j: same law, but the SPEC fixes each "
        "exponential as F^-1(u_j), a different function of the noise",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_multiplies_by_rate",
        lambda u, rate: _unit_exponentials(u).sum(1) * rate,
        "you multiplied by rate: rate is an inverse scale (mean k / rate), so divide by it",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_first_column_only",
        lambda u, rate: _unit_exponentials(u)[:, 0] / rate,
        "only the first exponential is used: Gamma(k, rate) is the sum of all k of them (u[:, j] for j < k)",
    ),
    _suspect(
        "gamma_rsample/gamma_rsample_log_one_plus_u_changes_law",
        lambda u, rate: torch.log1p(u).sum(1) / rate,
        "you wrote log(1 + u): that is not the exponential's inverse CDF (and this changes the law)",
    ),
)


_T_SUSPECTS: Catalogue = (
    _suspect(
        "student_t_rsample/student_t_rsample_divides_by_sum_not_mean",
        lambda e, loc, scale: (
            loc + scale * _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).sum(1)))
        ),
        "you divided by the root of the sum of squares: the chi-squared must be divided by nu, "
        "t = eps_0 / sqrt(sum_j eps_j^2 / nu) (a mean of squares, not a sum)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_missing_sqrt",
        lambda e, loc, scale: loc + scale * _t_ratio(e, (e[:, 1:] ** 2).mean(1)),
        "the square root is missing: t = eps_0 / sqrt(V / nu), not eps_0 / (V / nu)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_wrong_dof_includes_eps0",
        lambda e, loc, scale: loc + scale * _t_ratio(e, torch.sqrt((e**2).mean(1))),
        "eps_0 is inside your chi-squared too: the numerator's normal must be independent of the "
        "denominator, so use eps[:, 1:] (nu = k - 1 degrees of freedom)",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_wrong_dof_divides_by_columns",
        lambda e, loc, scale: (
            loc + scale * _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).sum(1) / e.shape[1]))
        ),
        "wrong degrees of freedom: nu = eps.shape[1] - 1 (eps_0 is the numerator), divide the sum of "
        "squares by nu, not by eps.shape[1]",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_gaussian_only",
        lambda e, loc, scale: loc + scale * e[:, 0],
        "that is the normal sample: divide eps_0 by sqrt((1/nu) sum_j eps_j^2) to get Student's t",
    ),
    _suspect(
        "student_t_rsample/student_t_rsample_divides_by_scale",
        lambda e, loc, scale: (
            loc + _t_ratio(e, torch.sqrt((e[:, 1:] ** 2).mean(1))) / scale
        ),
        _DIVIDED,
    ),
)


def diagnose_composed(
    task: str, z: Tensor, noise: Tensor, params: Sequence[Tensor]
) -> str:
    """A hint naming the bug when ``z`` matches a known wrong formula, else a generic hint."""
    if not torch.isfinite(z).all():
        return "z has NaN or infinite entries: is a log taken of a negative number or of 0, or a square root of one?"
    suspects = _GAMMA_SUSPECTS if task == "gamma_rsample" else _T_SUSPECTS
    if task == "gamma_rsample" and noise.shape[1] == 1:
        # With k = 1 a mean is the sum and the first column is all of them: not a diagnosis.
        suspects = tuple(x for i, x in enumerate(suspects) if i not in (0, 3))
    bug = first_known_bug(z, suspects, _finite_close, noise, *params)
    if bug is not None:
        return bug.hint
    if task == "gamma_rsample":
        return "z should be the sum over j of the exponential samples F^-1(u[:, j]) with rate `rate`"
    return "z = loc + scale * t with t = eps[:, 0] / sqrt(sum_{j>=1} eps[:, j]^2 / nu), nu = eps.shape[1] - 1"
