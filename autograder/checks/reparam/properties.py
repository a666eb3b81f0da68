"""The properties of ``03_reparam`` (public tier) and the judge-side helpers they call.

The sampler properties are registered per family (:func:`_register_sampler_checks`). Importing
this module registers them (:func:`autograder.core.check`); a property's text decides its
Hypothesis examples, so move it verbatim."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from hypothesis import Phase, given, settings
from torch import Tensor

from autograder.checks.reparam.bugs import (
    _close,
    diagnose,
    diagnose_composed,
    grad_hint,
    show_noise,
    show_pair,
)
from autograder.checks.reparam.closed_forms import (
    _erlang_cdf,
    _exp_cdf,
    _exp_sf,
    _t_standard,
)
from autograder.checks.reparam.probes import (
    DTYPE,
    SampleOutput,
    _fmt,
    composed_probe,
    gamma_implicit_probe,
    reparam_grad_probe,
    rsample_probe,
)
from autograder.checks.reparam.problems import (
    _GAMMA_TAIL_U,
    FAMILIES,
    ComposedProblem,
    Family,
    GradProblem,
    ImplicitGammaCase,
    SamplerProblem,
    _implicit_derivatives,
    _tail_noise,
    composed_problems,
    grad_problems,
    implicit_gamma_cases,
    sampler_problems,
)
from autograder.compare import (
    expect_no_graph,
    expect_no_side_effects,
    present,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING
from autograder.subject import Subject

#: Deterministic and cheap, but 45 properties share the ~10 s budget: each example already
#: checks S x D samples, so 15 examples per property suffice (the mutation report shows it).
#: No shrinking: a problem is sizes plus a seed, and the first example Hypothesis tries is
#: already the smallest (S=2, D=3, seed 0), where almost every bug shows; shrinking a seed
#: only swaps one noise draw for another, at ~2 s per failed property.
SAMPLER_SETTINGS = settings(
    GRADING, max_examples=15, phases=[Phase.explicit, Phase.generate]
)


def _at(family: Family, noise: Tensor, index: tuple[int, ...]) -> str:
    s, d = index
    return (
        f"{family.noise_name}={show_noise(float(noise[s, d]))} (sample {s}, column {d})"
    )


def sample_derivatives(out: SampleOutput) -> list[Tensor]:
    """The per-sample derivatives (present once the samples are known to be differentiable)."""
    return present(
        out["derivs"], "the samples are not differentiable in the parameters"
    )


def _check_shape_dtype(out: SampleOutput, noise: Tensor, name: str) -> Tensor:
    z = out["z"]
    expect(
        tuple(z.shape) == tuple(noise.shape),
        f"{name} returned shape {tuple(z.shape)} for params of shape ({noise.shape[1]},) and noise of shape "
        f"{tuple(noise.shape)}: return one sample per noise entry, shape {tuple(noise.shape)} (params broadcast over the samples)",
    )
    expect(
        out["dtype"] == "float64",
        f"{name} returned {out['dtype']} for float64 inputs: don't convert (no .float(), no numpy round trip, "
        "no torch.tensor(..., dtype=torch.float32))",
    )
    return z.to(DTYPE)


def _require_finite(family: Family, z: Tensor, noise: Tensor) -> None:
    bad = ~torch.isfinite(z)
    if bad.any():
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise Failure(
            f"z is {float(z[index])} at {_at(family, noise, index)}: a log of a negative number or of 0? check the signs inside the logs"
        )


def _worst(err: Tensor) -> tuple[int, ...]:
    return tuple(
        int(i) for i in np.unravel_index(int(torch.argmax(err)), tuple(err.shape))
    )


def _register_sampler_checks(family: Family) -> None:
    task, names = family.task, family.param_names
    nname = family.noise_name
    problems = sampler_problems(task)
    target = "u" if family.uniform else "eps"

    @check(
        task,
        f"samples invert the noise: {family.pivot_text} gives back {target}",
        points=0.5,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def inverts_noise(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        _require_finite(family, z, noise)
        with torch.no_grad():
            back = family.pivot(z, *params)
        err = torch.where(
            torch.isfinite(back), (back - noise).abs(), torch.full_like(back, math.inf)
        )
        tol = 1e-10 if family.uniform else 1e-9 * (1 + noise.abs())
        if (err > tol).any():
            index = _worst(err - tol)
            zstar, zflip = (
                family.inverse(noise, params),
                family.inverse(family.flip(noise), params),
            )
            what = "F(z)" if family.uniform else family.pivot_text
            got_back, want_back = show_pair(float(back[index]), float(noise[index]))
            got_z, want_z = show_pair(float(z[index]), float(zstar[index]))
            raise Failure(
                f"at {_at(family, noise, index)} z is {got_z}, so {what} = {got_back} "
                f"instead of {want_back}; the right sample is {want_z}. "
                + diagnose(family, z, zstar, zflip, noise, params)
            )

    @check(task, f"z increases with {nname}", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def monotone(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.sorted_noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        _require_finite(family, z, noise)
        step = z[1:] - z[:-1]
        if (step <= 0).any():
            s, d = _worst(-step)
            falls = "decreases" if bool((step <= 0).all()) else "is not monotone"
            raise Failure(
                f"z {falls} in {nname}: at column {d}, {nname}={float(noise[s, d]):.3g} gives z={float(z[s, d]):.4g} but "
                f"{nname}={float(noise[s + 1, d]):.3g} gives z={float(z[s + 1, d]):.4g}. The inverse CDF is increasing: "
                + (
                    "did you use 1 - u (same law, but the SPEC fixes z = F^-1(u)) or flip a sign? "
                    if family.uniform
                    else "check the signs. "
                )
                + family.hint
            )

    @check(
        task,
        "pathwise derivatives agree with the derivative computed from the CDF at fixed noise (Question 1 (b))",
        points=0.5,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def implicit_gradient(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        out = subject.call(rsample_probe, task, params, noise, problem.weights())
        z = _check_shape_dtype(out, noise, task)
        _require_finite(family, z, noise)
        expect(
            out["requires_grad"],
            f"the samples of {task} are not differentiable in {', '.join(names)}: did you detach, use .sample(), "
            "torch.no_grad() or numpy? Build z from the parameters with torch operations",
        )
        want = _implicit_derivatives(family, z, params)
        for name, got, exp in zip(names, out["derivs"], want):
            _compare_derivative(
                family,
                name,
                got,
                exp,
                noise,
                "-∂F/∂{p} / q" if family.uniform else "the identity",
            )

    @check(task, f"location-scale structure: {family.structure_text}", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def structure(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        z = _check_shape_dtype(
            subject.call(rsample_probe, task, params, noise), noise, task
        )
        standard = tuple(torch.full_like(p, v) for p, v in zip(params, family.standard))
        z0 = _check_shape_dtype(
            subject.call(rsample_probe, task, standard, noise), noise, task
        )
        _require_finite(family, z0, noise)
        _require_finite(family, z, noise)
        built = family.compose(z0, *params)
        if not _close(z, built, rtol=1e-9, atol=1e-12):
            err = torch.where(
                torch.isfinite(built),
                (z - built).abs() / (1 + built.abs()),
                torch.full_like(z, math.inf),
            )
            index = _worst(err)
            std = ", ".join(f"{n}={v:g}" for n, v in zip(names, family.standard))
            got_z, want_z = show_pair(float(z[index]), float(built[index]))
            raise Failure(
                f"{family.structure_text} fails at {_at(family, noise, index)}: z = {got_z} but the standard "
                f"sample ({std}) is {float(z0[index]):.6g}, which gives {want_z}. "
                "Each parameter should enter once, the same way for every sample: "
                + family.hint
            )

    @check(
        task,
        f"finite and accurate for {nname} in the far tails (float64)",
        points=0.125,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def tails(subject: Subject, problem: SamplerProblem) -> None:
        params = problem.tensors()
        noise = _tail_noise(family, problem.dim)
        weights = torch.ones_like(noise)
        out = subject.call(rsample_probe, task, params, noise, weights)
        z = _check_shape_dtype(out, noise, task)
        _require_finite(family, z, noise)
        if out["derivs"] is not None:
            for name, g in zip(names, out["derivs"]):
                bad = ~torch.isfinite(g)
                if bad.any():
                    index = _worst(bad.to(DTYPE))
                    raise Failure(
                        f"dz/d{name} is {float(g[index])} at {_at(family, noise, index)}: the sample is finite but its "
                        "gradient is not; avoid torch.where/clamp branches that produce inf or NaN"
                    )
        _tail_accuracy(family, z, noise, params)

    @check(task, "does not modify its inputs or leave .grad on them", points=0.125)
    @settings(SAMPLER_SETTINGS)
    @given(problem=problems)
    def no_side_effects(subject: Subject, problem: SamplerProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        out = subject.call(rsample_probe, task, params, noise)
        expect_no_side_effects(
            task,
            out,
            (*names, nname),
            mutated="e.g. u.clamp_(...), eps.mul_(...): work on new tensors (u.clamp(...), eps * sigma)",
            grad_left=_SAMPLER_BUILDS_Z,
        )

    del inverts_noise, monotone, implicit_gradient, structure, tails, no_side_effects


def _compare_derivative(
    family: Family, name: str, got: Tensor, want: Tensor, noise: Tensor, formula: str
) -> None:
    finite = torch.isfinite(want)
    if not finite.all():
        index = _worst((~finite).to(DTYPE))
        raise Failure(
            f"at {_at(family, noise, index)} your z lies where the density is 0 or undefined (outside the support, "
            f"e.g. a negative log-normal sample), so dz/d{name} cannot satisfy the identity: {family.hint}"
        )
    tol = 1e-7 * want.abs() + 1e-9
    err = torch.where(finite, (got - want).abs() - tol, torch.zeros_like(want))
    if not (err > 0).any():
        return
    index = _worst(err)
    if bool((got.abs() < 1e-12).all()):
        hint = f"z does not depend on {name} through autograd: did you detach {name}, use torch.no_grad(), .sample() or .item()?"
    elif _close(got, -want):
        hint = "the derivative has the wrong sign"
    else:
        hint = family.hint
    got_d, want_d = show_pair(float(got[index]), float(want[index]))
    raise Failure(
        f"dz/d{name} at {_at(family, noise, index)} is {got_d}, but {formula.format(p=name)} gives {want_d} at your z: {hint}"
    )


def _tail_accuracy(
    family: Family, z: Tensor, noise: Tensor, params: Sequence[Tensor]
) -> None:
    """Tail probabilities within 0.1% of u (or 1 - u): naive log(1 - u) passes at 1e-12, clamps do not."""
    with torch.no_grad():
        if family.uniform:
            assert family.lower is not None and family.upper is not None
            low = noise < 0.5
            got = torch.where(low, family.lower(z, *params), family.upper(z, *params))
            want = torch.where(low, noise, 1.0 - noise)
        else:
            got, want = family.pivot(z, *params), noise
    rel = torch.where(
        torch.isfinite(got),
        (got - want).abs() / want.abs(),
        torch.full_like(got, math.inf),
    )
    if (rel > 1e-3).any():
        index = _worst(rel)
        what = (
            ("F(z)" if bool(noise[index] < 0.5) else "1 - F(z)")
            if family.uniform
            else family.pivot_text
        )
        goal = float(want[index])
        raise Failure(
            f"at {_at(family, noise, index)} z is {float(z[index]):.6g}, so {what} = {float(got[index]):.4g} instead of "
            f"{goal:.4g} (off by more than 0.1%): the sample is not accurate in the tail. "
            + (
                "Don't clamp u or z, don't add a small constant inside a log, and compute in float64"
                if family.uniform
                else "Don't clamp eps or z, and don't go through a CDF and its inverse (Phi(eps) rounds to 1 for eps > 8)"
            )
        )


for _family in FAMILIES.values():
    _register_sampler_checks(_family)


def compare_grads(
    problem: GradProblem, got: Sequence[Tensor], want: Sequence[Tensor], source: str
) -> None:
    """Fail with the worst coordinate and a hint unless the gradients agree to ~1e-8."""
    scale = [(g.abs().mean(0) + 1.0) for g in problem.per_sample()]
    for name, g, w, sc in zip(problem.param_names, got, want, scale):
        tol = 1e-8 * w.abs() + 1e-10 * sc
        err = (g - w).abs() - tol
        if not torch.isfinite(g).all() or (err > 0).any():
            d = int(
                torch.argmax(
                    torch.where(torch.isfinite(g), err, torch.full_like(err, math.inf))
                )
            )
            got_g, want_g = show_pair(float(g[d]), float(w[d]))
            raise Failure(
                f"the gradient for {name}[{d}] is {got_g}, but {source} is {want_g}: "
                + grad_hint(problem, got, want)
            )


@check(
    "reparam_grad",
    "z = mu + sigma sinh(eps), f = sum((z - k)^2): equals (1/S) sum_s 2(z_s - k) dz_s/dparam",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems(samplers=("sinh_normal",), integrands=("quadratic",)))
def gaussian_quadratic_closed_form(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "any sampler and parameter count (Weibull scale, logistic loc/scale): matches per-sample closed forms",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems(samplers=("weibull", "logistic")))
def other_samplers_closed_form(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "a parameter rsample does not use gets a zero gradient tensor, not None",
    points=0.25,
)
@settings(SAMPLER_SETTINGS, max_examples=5)
@given(problem=grad_problems(samplers=("shift",)))
def unused_parameter_zero_gradient(subject: Subject, problem: GradProblem) -> None:
    out = subject.call(
        reparam_grad_probe,
        problem.f(),
        problem.rsample(),
        problem.tensors(),
        problem.noise(),
    )
    compare_grads(
        problem, out["grads"], problem.expected(), "the closed-form pathwise estimate"
    )


@check(
    "reparam_grad",
    "params and noise unmodified, no .grad or requires_grad left on params, same result when called twice",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems())
def no_side_effects(subject: Subject, problem: GradProblem) -> None:
    args = (problem.f(), problem.rsample(), problem.tensors(), problem.noise())
    names = problem.param_names
    for requires_grad in (False, True):
        out = subject.call(reparam_grad_probe, *args, 2, requires_grad)
        kind = "leaf params that require grad" if requires_grad else "plain tensors"
        expect_no_side_effects(
            "reparam_grad",
            out,
            (*names, "noise"),
            mutated="it must only compute gradients (no optimizer step, no in-place ops on the inputs)",
            grad_left=f"params given as {kind}: use torch.autograd.grad, or differentiate copies "
            "(p.detach().requires_grad_()) so the caller's params stay clean",
            flag_changed="the caller's tensors: differentiate copies, p.detach().requires_grad_()",
        )
        expect_no_graph(
            "reparam_grad",
            out["graph"],
            [f"the gradient for {n}" for n in names],
            inputs=f"params as {kind}",
        )
        for name, first, second in zip(names, out["grads"], present(out["again"], "")):
            expect(
                _close(first, second, rtol=1e-12, atol=1e-14),
                f"calling reparam_grad twice gave different gradients for {name} "
                f"({' then '.join(show_pair(float(first[0]), float(second[0])))}): gradients "
                "accumulate in .grad, or new noise is drawn; use the noise you are given",
            )


# Compositions with several noise draws per sample: gamma_rsample, student_t_rsample.
# Noise is (S, k, D) and samples are (S, D), so these tasks get their own problems, probe
# and properties; the judge still knows only closed forms (the Erlang CDF, the pivot of a
# location-scale family) and invariants (additivity, scale invariance), never the answer's code.


def _composed_z(out: SampleOutput, noise: Tensor, task: str) -> Tensor:
    z = out["z"]
    want = (noise.shape[0], noise.shape[2])
    expect(
        tuple(z.shape) == want,
        f"{task} returned shape {tuple(z.shape)} for noise of shape {tuple(noise.shape)} (S x k x D): return "
        f"one sample per row and column, shape {want}; combine the k draws along axis 1",
    )
    expect(
        out["dtype"] == "float64",
        f"{task} returned {out['dtype']} for float64 inputs: don't convert (no .float(), no numpy round trip)",
    )
    bad = ~torch.isfinite(z)
    if bad.any():
        s, d = (int(i) for i in torch.nonzero(bad)[0])
        raise Failure(
            f"z is {float(z[s, d])} at sample {s}, column {d}: a log of a negative number or of 0, "
            "or a division by 0? check the signs inside the logs"
        )
    return z.to(DTYPE)


def _first_bad(err: Tensor) -> tuple[int, int]:
    s, d = _worst(err)
    return int(s), int(d)


@check(
    "gamma_rsample",
    "one exponential (k = 1) inverts its CDF: 1 - exp(-rate z) = u, also in the far tails",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_single_exponential_inverts_cdf(
    subject: Subject, problem: ComposedProblem
) -> None:
    (rate,) = problem.tensors()
    bulk = problem.noise()[:, :1]
    tails = torch.tensor(_GAMMA_TAIL_U, dtype=DTYPE)[:, None, None].expand(
        len(_GAMMA_TAIL_U), 1, problem.dim
    )
    for noise, tail in ((bulk, False), (tails.clone(), True)):
        z = _composed_z(
            subject.call(composed_probe, "gamma_rsample", (rate,), noise),
            noise,
            "gamma_rsample",
        )
        u = noise[:, 0]
        low = u < 0.5
        with torch.no_grad():
            got = torch.where(low, _exp_cdf(z, rate), _exp_sf(z, rate))
        want = torch.where(low, u, 1.0 - u)
        # Bulk: F(z) = u to 1e-10 (float64 rounding of a log is ~1e-16 relative). Tails: the
        # tail probability within 0.1% (-log(1 - u) with u = 1e-12 loses ~1e-4 relative: allowed).
        err = (got - want).abs() / want if tail else (got - want).abs()
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        tol = 1e-3 if tail else 1e-10 / 0.5
        if (err > tol).any():
            s, d = _first_bad(err)
            what = "F(z)" if bool(low[s, d]) else "1 - F(z)"
            hint = diagnose_composed("gamma_rsample", z, noise, (rate,))
            if hint.startswith("z should") and (tail or float(err.max()) < 1e-5):
                hint = (
                    "the sample is not accurate in the tail"
                    if tail
                    else "z is slightly off"
                ) + ": don't clamp u or z, don't add a small constant inside a log"
            raise Failure(
                f"with k = 1 (u of shape {tuple(noise.shape)}), at u={show_noise(float(u[s, d]))} (sample {s}, column {d}) "
                f"z is {float(z[s, d]):.6g}, so {what} = {' instead of '.join(show_pair(float(got[s, d]), float(want[s, d])))}: {hint}"
            )


@check(
    "gamma_rsample",
    "composition: independent parts add up, z(u) = z(u[:, :1]) + z(u[:, 1:])",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_parts_add_up(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    whole = _composed_z(
        subject.call(composed_probe, "gamma_rsample", params, noise),
        noise,
        "gamma_rsample",
    )
    parts = [noise[:, :1].clone(), noise[:, 1:].clone()]
    first, rest = (
        _composed_z(
            subject.call(composed_probe, "gamma_rsample", params, p), p, "gamma_rsample"
        )
        for p in parts
    )
    built = first + rest
    # Sums of k <= 6 positive terms: agreement to 1e-12 relative is rounding only.
    if not _close(whole, built, rtol=1e-12, atol=1e-14):
        s, d = _first_bad((whole - built).abs() / (1 + built.abs()))
        raise Failure(
            f"at sample {s}, column {d}: z with all k = {problem.columns} columns of u is {float(whole[s, d]):.8g}, but "
            f"z from column 0 alone plus z from the other {problem.columns - 1} is {float(built[s, d]):.8g}. A Gamma(k) "
            "sample is a sum of k independent exponentials, so its parts must add up: "
            + diagnose_composed("gamma_rsample", whole, noise, params)
        )


@check(
    "gamma_rsample",
    "pathwise derivative in the rate agrees with the one computed from the CDF at fixed noise",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_implicit_gradient(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    out = subject.call(
        composed_probe, "gamma_rsample", params, noise, problem.weights()
    )
    z = _composed_z(out, noise, "gamma_rsample")
    expect(
        out["requires_grad"] and out["derivs"] is not None,
        "the samples of gamma_rsample are not differentiable in rate: did you detach, use .sample(), "
        "torch.no_grad() or numpy? Build z from rate with torch operations",
    )
    zleaf = z.detach().clone().requires_grad_(True)
    rate = params[0].expand_as(z).clone().requires_grad_(True)
    cdf = _erlang_cdf(zleaf, rate, problem.columns)
    dz, drate = torch.autograd.grad(cdf.sum(), [zleaf, rate])
    want = -drate / dz  # the Erlang CDF in closed form, differentiated by autograd
    got = out["derivs"][0]
    # Both sides are O(z / rate) computed in float64 (the identity's autograd has no
    # cancellation): 1e-7 relative is rounding with a wide margin.
    err = (got - want).abs() - (1e-7 * want.abs() + 1e-10)
    if (err > 0).any():
        s, d = _first_bad(err)
        if bool((got.abs() < 1e-12).all()):
            hint = "z does not depend on rate through autograd: did you detach rate or use .item()?"
        elif _close(got, -want):
            hint = "the derivative has the wrong sign"
        else:
            hint = (
                "rate is an inverse scale: each exponential is (something of u) / rate"
            )
        got_d, want_d = show_pair(float(got[s, d]), float(want[s, d]))
        raise Failure(
            f"dz/drate at sample {s}, column {d} is {got_d}, but -∂F/∂rate / q gives {want_d} at your z "
            f"(F the Gamma CDF with integer shape k = {problem.columns}): {hint}"
        )


@check(
    "gamma_rsample",
    "rate is an inverse scale: z(rate, u) = z(1, u) / rate",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_inverse_scale(subject: Subject, problem: ComposedProblem) -> None:
    (rate,), noise = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "gamma_rsample", (rate,), noise),
        noise,
        "gamma_rsample",
    )
    one = torch.ones_like(rate)
    z1 = _composed_z(
        subject.call(composed_probe, "gamma_rsample", (one,), noise),
        noise,
        "gamma_rsample",
    )
    if not _close(z, z1 / rate, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - z1 / rate).abs() / (1 + z.abs()))
        raise Failure(
            f"at sample {s}, column {d} z(rate={float(rate[d]):.3g}) is {float(z[s, d]):.6g} but z(rate=1) / rate is "
            f"{float(z1[s, d] / rate[d]):.6g}: rate must enter once, as a division of the whole sum"
            + (" (you multiplied by it)" if _close(z, z1 * rate) else "")
        )


@check("gamma_rsample", "z increases with every u[:, j]", points=0.125)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_monotone(subject: Subject, problem: ComposedProblem) -> None:
    params, noise = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "gamma_rsample", params, noise),
        noise,
        "gamma_rsample",
    )
    for j in range(problem.columns):
        higher = noise.clone()
        higher[:, j] = noise[:, j] + 0.5 * (1 - noise[:, j])
        z2 = _composed_z(
            subject.call(composed_probe, "gamma_rsample", params, higher),
            higher,
            "gamma_rsample",
        )
        if (z2 <= z).any():
            s, d = _first_bad((z - z2).to(DTYPE))
            raise Failure(
                f"raising u[{s}, {j}, {d}] from {float(noise[s, j, d]):.3g} to {float(higher[s, j, d]):.3g} moved z from "
                f"{float(z[s, d]):.6g} to {float(z2[s, d]):.6g}: each exponential F^-1(u_j) increases with u_j. "
                "Did you use u instead of 1 - u, or drop a sign?"
            )


@check(
    "gamma_rsample", "does not modify its inputs or leave .grad on them", points=0.125
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("gamma_rsample"))
def gamma_no_side_effects(subject: Subject, problem: ComposedProblem) -> None:
    out = subject.call(
        composed_probe, "gamma_rsample", problem.tensors(), problem.noise()
    )
    _no_composed_side_effects(out, "gamma_rsample", ("rate", "u"))


_SAMPLER_BUILDS_Z = "a sampler only builds z; don't call .backward() inside it"


def _no_composed_side_effects(
    out: SampleOutput, task: str, inputs: tuple[str, ...]
) -> None:
    expect_no_side_effects(
        task,
        out,
        inputs,
        mutated="e.g. u.clamp_(...), eps.pow_(2): work on new tensors",
        grad_left=_SAMPLER_BUILDS_Z,
    )


@check(
    "student_t_rsample",
    "standardised samples give back eps_0: (z - loc)/scale * sqrt(sum_{j>=1} eps_j^2 / nu) = eps_0",
    points=0.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_pivot(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, eps),
        eps,
        "student_t_rsample",
    )
    nu = problem.columns - 1
    with torch.no_grad():
        back = _t_standard(z, *params) * torch.sqrt((eps[:, 1:] ** 2).sum(1) / nu)
    # back is eps_0 up to float64 rounding of a few operations: 1e-9 (1 + |eps_0|).
    err = (back - eps[:, 0]).abs() - 1e-9 * (1 + eps[:, 0].abs())
    if (err > 0).any():
        s, d = _first_bad(err)
        got_b, want_b = show_pair(float(back[s, d]), float(eps[s, 0, d]))
        raise Failure(
            f"at sample {s}, column {d} (nu = {nu}), your z gives (z - loc)/scale * sqrt(sum_j eps_j^2 / nu) = {got_b} "
            f"instead of eps_0 = {want_b}. "
            + diagnose_composed("student_t_rsample", z, eps, params)
        )


@check(
    "student_t_rsample",
    "a ratio of normals: scaling all the noise, z(c * eps) = z(eps), changes nothing",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_scale_invariant(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, eps),
        eps,
        "student_t_rsample",
    )
    scaled = 2.5 * eps
    z2 = _composed_z(
        subject.call(composed_probe, "student_t_rsample", params, scaled),
        scaled,
        "student_t_rsample",
    )
    if not _close(z, z2, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - z2).abs() / (1 + z.abs()))
        raise Failure(
            f"multiplying every eps by 2.5 moved z[{s}, {d}] from {float(z[s, d]):.6g} to {float(z2[s, d]):.6g}: t is a "
            "normal divided by the root of a mean of squared normals, so a common factor cancels. Is the square "
            "root missing, or is eps_0 not divided by anything?"
        )


@check(
    "student_t_rsample",
    "pathwise derivatives satisfy the implicit-gradient identity of a location-scale family: dz/dloc = 1, dz/dscale = (z - loc)/scale",
    points=0.5,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_implicit_gradient(subject: Subject, problem: ComposedProblem) -> None:
    params, eps = problem.tensors(), problem.noise()
    out = subject.call(
        composed_probe, "student_t_rsample", params, eps, problem.weights()
    )
    z = _composed_z(out, eps, "student_t_rsample")
    expect(
        out["requires_grad"] and out["derivs"] is not None,
        "the samples of student_t_rsample are not differentiable in loc and scale: did you detach, use "
        ".sample(), torch.no_grad() or numpy?",
    )
    # F(z; loc, scale) = F_nu((z - loc)/scale): -∂λF/∂zF = -∂λP/∂zP with P the standardised z.
    zleaf = z.detach().clone().requires_grad_(True)
    leaves = [p.detach().expand_as(z).clone().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(_t_standard(zleaf, *leaves).sum(), [zleaf, *leaves])
    for name, got, g in zip(("loc", "scale"), out["derivs"], grads[1:]):
        want = -g / grads[0]
        err = (got - want).abs() - (1e-7 * want.abs() + 1e-10)
        if (err > 0).any():
            s, d = _first_bad(err)
            if bool((got.abs() < 1e-12).all()):
                hint = f"z does not depend on {name} through autograd: did you detach it or use .item()?"
            elif _close(got, -want):
                hint = "the derivative has the wrong sign"
            else:
                hint = "z = loc + scale * t, with t computed from eps alone"
            got_d, want_d = show_pair(float(got[s, d]), float(want[s, d]))
            raise Failure(
                f"dz/d{name} at sample {s}, column {d} is {got_d}, but the identity gives {want_d} at your z: {hint}"
            )


@check(
    "student_t_rsample",
    "location-scale structure: z(loc, scale, eps) = loc + scale * z(0, 1, eps)",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_structure(subject: Subject, problem: ComposedProblem) -> None:
    (loc, scale), eps = problem.tensors(), problem.noise()
    z = _composed_z(
        subject.call(composed_probe, "student_t_rsample", (loc, scale), eps),
        eps,
        "student_t_rsample",
    )
    standard = (torch.zeros_like(loc), torch.ones_like(scale))
    z0 = _composed_z(
        subject.call(composed_probe, "student_t_rsample", standard, eps),
        eps,
        "student_t_rsample",
    )
    built = loc + scale * z0
    if not _close(z, built, rtol=1e-9, atol=1e-12):
        s, d = _first_bad((z - built).abs() / (1 + built.abs()))
        raise Failure(
            f"at sample {s}, column {d} z is {float(z[s, d]):.6g} but loc + scale * z(0, 1, eps) is {float(built[s, d]):.6g}: "
            + diagnose_composed("student_t_rsample", z, eps, (loc, scale))
        )


@check(
    "student_t_rsample",
    "does not modify its inputs or leave .grad on them",
    points=0.25,
)
@settings(SAMPLER_SETTINGS)
@given(problem=composed_problems("student_t_rsample"))
def student_t_no_side_effects(subject: Subject, problem: ComposedProblem) -> None:
    out = subject.call(
        composed_probe, "student_t_rsample", problem.tensors(), problem.noise()
    )
    _no_composed_side_effects(out, "student_t_rsample", ("loc", "scale", "eps"))


# Implicit reparameterization of the Gamma in its (non-integer) shape. The grader passes the
# standard Gamma samples z0 in and reads the student's per-sample derivatives. The public
# checks state what the derivative must *do* (keep the CDF level F(z; shape) fixed), never how
# to compute it.


def run_implicit(
    subject: Subject, case: ImplicitGammaCase
) -> tuple[Tensor, Tensor, Tensor]:
    """The student's samples, dz/dshape and dz/drate per sample, after the shared checks."""
    shape, rate, z0 = case.arrays()
    out = subject.call(gamma_implicit_probe, shape, rate, z0)
    expect_no_side_effects(
        "gamma_implicit_rsample",
        out,
        ["shape", "rate", "z0"],
        mutated="z0 is the caller's noise: compute new tensors (no z0 /= rate)",
        grad_left="return the samples; the caller differentiates them",
    )
    d_shape, d_rate = out["d_shape"], out["d_rate"]
    if d_shape is None or d_rate is None:
        raise Failure(
            f"the samples carry no gradient to shape and rate ({case}): build them from the "
            "parameters you were given, without detaching them"
        )
    return out["value"], d_shape, d_rate


@check(
    "gamma_implicit_rsample",
    "returns z0 / rate with the scale derivative -z / rate",
    points=1,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_value_and_rate(subject: Subject, case: ImplicitGammaCase) -> None:
    _, rate, z0 = case.arrays()
    value, _, d_rate = run_implicit(subject, case)
    # both are one float64 division: 1e-12 relative is round-off with room to spare
    if not torch.allclose(value, z0 / rate, rtol=1e-12, atol=0.0):
        raise Failure(
            f"samples differ from z0 / rate on {case}: z0 ~ Gamma(shape, 1), and the rate "
            "is an inverse scale (Gamma(shape, rate) has mean shape / rate)"
        )
    want = -(z0 / rate) / rate
    if not torch.allclose(d_rate, want, rtol=1e-9, atol=1e-12):
        raise Failure(
            f"dz/drate is {_fmt(d_rate[0])} for the first sample, expected "
            f"{_fmt(want[0])} (-z / rate) on {case}: the rate should enter as a plain division"
        )


#: Relative step in the shape for the CDF-level check below.
IMPLICIT_STEP = 1e-4


#: Moving (shape, z) by (+-h, +-h dz/dshape) changes F by 2h (dF/dz dz/dshape + dF/dshape) +
#: O(h^3): relative to 2h |dF/dz dz/dshape| a correct derivative leaves ~h^2 ~ 1e-8 plus
#: gammainc's round-off (~1e-15) / (2h q |g|) < 1e-9 at the quantiles used; a derivative computed
#: by any finite difference with relative step 1e-7..1e-3 is within 1e-6. A wrong formula
#: (sign, no density, a wrong normaliser, no gradient) leaves residuals of order 1.
IMPLICIT_RTOL = 1e-5


@check(
    "gamma_implicit_rsample",
    "moving the shape by h and z by h dz/dshape keeps the CDF level F(z; shape) fixed",
    points=1.5,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_keeps_cdf_level(subject: Subject, case: ImplicitGammaCase) -> None:
    shape, rate, z0 = case.arrays()
    _, d_shape, _ = run_implicit(subject, case)
    dz0 = d_shape * rate  # derivative of the standard sample z0 = rate * z
    h = IMPLICIT_STEP * torch.clamp(shape, min=1.0)
    moved = torch.special.gammainc(shape + h, z0 + h * dz0) - torch.special.gammainc(
        shape - h, z0 - h * dz0
    )
    density = torch.exp(
        (shape - 1) * torch.log(z0) - z0 - torch.lgamma(shape)
    )  # the scale of a unit change: 2h q |g|, floored at 2h q
    scale = 2 * h * density * torch.clamp(dz0.abs(), min=1.0)
    residual = (moved.abs() / scale).nan_to_num(nan=float("inf"))
    worst = int(torch.argmax(residual.reshape(-1)))
    if float(residual.reshape(-1)[worst]) > IMPLICIT_RTOL:
        s, d = divmod(worst, z0.shape[1])
        raise Failure(
            f"sample {s}, coordinate {d} (shape {float(shape[d]):.3g}, z0 = {float(z0[s, d]):.4g}) "
            f"on {case}: your dz/dshape = {float(d_shape[s, d]):.4g} does not keep "
            f"u = F(z0; shape) fixed (the CDF moved by {float(moved[s, d]):.3g} for a step of "
            f"{float(h[d]):.1g}). Differentiate u = F(z(shape); shape) in the shape, as in "
            "Question 1 (b)"
        )
