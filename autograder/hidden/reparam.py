"""Hidden checks for ``03_reparam``: per-sample comparison with the reference on the same noise.

Values and pathwise derivatives (vector-Jacobian products with random cotangents) of every
sampler, and the gradients of ``reparam_grad``, against ``course_lib.reference.reparam`` in
float64. The SPEC fixes each sample as a function of its noise (z = F^-1(u), not merely a
sample with the right law), so per-sample comparison is legitimate.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from torch import Tensor

from autograder import probes
from autograder.checks.reparam import (
    COMPOSED_PARAMS,
    DTYPE,
    FAMILIES,
    IMPLICIT_RTOL,
    SAMPLER_SETTINGS,
    ComposedProblem,
    Family,
    GradProblem,
    ImplicitGammaCase,
    SamplerProblem,
    compare_grads,
    composed_problems,
    diagnose,
    diagnose_composed,
    gamma_implicit_probe,
    grad_problems,
    implicit_gamma_cases,
    reparam_grad_probe,
    rsample_probe,
    run_implicit,
    sample_derivatives,
    sampler_problems,
    show_noise,
    show_pair,
)
from autograder.core import Failure, check, expect
from autograder.hidden import reference_subject
from autograder.subject import Subject

#: The reference behind the same probes, in-process (trusted: no transport round trip).
_REFERENCE = reference_subject("reparam", trusted=True)


def _expect_derivative(name: str, got: Tensor, want: Tensor, tol: Tensor) -> None:
    """Fail on the worst coordinate where the weighted pathwise derivative misses ``tol``."""
    err = torch.where(
        torch.isfinite(got), (got - want).abs() - tol, torch.full_like(got, math.inf)
    )
    if (err > 0).any():
        d = int(torch.argmax(err))
        hint = (
            f"z does not depend on {name} through autograd (detached, torch.no_grad, .sample()?)"
            if bool((got.abs() < 1e-12).all())
            else f"check how {name} enters the formula"
        )
        got_g, want_g = show_pair(float(got[d]), float(want[d]))
        raise Failure(
            f"the pathwise derivative sum_s v_s dz_s/d{name}[{d}] (random weights v) is {got_g}, expected {want_g}: {hint}"
        )


def _register(family: Family) -> None:
    task, names, nname = family.task, family.param_names, family.noise_name

    @check(
        task,
        "values and pathwise derivatives match the reference on the same noise",
        points=0.5,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=sampler_problems(task))
    def matches_reference(subject: Subject, problem: SamplerProblem) -> None:
        params, noise, cotangent = (
            problem.tensors(),
            problem.noise(),
            problem.weights(salt=3),
        )
        args, wrt = (*params, noise), tuple(range(len(params)))
        got = subject.call(probes.vjp_probe, task, args, wrt, cotangent)
        want = _REFERENCE.call(probes.vjp_probe, task, args, wrt, cotangent)
        z, zstar = got["value"], want["value"].detach()
        expect(
            str(z.dtype) == "torch.float64",
            f"{task} returned {str(z.dtype).replace('torch.', '')} for float64 inputs: compute in float64",
        )
        z = z.to(DTYPE)
        ok = torch.isclose(z, zstar, rtol=1e-9, atol=1e-12)
        if not ok.all():
            s, d = (int(i) for i in torch.nonzero(~ok)[0])
            flipped = _REFERENCE.call(
                probes.invoke_probe, task, *params, family.flip(noise)
            )["value"]
            got_z, want_z = show_pair(float(z[s, d]), float(zstar[s, d]))
            raise Failure(
                f"z at {nname}={show_noise(float(noise[s, d]))} (sample {s}, column {d}) is {got_z}, expected {want_z}. "
                + diagnose(family, z, zstar, flipped, noise, params)
            )
        # Tolerance per coordinate from the size of the summed terms, so cancellation can't bite.
        per_sample = sample_derivatives(
            _REFERENCE.call(rsample_probe, task, params, noise, torch.ones_like(noise))
        )
        for name, g, w, pd in zip(names, got["grads"], want["grads"], per_sample):
            tol = 1e-8 * w.abs() + 1e-9 * (cotangent * pd.abs()).sum(0) + 1e-12
            _expect_derivative(name, g, w, tol)

    del matches_reference


for _family in FAMILIES.values():
    _register(_family)


@check(
    "reparam_grad",
    "matches the reference on the same noise (several samplers and integrands)",
    points=1.75,
)
@settings(SAMPLER_SETTINGS)
@given(problem=grad_problems())
def reparam_grad_matches_reference(subject: Subject, problem: GradProblem) -> None:
    args = (problem.f(), problem.rsample(), problem.tensors(), problem.noise())
    got = subject.call(reparam_grad_probe, *args)["grads"]
    want = _REFERENCE.call(reparam_grad_probe, *args)["grads"]
    compare_grads(problem, got, want, "the reference")


# --------------------------------------------------------------------------------------
# gamma_rsample, student_t_rsample: noise (S, k, D), samples (S, D).
# --------------------------------------------------------------------------------------


def _register_composed(task: str) -> None:
    @check(
        task,
        "values and pathwise derivatives match the reference on the same noise",
        points=1,
    )
    @settings(SAMPLER_SETTINGS)
    @given(problem=composed_problems(task))
    def matches_reference(subject: Subject, problem: ComposedProblem) -> None:
        params, noise = problem.tensors(), problem.noise()
        cotangent = problem.weights(salt=3)
        args, wrt = (*params, noise), tuple(range(len(params)))
        got = subject.call(probes.vjp_probe, task, args, wrt, cotangent)
        want = _REFERENCE.call(probes.vjp_probe, task, args, wrt, cotangent)
        z, zstar = got["value"], want["value"].detach()
        expect(
            str(z.dtype) == "torch.float64",
            f"{task} returned {str(z.dtype).replace('torch.', '')} for float64 inputs: compute in float64",
        )
        z = z.to(DTYPE)
        # Sums of k <= 6 logs or a ratio of float64 normals: 1e-9 relative is rounding only.
        ok = torch.isclose(z, zstar, rtol=1e-9, atol=1e-12)
        if not ok.all():
            s, d = (int(i) for i in torch.nonzero(~ok)[0])
            got_z, want_z = show_pair(float(z[s, d]), float(zstar[s, d]))
            raise Failure(
                f"z at sample {s}, column {d} ({problem.noise_name} of shape {tuple(noise.shape)}) is {got_z}, "
                f"expected {want_z}. " + diagnose_composed(task, z, noise, params)
            )
        # Each derivative is a sum over S samples of O(|z|) terms: tolerance from their size.
        size = (cotangent * zstar.abs()).sum(0) / params[-1].abs() + cotangent.sum(0)
        for name, g, w in zip(problem.param_names, got["grads"], want["grads"]):
            _expect_derivative(name, g, w, 1e-8 * w.abs() + 1e-10 * size)

    del matches_reference


for _task in COMPOSED_PARAMS:
    _register_composed(_task)


# ---------------------------------------------------------------------------- gamma_implicit_rsample


def _expect_shape_derivative(
    got: Tensor, want: Tensor, rtol: float, what: str, case: ImplicitGammaCase
) -> None:
    err = ((got - want).abs() / want.abs()).nan_to_num(nan=math.inf)
    worst = int(torch.argmax(err.reshape(-1)))
    if float(err.reshape(-1)[worst]) > rtol:
        s, d = divmod(worst, got.shape[1])
        raise Failure(
            f"dz/dshape of sample {s}, coordinate {d} is {float(got[s, d]):.6g}, {what} gives "
            f"{float(want[s, d]):.6g} on {case}: dz/dshape = -(dF/dshape)(z0; shape) / "
            "q(z0; shape), then the rate's division"
        )


@check(
    "gamma_implicit_rsample",
    "dz/dshape matches the reference at the grader's samples",
    points=1.5,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_matches_reference(subject: Subject, case: ImplicitGammaCase) -> None:
    _, d_shape, _ = run_implicit(subject, case)
    want = _REFERENCE.call(gamma_implicit_probe, *case.arrays())["d_shape"]
    assert want is not None
    # the reference is accurate to ~1e-9 relative (Richardson differences); any central or
    # forward difference of gammainc with relative step 1e-7..1e-3 is within 1e-6 of it
    _expect_shape_derivative(d_shape, want, IMPLICIT_RTOL, "the reference", case)


#: torch's Gamma.rsample differentiates its standard sampler with a fitted approximation of
#: the same identity; measured against Richardson differences over 16,000 samples with shapes
#: 0.3..15 its largest relative error was 6e-4, so 2e-3 accepts it and a correct student,
#: while a wrong formula is off by order 1.
TORCH_RTOL = 2e-3


def _torch_gamma(
    case: ImplicitGammaCase,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    shape, rate, _ = case.arrays()
    with probes.seeded(case.seed):
        per_sample = shape.expand(case.S, -1).clone().requires_grad_(True)
        z = torch.distributions.Gamma(per_sample, rate).rsample()
        (d_shape,) = torch.autograd.grad(z.sum(), per_sample)
    return shape, rate, (z * rate).detach(), d_shape


@check(
    "gamma_implicit_rsample",
    "dz/dshape agrees with torch.distributions.Gamma.rsample on torch's own samples",
    points=1,
)
@settings(SAMPLER_SETTINGS)
@given(case=implicit_gamma_cases())
def implicit_matches_torch(subject: Subject, case: ImplicitGammaCase) -> None:
    shape, rate, z0, want = _torch_gamma(case)
    out = subject.call(gamma_implicit_probe, shape, rate, z0)
    if out["d_shape"] is None:
        raise Failure(
            f"the samples carry no gradient to the shape ({case}): build them from the "
            "parameters you were given"
        )
    _expect_shape_derivative(
        out["d_shape"], want, TORCH_RTOL, "torch's Gamma.rsample", case
    )
