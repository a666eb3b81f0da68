r"""Hidden checks for ``02_score``: the reference on identical samples, and variances.

Deterministic: the student's estimate and the reference's on the same ``z`` (float64, per call)
for every family the public checks do not know in closed form (``Independent`` and
multivariate Gaussians, Poisson, integrands of the logits), and ``gaussian_score`` at edge
shapes (one sample, one dimension) and wide scales.

Statistical (the student draws its own samples): the spread of ``R`` independent estimates
with ``S = 6`` samples (the mean coordinates) against the *exact* variance of the estimator (Gauss–Hermite
quadrature; for the leave-one-out estimator the U-statistic formula in
:func:`autograder.checks.score.loo_variance`). ``R`` is chosen from the exact kurtosis so that
a ratio outside ``[1/3, 3]`` has probability below ``alpha`` for a correct estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from torch import Tensor

from autograder.checks.score import (
    ESTIMATE_FAMILIES,
    FEW,
    NO_GRAD_F_HINT,
    SCORE_FIELDS,
    SOME,
    STAT,
    TABULATED_ESTIMATES,
    TABULATED_SCORES,
    BaselineCase,
    Built,
    Case,
    DetachedCost,
    Expected,
    GaussianScoreCase,
    ParamDependentCost,
    _autograd_scores,
    _grad_f,
    _leave_one_out,
    _normal,
    _per_sample,
    baseline_cases,
    cases,
    centred_moments,
    compare_scores,
    estimate_key,
    estimator_law,
    estimator_probe,
    expect_baseline_shapes,
    expect_untouched,
    gaussian_score_cases,
    gaussian_score_probe,
    loo_variance,
    optimal_baseline_probe,
    parts_close,
    plain_moments,
    ratio_hint,
    repeat_estimator_probe,
    score_key,
    stat_case,
)
from autograder.compare import Catalogue, KnownBug, as_numpy, assert_close, hint_for
from autograder.core import Failure, check
from autograder.hidden import reference_subject
from autograder.stats import z_threshold
from autograder.strategies import seeds
from autograder.subject import Subject
from course_lib.reference import score as score_reference

ALPHA = 1e-6
#: Accepted ratio of observed to exact variance; wrong estimators in the corpus are off by >= 6.
VARIANCE_FACTOR = 3.0
#: Variance checks run fewer examples (each makes R >= 100 calls).
VARIANCE_EXAMPLES = 2
VARIANCE_SETTINGS = settings(STAT, max_examples=VARIANCE_EXAMPLES)
#: Samples per estimate in the variance checks (S != D = 2, S > 1 so sum and mean differ).
VARIANCE_S = 6


def _reference() -> Subject:
    return reference_subject("score")


def closed_form_scores(case: Case, built: Built) -> list[Tensor]:
    r"""Per-sample :math:`\nabla_\lambda \log q(z_s)`, each ``(S, *param.shape)`` (public families)."""
    z, params = built.z, built.params
    if case.family.startswith("gaussian"):
        scores = list(_autograd_scores(_normal, z, params[0], params[1]))
        return scores + [
            torch.zeros((case.S, *p.shape), dtype=torch.float64) for p in params[2:]
        ]
    if case.family == "bernoulli":
        return [z - torch.sigmoid(params[0])]
    if case.family == "categorical":
        onehot = torch.nn.functional.one_hot(z.long(), case.D).to(torch.float64)
        return [onehot - torch.softmax(params[0], dim=0)]
    raise ValueError(f"no closed-form score for {case.family!r}")


def expected_estimate(case: Case, built: Built, loo: bool) -> Expected:
    r""":math:`\frac1S\sum_s (f_s - b_s)\nabla\log q(z_s) + \nabla f(z_s)` with closed-form scores;
    :math:`b_s = 0` (plain) or the mean of the other samples' ``f`` (leave-one-out)."""
    values = built.f(built.z, *built.params).to(torch.float64)
    baseline = _leave_one_out(values) if loo else torch.zeros_like(values)
    scores, grad_f = closed_form_scores(case, built), _grad_f(built)
    log_q = built.make_q(*built.params).log_prob(built.z).reshape(case.S, -1).sum(dim=1)

    def average(weights: Tensor) -> list[Tensor]:
        return [(_per_sample(weights, s) * s).mean(dim=0) for s in scores]

    score_term = average(values - baseline)
    grad_f_term = [g.mean(dim=0) for g in grad_f]
    grads = [a + b for a, b in zip(score_term, grad_f_term)]
    scale = max(
        float((_per_sample(values, s) * s).abs().max())
        + float(g.abs().max())
        + float(baseline.abs().max() * s.abs().max())
        for s, g in zip(scores, grad_f)
    )
    parts = {
        "no_grad_f": score_term,
        "no_baseline": [a + b for a, b in zip(average(values), grad_f_term)],
        "undetached_f": [
            a + b + (_per_sample(log_q, g) * g).mean(dim=0)
            for a, b, g in zip(score_term, grad_f_term, grad_f)
        ],
        "in_sample_mean": [
            a + b for a, b in zip(average(values - values.mean()), grad_f_term)
        ],
        "centred_scales_grad_f": [
            a + b * case.S / (case.S - 1) for a, b in zip(score_term, grad_f_term)
        ],
        "baseline_added": [
            a + b for a, b in zip(average(values + baseline), grad_f_term)
        ],
    }
    if loo and isinstance(built.f, ParamDependentCost):
        # A baseline that is not detached: b_s carries d b_s / d lambda = mean of the others' grad f.
        grad_b = [(g.sum(dim=0, keepdim=True) - g) / (case.S - 1) for g in grad_f]
        parts["undetached_baseline"] = [
            x - (_per_sample(log_q, gb) * gb).mean(dim=0)
            for x, gb in zip(grads, grad_b)
        ]
    return Expected(grads, scale, parts)


def tabulated_answers() -> dict[str, np.ndarray]:
    """The right scores of :data:`~autograder.checks.score.TABULATED_SCORES`, by
    :func:`~autograder.checks.score.score_key`, and the exact estimates (plain and
    leave-one-out, with their known wrong variants) of every family on
    :data:`~autograder.checks.score.TABULATED_ESTIMATES`, by
    :func:`~autograder.checks.score.estimate_key`, from the reference
    (``scripts/tabulate_answers.py`` writes them to ``autograder/checks/score_answers.py``)."""
    out: dict[str, Any] = {}
    for score_case in TABULATED_SCORES:
        with torch.no_grad():
            scores = score_reference.gaussian_score(*score_case.arrays())
        for field, array in zip(SCORE_FIELDS, scores, strict=True):
            out[score_key(score_case, field)] = (
                array.detach().numpy().astype(np.float64)
            )
    for family in ESTIMATE_FAMILIES:
        for S, D, seed in TABULATED_ESTIMATES:
            case = Case(family, S, D, seed)
            for loo in (False, True):
                expected = expected_estimate(case, case.build(), loo)
                out[estimate_key(case, loo, "scale")] = np.float64(expected.scale)
                for i, grad in enumerate(expected.grads):
                    out[estimate_key(case, loo, f"grads/{i}")] = _array(grad)
                for name, values in expected.parts.items():
                    for i, part in enumerate(values):
                        out[estimate_key(case, loo, f"parts/{name}/{i}")] = _array(part)
    return out


def _array(value: Tensor) -> np.ndarray:
    return value.detach().numpy().astype(np.float64)


# ---------------------------------------------------------------------------- gaussian_score


@check(
    "gaussian_score",
    "matches the reference for one sample, one dimension and wide scales",
    points=1,
)
@settings(SOME)
@given(
    case=gaussian_score_cases(
        sizes=(1, 4), dims=(1, 3), spreads=(1.0, 3.0), distinct=False
    )
)
def gaussian_score_edges(subject: Subject, case: GaussianScoreCase) -> None:
    z, mu, log_sigma = case.arrays()
    out = subject.call(gaussian_score_probe, z, mu, log_sigma)
    want = _reference().call(gaussian_score_probe, z, mu, log_sigma)["value"]
    compare_scores(out["value"], want, z, mu, log_sigma)


# ---------------------------------------------------------------------------- estimators

#: Every example runs all of these (the public checks cover the closed-form families): event
#: shapes (S,) and (S, D) from ``Independent`` and ``MultivariateNormal``, a family without
#: rsample, integer samples, and integrands of the parameters.
HIDDEN_FAMILIES = (
    "gaussian_independent",
    "mvn",
    "poisson",
    "categorical",
    "bernoulli_f_theta",
    "categorical_f_theta",
    "gaussian_f_theta",
)
EACH_FAMILY = settings(SOME, max_examples=6)


def _matches_reference(subject: Subject, name: str, case: Case) -> None:
    built = case.build()
    args = (name, built.f, built.make_q, built.params, case.S, built.z, case.seed)
    out = subject.call(estimator_probe, *args)
    want = _reference().call(estimator_probe, *args)["grads"]
    expect_untouched(out, name, built.names)
    got = [as_numpy(g, "gradient") for g in out["grads"]]
    exp = [w.numpy() for w in want]
    for g, w, pname in zip(got, exp, built.names):
        if g.shape != w.shape:
            raise Failure(
                f"the gradient for {pname} has shape {g.shape}, expected {w.shape} (shaped like the "
                f"parameter) on {case!r}"
            )
    scale = max(float(np.abs(w).max()) for w in exp)
    atol = 1e-9 * (1 + scale)
    if all(np.allclose(g, w, rtol=1e-6, atol=atol) for g, w in zip(got, exp)):
        return
    hint = (
        ratio_hint(got, exp, case.S, case.D)
        or _missing_grad_f_hint(got, name, built, case)
        or (
            f"{built.make_q!r} with {built.f!r}: log q(z_s) is q.log_prob(z) summed over every axis but the sample "
            "axis (it may already be (S,)); categorical samples are integers"
        )
    )
    for g, w, pname in zip(got, exp, built.names):
        assert_close(
            g,
            w,
            f"{name}'s gradient for {pname} on {case!r}",
            rtol=1e-6,
            atol=atol,
            hint=hint,
        )


#: The reference with the gradient of f cut (``DetachedCost``): the known bug of leaving out
#: the grad f term, on the families whose f depends on the parameters.
MISSING_GRAD_F_BUGS: Catalogue = (
    (
        KnownBug("score_function_grad/sfg_missing_grad_f_term", NO_GRAD_F_HINT),
        lambda name, built, case: _reference().call(
            estimator_probe,
            name,
            DetachedCost(built.f),
            built.make_q,
            built.params,
            case.S,
            built.z,
            case.seed,
        )["grads"],
    ),
)


def _missing_grad_f_hint(
    got: list[np.ndarray], name: str, built: Any, case: Case
) -> str:
    """Does the student's result equal the reference's with the gradient of f cut?"""
    return hint_for(got, MISSING_GRAD_F_BUGS, parts_close, name, built, case)


@check(
    "score_function_grad",
    "matches the reference on identical samples for every family",
    points=1,
)
@EACH_FAMILY
@given(sizes=cases(("every",)))
def sfg_matches_reference(subject: Subject, sizes: Case) -> None:
    for family in HIDDEN_FAMILIES:
        _matches_reference(
            subject, "score_function_grad", replace(sizes, family=family)
        )


@check(
    "score_function_grad_loo",
    "matches the reference on identical samples for every family",
    points=1,
)
@EACH_FAMILY
@given(sizes=cases(("every",)))
def loo_matches_reference(subject: Subject, sizes: Case) -> None:
    for family in HIDDEN_FAMILIES:
        _matches_reference(
            subject, "score_function_grad_loo", replace(sizes, family=family)
        )


# ---------------------------------------------------------------------------- variances


def _repetitions(kurtosis: float, coords: int, safety: float) -> int:
    r"""Estimates needed so that :math:`|\log(s^2/V)| > \log c` has probability below the
    per-check share of ``ALPHA``: :math:`\operatorname{SE}(\log s^2) \approx \sqrt{(\kappa_S - 1)/R}`,
    with :math:`\kappa_S` the kurtosis of one ``S``-sample estimate (times ``safety``)."""
    z = z_threshold(ALPHA / (VARIANCE_EXAMPLES * coords))
    return max(
        100, math.ceil(safety * (kurtosis - 1.0) * (z / math.log(VARIANCE_FACTOR)) ** 2)
    )


def _spread(
    subject: Subject,
    name: str,
    case: Case,
    offset: float,
    reps: int,
    seed: int,
    truth: np.ndarray,
) -> np.ndarray:
    """Mean squared deviation from the exact gradient of ``reps`` estimates, mu coordinates only."""
    built = case.build(offset)
    runs = subject.call(
        repeat_estimator_probe,
        name,
        built.f,
        built.make_q,
        built.params,
        VARIANCE_S,
        reps,
        seed,
    )
    flat = np.concatenate(
        [as_numpy(r, "gradient").reshape(reps, -1) for r in runs], axis=1
    )
    if flat.shape[1] != truth.size:
        raise Failure(
            f"{name} returned {flat.shape[1]} gradient entries, expected {truth.size}"
        )
    if not np.all(np.isfinite(flat)):
        raise Failure(f"{name} returned NaN or infinity when drawing its own samples")
    # Known mean: a bias inflates the spread too.
    return np.asarray(((flat - truth) ** 2).mean(axis=0))[MU]


#: The variance checks look at the mu coordinates (kurtosis ~5-15; the log-sigma ones, ~50,
#: would need 5x more calls, and every variance bug of the corpus shows on mu as well).
MU = slice(0, 2)


@check(
    "score_function_grad",
    "has the estimator's variance when it draws its own samples",
    points=0.5,
    alpha=ALPHA,
)
@VARIANCE_SETTINGS
@given(seed=seeds())
def sfg_variance(subject: Subject, seed: int) -> None:
    """Spread of ``R`` estimates (S = 6, z=None) within a factor 3 of the exact variance
    :math:`\\operatorname{Var}(f\\nabla_\\mu\\log q)/S`; false-failure probability <= ALPHA (Bonferroni
    over examples and coordinates, normal approximation of log s² with the exact kurtosis, x1.5)."""
    case = stat_case("gaussian", seed)
    law = estimator_law(case)
    _, var, _, kurt = plain_moments(law)
    exact = var[MU] / VARIANCE_S
    kurt_s = 3.0 + (float(kurt[MU].max()) - 3.0) / VARIANCE_S
    reps = _repetitions(kurt_s, exact.size, safety=1.5)
    ratio = (
        _spread(subject, "score_function_grad", case, 0.0, reps, seed, law.truth)
        / exact
    )
    worst = int(np.argmax(np.abs(np.log(ratio))))
    if ratio[worst] > VARIANCE_FACTOR:
        raise Failure(
            f"over {reps} calls with num_samples={VARIANCE_S} and z=None, your estimates spread {ratio[worst]:.1f}x "
            f"more (in variance) than this estimator does ({case!r}): draw num_samples independent samples with "
            "q.sample((num_samples,)), not one sample repeated, and average f(z_s)·grad log q(z_s) over them"
        )
    if ratio[worst] < 1.0 / VARIANCE_FACTOR:
        raise Failure(
            f"over {reps} calls with num_samples={VARIANCE_S} and z=None, your estimates vary {1 / ratio[worst]:.1f}x "
            f"less than this estimator can ({case!r}): use exactly num_samples samples and no baseline in the plain estimator"
        )


#: Smallest ratio of plain to leave-one-out variance the offset of f must produce.
MIN_VARIANCE_RATIO = 30.0


@check(
    "score_function_grad_loo",
    "has far lower variance than the plain estimator when f has a large mean",
    points=0.5,
    alpha=ALPHA,
)
@VARIANCE_SETTINGS
@given(seed=seeds())
def loo_variance_reduction(subject: Subject, seed: int) -> None:
    """f shifted by a constant c >= 8 chosen so that the plain variance is >= 30x the leave-one-out
    one; the spread of ``R`` estimates (S = 6, z=None) must be within a factor 3 of the exact
    leave-one-out variance; false-failure probability <= ALPHA (normal approximation of log s²,
    kurtosis of the leading term x2)."""
    case = stat_case("gaussian", seed)
    offset = 8.0
    while True:
        law = estimator_law(case, offset)
        exact = loo_variance(law, VARIANCE_S)[MU]
        plain = plain_moments(law)[1][MU] / VARIANCE_S
        if float((plain / exact).min()) >= MIN_VARIANCE_RATIO:
            break
        offset *= 2.0
    kurt_s = 3.0 + (float(centred_moments(law)[3][MU].max()) - 3.0) / VARIANCE_S
    reps = _repetitions(kurt_s, exact.size, safety=2.0)
    spread = _spread(
        subject, "score_function_grad_loo", case, offset, reps, seed, law.truth
    )
    ratio = spread / exact
    worst = int(np.argmax(np.abs(np.log(ratio))))
    if ratio[worst] > VARIANCE_FACTOR:
        versus_plain = float(spread[worst] / plain[worst])
        raise Failure(
            f"with f shifted by {offset:g} (a large mean) and z=None, your estimates spread {ratio[worst]:.1f}x more "
            f"than the leave-one-out estimator's ({versus_plain:.2f}x the plain estimator's variance; {reps} calls, "
            f"num_samples={VARIANCE_S}): is b_s = (sum_j f_j - f_s)/(S-1) subtracted when you draw your own samples?"
        )
    if ratio[worst] < 1.0 / VARIANCE_FACTOR:
        raise Failure(
            f"your estimates vary {1 / ratio[worst]:.1f}x less than the leave-one-out estimator with num_samples="
            f"{VARIANCE_S} can ({case!r}, z=None): use exactly num_samples samples"
        )


# ---------------------------------------------------------------------------- optimal_baseline


def _weighted_baseline(
    f_values: Tensor, scores: tuple[Tensor, ...], weigh: Callable[[Tensor], Tensor]
) -> list[Tensor]:
    out = []
    for score in scores:
        weight = weigh(score)
        values = f_values.reshape(-1, *([1] * (score.ndim - 1)))
        out.append((values * weight).sum(dim=0) / weight.sum(dim=0))
    return out


def _plain_mean_baseline(f_values: Tensor, scores: tuple[Tensor, ...]) -> list[Tensor]:
    return [f_values.mean().expand(score.shape[1:]) for score in scores]


def _unsquared_baseline(f_values: Tensor, scores: tuple[Tensor, ...]) -> list[Tensor]:
    return _weighted_baseline(f_values, scores, lambda s: s)


def _pooled_baseline(f_values: Tensor, scores: tuple[Tensor, ...]) -> list[Tensor]:
    out = []
    for score in scores:
        weight = score.square().reshape(score.shape[0], -1).sum(dim=1)
        out.append(((f_values * weight).sum() / weight.sum()).expand(score.shape[1:]))
    return out


#: Wrong baselines students write, with the hint that names each (``optimal_baseline``).
BASELINE_BUGS: Catalogue = (
    (
        KnownBug(
            "optimal_baseline/optimal_baseline_plain_mean_of_f",
            "this is the plain mean of f: the variance-optimal constant weights each f(z_s) "
            "by how large that sample's score is",
        ),
        _plain_mean_baseline,
    ),
    (
        KnownBug(
            "optimal_baseline/optimal_baseline_unsquared_score",
            "f is weighted by the score itself, not by its square: the variance involves "
            "((f - b) s_i)^2",
        ),
        _unsquared_baseline,
    ),
    (
        KnownBug(
            "optimal_baseline/optimal_baseline_pooled_over_coordinates",
            "one baseline is shared by all coordinates of a parameter: minimise the variance "
            "of each coordinate's estimate separately",
        ),
        _pooled_baseline,
    ),
)


def baseline_hint(
    got: list[Tensor], f_values: Tensor, scores: tuple[Tensor, ...]
) -> str:
    """The hint of the first known wrong baseline that ``got`` equals, or ``""``."""

    def matches(got: list[Tensor], candidate: list[Tensor]) -> bool:
        return all(
            g.shape == c.shape
            and torch.allclose(g, c.to(g.dtype), rtol=1e-9, atol=1e-12)
            for g, c in zip(got, candidate)
        )

    return hint_for(got, BASELINE_BUGS, matches, f_values, scores)


@check(
    "optimal_baseline",
    "matches the reference on given values of f and scores",
    points=1,
)
@settings(SOME)
@given(case=baseline_cases())
def baseline_matches_reference(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    out = subject.call(optimal_baseline_probe, f_values, scores)
    expect_baseline_shapes(out, f_values, scores)
    want = _reference().call(optimal_baseline_probe, f_values, scores)["value"]
    hint = baseline_hint(out["value"], f_values, scores)
    # a ratio of two S-term float64 sums (S <= 9) with a positive denominator: round-off is
    # about 1e-15 relative, so 1e-9 admits every algebraic form and no wrong weighting
    for index, (got, expected) in enumerate(zip(out["value"], want)):
        assert_close(
            got, expected, f"baseline {index}", rtol=1e-9, atol=1e-12, hint=hint
        )


@check(
    "optimal_baseline",
    "shifts and scales with f, and one coordinate's scores leave the others' baselines alone",
    points=0.5,
)
@settings(FEW)
@given(case=baseline_cases())
def baseline_equivariant_and_local(subject: Subject, case: BaselineCase) -> None:
    f_values, scores = case.arrays()
    base = subject.call(optimal_baseline_probe, f_values, scores)["value"]
    # f -> a f + c must give b -> a b + c (the variance of (a f + c - b) s is a^2 times that of
    # (f - (b - c)/a) s); exact up to float64 round-off of the sums
    a, c = -1.5, 7.0
    moved = subject.call(optimal_baseline_probe, a * f_values + c, scores)["value"]
    for index, (b, m) in enumerate(zip(base, moved)):
        assert_close(
            m,
            a * b + c,
            f"baseline {index} for -1.5 f + 7",
            rtol=1e-9,
            atol=1e-9,
            hint="the optimal constant moves with f: shifting f by c shifts it by c",
        )
    # scaling the scores of coordinate 0 of the first parameter (and only those) by 10 on
    # half the samples changes that coordinate's optimum and must leave every other one alone
    changed = [s.clone() for s in scores]
    flat = changed[0].reshape(case.S, -1)
    flat[: case.S // 2 + 1, 0] *= 10.0
    after = subject.call(optimal_baseline_probe, f_values, tuple(changed))["value"]
    for index, (b, m) in enumerate(zip(base, after)):
        keep = torch.ones(b.numel(), dtype=torch.bool)
        if index == 0:
            keep[0] = False
        assert_close(
            m.reshape(-1)[keep],
            b.reshape(-1)[keep],
            f"baseline {index} of the coordinates whose scores did not change",
            rtol=1e-9,
            atol=1e-12,
            hint="each coordinate's baseline depends on that coordinate's scores only",
        )
