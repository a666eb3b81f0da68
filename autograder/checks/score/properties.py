"""The properties of ``02_score`` (public tier) and the judge-side helpers they call.

Importing this module registers the properties (:func:`autograder.core.check`); a property's
text decides its Hypothesis examples, so move it verbatim."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from autograder import compare, stats
from autograder.checks.score.bugs import (
    LOO_PART_BUGS,
    SFG_PART_BUGS,
    _score_hint,
    part_hint,
    ratio_hint,
)
from autograder.checks.score.closed_forms import (
    Expected,
    _autograd_scores,
    _normal,
    centred_moments,
    estimator_law,
    loo_variance,
    plain_moments,
    tabulated_estimate,
    tabulated_scores,
)
from autograder.checks.score.probes import (
    BaselineOutput,
    CosineCost,
    LinearCombination,
    TableCost,
    estimator_probe,
    gaussian_score_probe,
    optimal_baseline_probe,
    repeat_estimator_probe,
)
from autograder.checks.score.problems import (
    PUBLIC_SHAPE_FAMILIES,
    TABULATED_SCORES,
    BaselineCase,
    Built,
    Case,
    EnumerationCase,
    GaussianScoreCase,
    _signed,
    baseline_cases,
    cases,
    gaussian_score_cases,
    stat_case,
    tabulated_cases,
)
from autograder.compare import (
    Catalogue,
    as_numpy,
    assert_close,
    expect_no_graph,
    expect_no_side_effects,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING, STATISTICAL
from autograder.strategies import seeds
from autograder.subject import Subject

#: Float64 estimators on given samples: round-off of these S-term averages is about 1e-13
#: relative, so 1e-6 admits any algebraic form (torch.distributions, a loop, a surrogate);
#: the known wrong variants differ by factors such as 1/S, -1, 1/D or by whole terms.
TIGHT = {"rtol": 1e-6}


#: Statistical properties run a fixed, small number of examples (their alpha is a union bound).
STAT_EXAMPLES = 3


STAT = settings(STATISTICAL, max_examples=STAT_EXAMPLES)


#: Deterministic properties: one exact comparison per example, so 20 examples (12 when an
#: example makes several calls) already see every family and size; keeps the suite near 10 s.
SOME = settings(GRADING, max_examples=20)


FEW = settings(GRADING, max_examples=12)


#: Draws per unbiasedness test (raised to 100·skew² when the estimator is skewed). Over 200
#: seeds the smallest |bias|/sd of a "score and f on different samples" bug is 0.148, i.e.
#: 9.4 standard errors at 4,000 draws against a threshold of 5.5: caught with probability
#: > 1 - 1e-4 on the worst seed. A per-sample Python loop still runs in a few seconds.
STAT_DRAWS = 4_000


_COPIES = (
    "work on copies, p.detach().clone().requires_grad_(True), and use torch.autograd.grad "
    "instead of .backward()"
)
#: :func:`autograder.compare.expect_untouched` on the caller's ``(*params, z)``: a call
#: passes the family's parameter names (``built.names``).
expect_untouched = partial(
    compare.expect_untouched,
    then=("z",),
    mutated="work on copies, never change your inputs in place",
    grad_left=_COPIES,
    flag_changed=_COPIES,
)


def compare_gradients(
    grads: list[Tensor],
    expected: Expected,
    built: Built,
    case: Case,
    name: str,
    hint: str,
    part_bugs: Catalogue = (),
) -> None:
    """Fail with the most specific hint when ``grads`` differ from the exact estimate."""
    for g, p, pname in zip(grads, built.params, built.names):
        if tuple(g.shape) != tuple(p.shape):
            raise Failure(
                f"the gradient for {pname} has shape {tuple(g.shape)}, expected {tuple(p.shape)} (shaped like "
                f"the parameter): did you forget to average over the samples, or sum over the wrong axis?"
            )
    got = [as_numpy(g, "gradient") for g in grads]
    want = [w.numpy() for w in expected.grads]
    atol = 1e-9 * (1.0 + expected.scale)
    if all(np.allclose(g, w, rtol=TIGHT["rtol"], atol=atol) for g, w in zip(got, want)):
        return
    specific = (
        part_hint(got, expected.parts, part_bugs)
        or ratio_hint(got, want, case.S, case.D)
        or hint
    )
    for g_np, w_np, pname in zip(got, want, built.names):
        assert_close(
            g_np,
            w_np,
            f"{name}'s gradient for {pname} on {case!r}",
            rtol=TIGHT["rtol"],
            atol=atol,
            hint=specific,
        )


def compare_scores(
    value: tuple[Tensor, ...],
    want: tuple[Tensor, Tensor],
    z: Tensor,
    mu: Tensor,
    log_sigma: Tensor,
) -> None:
    """Shapes first, then values, with the most specific hint."""
    S, D = z.shape
    for v, what in zip(value, ("d_mu", "d_log_sigma")):
        if tuple(v.shape) != (S, D):
            raise Failure(
                f"{what} has shape {tuple(v.shape)}, expected (S, D) = ({S}, {D}): one score per sample and "
                "dimension; do not average over samples or squeeze axes"
            )
    got = tuple(as_numpy(v, "score") for v in value)
    if all(np.allclose(g, w.numpy(), rtol=1e-6, atol=1e-9) for g, w in zip(got, want)):
        return
    hint = _score_hint(got, z, mu, log_sigma)
    for g, w, what in zip(got, want, ("d_mu", "d_log_sigma")):
        assert_close(g, w, what, rtol=1e-6, atol=1e-9, hint=hint)


@check(
    "gaussian_score",
    "matches (z - mu)/sigma^2 and ((z - mu)/sigma)^2 - 1 per sample",
    points=1,
)
@settings(SOME)
@given(case=st.sampled_from(TABULATED_SCORES))
def gaussian_score_closed_form(subject: Subject, case: GaussianScoreCase) -> None:
    z, mu, log_sigma = case.arrays()
    out = subject.call(gaussian_score_probe, z, mu, log_sigma)
    compare_scores(out["value"], tabulated_scores(case), z, mu, log_sigma)


@check(
    "gaussian_score",
    "agrees with autograd of Normal.log_prob and leaves its inputs untouched",
    points=1,
)
@settings(SOME)
@given(case=gaussian_score_cases(), requires_grad=st.booleans())
def gaussian_score_autograd(
    subject: Subject, case: GaussianScoreCase, requires_grad: bool
) -> None:
    z, mu, log_sigma = case.arrays()
    out = subject.call(gaussian_score_probe, z, mu, log_sigma, requires_grad)
    expect_no_side_effects(
        "gaussian_score",
        out,
        ("z", "mu", "log_sigma"),
        mutated="(z -= mu?): compute new tensors instead",
        grad_left="compute the score by hand, no .backward()",
    )
    if not requires_grad:
        # From plain inputs a graph can only be one the function built itself (autograd with
        # create_graph=True). From leaves that require grad, a by-hand score that stays
        # differentiable in mu is allowed: it is a function of mu, not a leaked surrogate.
        expect_no_graph(
            "gaussian_score",
            out["graph"],
            ("d_mu", "d_log_sigma"),
            inputs="plain tensors",
            advice="compute the score by hand, (z - mu) / sigma^2 and ((z - mu) / sigma)^2 - 1, "
            "without autograd",
        )
    compare_scores(
        out["value"], _autograd_scores(_normal, z, mu, log_sigma), z, mu, log_sigma
    )


def _side_effects_and_shapes(
    subject: Subject, name: str, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    built = case.build()
    z = None if own_samples else built.z
    out = subject.call(
        estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        case.S,
        z,
        case.seed,
        requires_grad,
    )
    expect_untouched(out, name, built.names)
    expect_no_graph(
        name,
        out["graph"],
        [f"the gradient for {n}" for n in built.names],
        inputs="params as leaves that require grad"
        if requires_grad
        else "params as plain tensors",
    )
    for g, p, pname in zip(out["grads"], built.params, built.names):
        expect(
            tuple(g.shape) == tuple(p.shape),
            f"the gradient for {pname} has shape {tuple(g.shape)}; it must be shaped like the parameter, {tuple(p.shape)}",
        )
        expect(
            bool(torch.isfinite(g).all()),
            f"the gradient for {pname} contains NaN or infinity",
        )


@check(
    "score_function_grad",
    "returns one gradient per parameter, shaped like it, and leaves params untouched",
    points=0.5,
)
@settings(SOME)
@given(
    case=cases(PUBLIC_SHAPE_FAMILIES),
    requires_grad=st.booleans(),
    own_samples=st.booleans(),
)
def sfg_shapes_and_side_effects(
    subject: Subject, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    _side_effects_and_shapes(
        subject, "score_function_grad", case, requires_grad, own_samples
    )


@check(
    "score_function_grad_loo",
    "returns one gradient per parameter, shaped like it, and leaves params untouched",
    points=0.5,
)
@settings(SOME)
@given(
    case=cases(PUBLIC_SHAPE_FAMILIES),
    requires_grad=st.booleans(),
    own_samples=st.booleans(),
)
def loo_shapes_and_side_effects(
    subject: Subject, case: Case, requires_grad: bool, own_samples: bool
) -> None:
    _side_effects_and_shapes(
        subject, "score_function_grad_loo", case, requires_grad, own_samples
    )


def _exact_on_given_samples(subject: Subject, name: str, case: Case, hint: str) -> None:
    built = case.build()
    loo = name.endswith("loo")
    out = subject.call(
        estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        case.S,
        built.z,
        case.seed,
    )
    compare_gradients(
        out["grads"],
        tabulated_estimate(case, loo),
        built,
        case,
        name,
        hint,
        LOO_PART_BUGS if loo else SFG_PART_BUGS,
    )


@check(
    "score_function_grad",
    "matches the average of f(z_s) grad log q(z_s) on given Gaussian samples",
    points=1,
)
@settings(SOME)
@given(case=tabulated_cases(("gaussian", "gaussian_matrix")))
def sfg_gaussian_closed_form(subject: Subject, case: Case) -> None:
    _exact_on_given_samples(
        subject,
        "score_function_grad",
        case,
        "with z given, use exactly those samples: (1/S) sum_s f(z_s) grad log q(z_s), with log q(z_s) summed "
        "over every axis but the sample axis",
    )


@check(
    "score_function_grad",
    "is exact on given samples when f depends on the parameters too",
    points=1,
)
@settings(SOME)
@given(case=tabulated_cases(("gaussian_f_theta",)))
def sfg_includes_grad_f(subject: Subject, case: Case) -> None:
    _exact_on_given_samples(
        subject,
        "score_function_grad",
        case,
        "the estimator is (1/S) sum_s [f(z_s) grad log q(z_s) + grad f(z_s)], f detached in the first term",
    )


@check(
    "score_function_grad",
    "is exact for Bernoulli and categorical q when z enumerates the support",
    points=1,
)
@settings(SOME)
@given(
    case=st.builds(
        EnumerationCase,
        st.sampled_from(("bernoulli", "categorical")),
        st.integers(2, 4),
        seeds(),
    )
)
def sfg_exact_by_enumeration(subject: Subject, case: EnumerationCase) -> None:
    built, exact = case.build()
    S = built.z.shape[0]
    out = subject.call(
        estimator_probe,
        "score_function_grad",
        built.f,
        built.make_q,
        built.params,
        S,
        built.z,
        case.seed,
    )
    (got,) = out["grads"]
    expect(
        tuple(got.shape) == tuple(exact.shape),
        f"the gradient for logits has shape {tuple(got.shape)}, expected {tuple(exact.shape)}",
    )
    hint = ratio_hint([as_numpy(got, "gradient")], [exact.numpy()], S, case.D) or (
        f"here z holds every point x of the support m_x times (S = {S}) and f(x) = f0(x) q(x) S / m_x, so "
        "(1/S) sum_s f(z_s) grad log q(z_s) is exactly grad sum_x q(x) f0(x): use log_prob (not prob), sum it "
        "over the coordinates of one sample, and average over the S samples"
    )
    assert_close(
        got,
        exact,
        "the gradient for logits",
        rtol=1e-6,
        atol=1e-9 * (1 + float(exact.abs().max())),
        hint=hint,
    )


@check("score_function_grad", "is linear in f on fixed samples", points=0.5)
@settings(FEW)
@given(
    case=cases(("gaussian_f_theta", "bernoulli", "categorical")),
    a=st.floats(-3, 3).filter(lambda a: abs(a) > 0.2 and abs(a - 1) > 0.2),
    b=st.floats(0.3, 3),
)
def sfg_linear_in_f(subject: Subject, case: Case, a: float, b: float) -> None:
    built = case.build()
    gen = torch.Generator().manual_seed(case.seed + 1)
    if case.family == "gaussian_f_theta":
        other: Any = CosineCost(
            _signed(gen, (case.D,), 0.5, 1.5), _signed(gen, (case.D,), 0.5, 2.0)
        )
    else:
        other = TableCost(
            _signed(gen, built.f.values.shape, 0.5, 3.0),
            binary=case.family == "bernoulli",
        )
    calls = [
        subject.call(
            estimator_probe,
            "score_function_grad",
            f,
            built.make_q,
            built.params,
            case.S,
            built.z,
            case.seed,
        )["grads"]
        for f in (built.f, other, LinearCombination((built.f, other), (a, b)))
    ]
    for g1, g2, g12, pname in zip(*calls, built.names):
        want = a * g1.to(torch.float64) + b * g2.to(torch.float64)
        scale = float((a * g1).abs().max() + (b * g2).abs().max())
        assert_close(
            g12,
            want,
            f"the gradient for {pname} with f = a·f1 + b·f2 (a={a:.3g}, b={b:.3g})",
            rtol=1e-6,
            atol=1e-9 * (1 + scale),
            hint="for fixed samples the estimate must be linear in f: do not normalise f (by its std, say), "
            "square it, or let it change which samples are used",
        )


@check(
    "score_function_grad_loo",
    "equals the plain estimate minus the leave-one-out baseline term on given samples",
    points=1,
)
@settings(FEW)
@given(sizes=tabulated_cases(("every",)))
def loo_closed_form(subject: Subject, sizes: Case) -> None:
    for family in ("gaussian", "gaussian_f_theta", "bernoulli", "categorical"):
        _exact_on_given_samples(
            subject,
            "score_function_grad_loo",
            replace(sizes, family=family),
            "with z given: (1/S) sum_s [(f_s - b_s) grad log q(z_s) + grad f(z_s)] with "
            "b_s = (sum_j f_j - f_s)/(S-1), f and b detached in the score term",
        )


@check(
    "score_function_grad_loo",
    "does not change when a constant is added to f (fixed samples)",
    points=0.5,
)
@settings(FEW)
@given(
    case=tabulated_cases(("gaussian", "gaussian_f_theta", "bernoulli", "categorical")),
    shift=st.floats(5, 50),
    negative=st.booleans(),
)
def loo_shift_invariant(
    subject: Subject, case: Case, shift: float, negative: bool
) -> None:
    c = -shift if negative else shift
    built = case.build()
    shifted = LinearCombination((built.f,), (1.0,), c)
    base, moved = (
        subject.call(
            estimator_probe,
            "score_function_grad_loo",
            f,
            built.make_q,
            built.params,
            case.S,
            built.z,
            case.seed,
        )["grads"]
        for f in (built.f, shifted)
    )
    expected = tabulated_estimate(case, loo=True)
    for g0, g1, pname in zip(base, moved, built.names):
        tol = 1e-9 * (1 + expected.scale + abs(c) * float(g0.abs().max() + 1))
        assert_close(
            g1,
            g0,
            f"the gradient for {pname} after f -> f + {c:.3g}",
            rtol=1e-6,
            atol=tol,
            hint="the leave-one-out baseline absorbs any constant: (f_s + c) - (b_s + c) = f_s - b_s. If it moved "
            "by c·mean grad log q, no baseline is subtracted; by c/S or c/(S-1), the baseline divides by the wrong count",
        )


#: Calls of the leave-one-out estimator with num_samples=2 in the small-sample test below.
#: With S = 2 a baseline that includes f_s shrinks the expected estimate by a fixed fraction;
#: on one Bernoulli bit that bias is at least 0.328 standard deviations of one call (60
#: seeds, median 0.43), so 1,000 calls put it 10.4 standard errors away against a threshold
#: of 5.5: missed with probability below 1e-6 on the worst seed seen.
SMALL_S_CALLS = 1_000


def _unbiased_with_two_samples(
    subject: Subject, name: str, seed: int, alpha: float, offset: float
) -> None:
    """Mean of many S = 2 estimates on one Bernoulli bit against the exact gradient.

    Each call's estimate is a scaled Bernoulli((z_1 - z_2)^2 = 1) variable, its variance the
    exact leave-one-out variance; the number of calls is at least 100 skew^2 (the CLT rule of
    :func:`autograder.stats.mean_close`), so the false-failure probability is at most ``alpha``.
    """
    case = Case("bernoulli", S=0, D=1, seed=seed)
    law = estimator_law(case, offset)
    built = case.build(offset)
    p = float(torch.sigmoid(built.params[0]).reshape(-1)[0])
    q = 2.0 * p * (1.0 - p)  # P(z_1 != z_2)
    skew = abs(1.0 - 2.0 * q) / math.sqrt(q * (1.0 - q))
    calls = max(SMALL_S_CALLS, math.ceil(100 * skew**2))
    runs = subject.call(
        repeat_estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        2,
        calls,
        seed,
    )
    got = np.concatenate([as_numpy(r, "gradient").mean(axis=0).ravel() for r in runs])
    expect(
        got.shape == law.truth.shape,
        f"{name} returned {got.size} gradient entries, expected {law.truth.size}",
    )
    stats.mean_close(
        got,
        law.truth,
        np.sqrt(loo_variance(law, 2)),
        calls,
        alpha=alpha,
        what=f"{name}'s estimate with num_samples=2 ({case!r}, z=None)",
        hint="with few samples a baseline must leave sample s out: b_s = (sum_j f_j - f_s)/(S-1) "
        "uses the other samples only, so it is independent of z_s",
    )


def _unbiased(
    subject: Subject, name: str, seed: int, alpha_per_call: float, offset: float
) -> None:
    loo = name.endswith("loo")
    if loo:
        _unbiased_with_two_samples(subject, name, seed, alpha_per_call, offset)
    for family in ("gaussian", "bernoulli"):
        case = stat_case(family, seed)
        law = estimator_law(case, offset)
        _, var, skew, _ = plain_moments(law)
        if loo:
            skew = np.maximum(skew, centred_moments(law)[2])
        n = max(STAT_DRAWS, math.ceil(100 * float(skew.max()) ** 2))
        std = np.sqrt(loo_variance(law, n) * n) if loo else np.sqrt(var)
        built = case.build(offset)
        out = subject.call(
            estimator_probe, name, built.f, built.make_q, built.params, n, None, seed
        )
        got = np.concatenate([as_numpy(g, "gradient").ravel() for g in out["grads"]])
        expect(
            got.shape == law.truth.shape,
            f"{name} returned {got.size} gradient entries, expected {law.truth.size}",
        )
        ratio = got / law.truth
        if np.all(np.abs(ratio - 2) < 0.25):
            hint = "it is about twice the exact gradient: with rsample, f(z) carries a pathwise gradient on top of the score term; draw with q.sample()"
        elif np.all(np.abs(got) < 0.2 * np.abs(law.truth)):
            hint = "it is close to 0: are f and log q evaluated on the same samples?"
        else:
            hint = (
                f"when z is None, draw num_samples = {n} independent samples once with q.sample((num_samples,)) "
                "(not one sample repeated), use the same samples for f and log q, and average over all of them"
            )
        stats.mean_close(
            got,
            law.truth,
            std,
            n,
            alpha=alpha_per_call,
            what=f"{name}'s estimate ({case!r}, z=None)",
            hint=hint,
        )


ALPHA = 1e-6


@check(
    "score_function_grad",
    "is unbiased when it draws its own samples",
    points=0.5,
    alpha=ALPHA,
)
@STAT
@given(seed=seeds())
def sfg_unbiased(subject: Subject, seed: int) -> None:
    """z-test at n >= 4,000 draws (n >= 100·skew²) with the exact per-sample variance, two families;
    false-failure probability <= ALPHA (Bonferroni over examples, families and coordinates)."""
    _unbiased(
        subject, "score_function_grad", seed, ALPHA / (STAT_EXAMPLES * 2), offset=0.0
    )


@check(
    "score_function_grad_loo",
    "is unbiased when it draws its own samples",
    points=0.5,
    alpha=ALPHA,
)
@STAT
@given(seed=seeds())
def loo_unbiased(subject: Subject, seed: int) -> None:
    """As for the plain estimator, with the exact leave-one-out variance and f shifted by 3,
    plus 1,000 calls with num_samples=2 (where a baseline that includes f_s is visibly
    biased); false-failure probability <= ALPHA (Bonferroni over examples and the 3 tests)."""
    _unbiased(
        subject,
        "score_function_grad_loo",
        seed,
        ALPHA / (STAT_EXAMPLES * 3),
        offset=3.0,
    )


# optimal_baseline: the variance-minimising constant baseline per parameter coordinate. The
# grader passes the values f(z_s) and the per-sample scores in, so every call is exact in
# float64. The public checks state what the baseline *is* (the minimiser of the sample variance
# objective), never a formula for it.


def expect_baseline_shapes(
    out: BaselineOutput, f_values: Tensor, scores: tuple[Tensor, ...]
) -> None:
    """One baseline per parameter, shaped like it; the inputs untouched."""
    names = ["f_values", *(f"scores[{i}]" for i in range(len(scores)))]
    expect_no_side_effects(
        "optimal_baseline",
        out,
        names,
        mutated="work on copies (no in-place square or subtraction on the inputs)",
    )
    for index, (b, score) in enumerate(zip(out["value"], scores)):
        if tuple(b.shape) != tuple(score.shape[1:]):
            raise Failure(
                f"baseline {index} has shape {tuple(b.shape)}, expected the parameter's shape "
                f"{tuple(score.shape[1:])}: one baseline per coordinate, no sample axis"
            )


@check(
    "optimal_baseline",
    "one baseline per parameter coordinate, inputs untouched",
    points=0.5,
)
@settings(FEW)
@given(case=baseline_cases())
def baseline_shapes_and_side_effects(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    out = subject.call(optimal_baseline_probe, f_values, scores)
    expect_baseline_shapes(out, f_values, scores)


#: The first-order condition in float64: each residual is an S-term sum (S <= 9) of products of
#: order |f| s^2, so round-off is below 1e-14 of the scale sum_s (|f_s| + |b|) s^2; 1e-9 admits
#: any algebraic form, while a wrong weighting leaves residuals of order the scale itself.
STATIONARY_RTOL = 1e-9


@check(
    "optimal_baseline",
    "minimises the sample variance of (f - b) s_i for every coordinate i",
    points=1,
)
@settings(SOME)
@given(case=baseline_cases())
def baseline_is_stationary(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    out = subject.call(optimal_baseline_probe, f_values, scores)
    expect_baseline_shapes(out, f_values, scores)
    for index, (b, score) in enumerate(zip(out["value"], scores)):
        # coordinates flattened: column i holds s_i(z_s) for every sample s
        squared = score.reshape(case.S, -1) ** 2
        centred = f_values[:, None] - b.reshape(1, -1)
        # d/db of (1/S) sum_s (f_s - b)^2 s_is^2 is -(2/S) sum_s (f_s - b) s_is^2
        residual = (centred * squared).sum(dim=0)
        scale = ((f_values.abs()[:, None] + b.abs().reshape(1, -1)) * squared).sum(
            dim=0
        )
        worst = int(torch.argmax((residual.abs() / scale).reshape(-1)))
        ratio = float((residual.abs() / scale).reshape(-1)[worst])
        if not math.isfinite(ratio) or ratio > STATIONARY_RTOL:
            got = float(b.reshape(-1)[worst])
            raise Failure(
                f"baseline {index}, coordinate {worst}: b = {got:.6g} does not minimise the "
                f"sample variance of (f - b) s_i on {case}: the derivative in b is "
                f"{-2 * float(residual.reshape(-1)[worst]) / case.S:.3g}, not 0. Differentiate "
                "Var[(f - b) s_i] in b (E[s_i] = 0 simplifies one term)"
            )
