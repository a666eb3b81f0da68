r"""The properties of ``01_em`` (public tier) and the judge-side helpers they call.

Tabulated answers and invariants only (students can run these, and no function here computes
a graded answer): the identities are Bayes' rule, the Gibbs identity
:math:`F(q) = -\log p(X) + \sum_n \mathrm{KL}(q_n \,\|\, p(z_n \mid x_n))`, permutation
equivariance, affine invariance, and numerics far from every component. Importing this module
registers the properties (:func:`autograder.core.check`); a property's text decides its
Hypothesis examples, so move it verbatim."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from hypothesis import given, settings
from scipy.stats import multivariate_normal

from autograder import compare, probes
from autograder.checks.em.bugs import (
    _NUMERICS_HINT,
    _ORDINARY_WRONG,
    _diagnose,
    free_energy_hint,
    log_joint_hint,
    loglik_hint,
    resp_hint,
)
from autograder.checks.em.closed_forms import free_energy_parts, right
from autograder.checks.em.probes import EmOutput, em_probe
from autograder.checks.em.problems import (
    KINDS,
    Arrays,
    Mixture,
    _affine,
    _permutations,
    _permuted,
    far_arrays,
    make_arrays,
    mixtures,
    random_q,
    small_examples,
    tabulated,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING
from autograder.subject import Subject

ARG_NAMES = {
    "log_joint": ("X", "weights", "means", "covs"),
    "e_step": ("X", "weights", "means", "covs"),
    "free_energy": ("X", "resp", "weights", "means", "covs"),
}


#: float64 agreement between two correct algorithms (Cholesky, eigh, solve) on these mixtures;
#: float32 anywhere in the computation misses it by orders of magnitude.
TIGHT = {"rtol": 1e-8, "atol": 1e-10}


FEW = settings(GRADING, max_examples=10)


SOME = settings(GRADING, max_examples=15)


#: Tasks that call the student's ``log_joint``.
_HELD_BY = ("e_step", "free_energy")


def run_graded(
    subject: Subject, name: str, *arrays: np.ndarray, wired: bool = False
) -> EmOutput:
    """Judge side: run :func:`em_probe` (the subject copies the arrays across, so ours stay untouched).

    ``e_step`` and ``free_energy`` are graded with the student's ``log_joint`` held correct
    (:func:`autograder.probes.hold`: the judge computes its values), so a bug in
    ``log_joint`` costs points on ``log_joint`` only; ``wired=True``, or a machine without
    the hidden checks (a student's), runs the student's own ``log_joint``.
    """
    if name in _HELD_BY and not wired:
        return subject.call(em_probe, name, *arrays, held=probes.hold("log_joint"))
    return subject.call(em_probe, name, *arrays)


def close(
    got: Any,
    want: Any,
    what: str,
    hint: Callable[[], str] | str = "",
    *,
    rtol: float,
    atol: float,
) -> None:
    """:func:`autograder.compare.close` with this module's reading of a near miss (lost
    precision, :func:`~autograder.checks.em.bugs._diagnose`)."""
    compare.close(got, want, what, hint, rtol=rtol, atol=atol, diagnose=_diagnose)


def close_extreme(
    ordinary_ok: bool,
    got: Any,
    want: Any,
    what: str,
    hint: Callable[[], str] | str = "",
    *,
    rtol: float,
    atol: float,
) -> None:
    """:func:`close` for extreme inputs; its hints only where the ordinary case is right."""
    compare.close(
        got,
        want,
        what,
        hint,
        rtol=rtol,
        atol=atol,
        diagnose=_diagnose,
        instead=None if ordinary_ok else _ORDINARY_WRONG,
    )


def ordinary_e_step_ok(subject: Subject, problem: Mixture) -> bool:
    """Whether ``e_step`` is right on the ordinary arrays of ``problem`` (conditions hints)."""
    want = right(problem)
    try:
        resp, loglik = e_step_output(subject, make_arrays(problem))
    except Failure:
        return False
    return bool(
        np.allclose(resp, want.resp, rtol=1e-6, atol=1e-9)
        and np.isclose(loglik, want.loglik, rtol=1e-8, atol=1e-8)
    )


#: :func:`autograder.compare.expect_untouched` with this module's argument names and advice.
expect_untouched = partial(
    compare.expect_untouched,
    arg_names=ARG_NAMES,
    mutated="work on copies (write `covs = covs + ...`, not `covs += ...`; `X - mean`, "
    "not `X -= mean`), the caller still needs the originals",
)


def _expect_float64(what: str, dtype: str) -> None:
    expect(
        not dtype.startswith(("float32", "float16", "torch.float32")),
        f"{what} has dtype {dtype}: compute in float64 (the inputs are float64); float32 keeps only ~7 digits",
    )


def _expect_finite(array: np.ndarray, what: str, hint: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
        where = f" at index {index}" if index else ""
        raise Failure(f"{what} is {array[index] if index else array}{where}: {hint}")


def log_joint_output(
    subject: Subject, arrays: Arrays, untouched: bool = False
) -> np.ndarray:
    """Call log_joint and check shape and dtype (and, if asked, that the inputs are left alone)."""
    X, weights = arrays[0], arrays[1]
    out = run_graded(subject, "log_joint", *arrays)
    if untouched:
        expect_untouched(out, "log_joint")
    value, (dtype,) = out["value"], out["dtypes"]
    shape = (len(X), len(weights))
    if value.shape != shape:
        transposed = (
            " (that is (K, N): rows must be data points, columns components)"
            if value.shape == shape[::-1]
            else ""
        )
        raise Failure(
            f"log_joint returned shape {value.shape}, expected (N, K) = {shape}{transposed}"
        )
    _expect_float64("log_joint", dtype)
    return value


@check(
    "log_joint",
    "returns an (N, K) float64 array and leaves its inputs unchanged",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def log_joint_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    value = log_joint_output(subject, make_arrays(problem), untouched=True)
    _expect_finite(
        value,
        "log_joint",
        "log densities of these ordinary points are finite: look for log(0) or overflow",
    )


@check(
    "log_joint",
    "equals log pi_k + log N(x_n; mu_k, Sigma_k) (scipy's density)",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def log_joint_closed_form(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    got = log_joint_output(subject, arrays)
    close(
        got,
        want.log_joint,
        "log_joint",
        lambda: log_joint_hint(got, arrays, want),
        **TIGHT,
    )


@check(
    "log_joint",
    "permutes with data and components; shifts by -log|det A| under x -> Ax + b",
    points=0.5,
)
@SOME
@given(problem=mixtures())
@small_examples
def log_joint_equivariance(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    base = log_joint_output(subject, arrays)
    rows, components = _permutations(problem)
    permuted = log_joint_output(subject, _permuted(arrays, rows, components))
    close(
        permuted,
        base[rows][:, components],
        "log_joint of permuted data and components",
        **TIGHT,
        hint="row n must depend only on x_n and column k only on component k: check which axis you index or sum",
    )
    moved, log_det_a = _affine(problem, arrays)
    close(
        log_joint_output(subject, moved),
        base - log_det_a,
        "log_joint after x -> Ax + b",
        **TIGHT,
        hint="log N(Ax + b; A mu + b, A Sigma A^T) = log N(x; mu, Sigma) - log|det A|: "
        "check the -(1/2) log det Sigma_k term and that the quadratic form uses the full inverse",
    )


@check(
    "log_joint",
    "is exact far from every component and for ill-conditioned covariances",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def log_joint_extreme(subject: Subject, problem: Mixture) -> None:
    cases = [
        (
            "far",
            "points thousands of standard deviations away",
            {"rtol": 1e-9, "atol": 1e-6},
        ),
        (
            "ill",
            "covariances with condition number 1e7",
            {"rtol": 1e-7, "atol": 1e-7},
        ),
        (
            "tiny",
            "D = 70 with det(Sigma) below 1e-700",
            {"rtol": 1e-7, "atol": 1e-7},
        ),
    ]
    for kind, what, tol in cases:
        arrays, want = KINDS[kind](problem), right(problem, kind)
        got = log_joint_output(subject, arrays)
        _expect_finite(
            got,
            f"log_joint for {what}",
            "work in log space: use a Cholesky factor (log det = "
            "2 sum log diag L) or np.linalg.slogdet, never log(det(Sigma)) or log(exp(...))",
        )
        close(
            got,
            want.log_joint,
            f"log_joint for {what}",
            partial(log_joint_hint, got, arrays, want, _NUMERICS_HINT),
            **tol,
        )


def e_step_output(
    subject: Subject, arrays: Arrays, untouched: bool = False, wired: bool = False
) -> tuple[np.ndarray, float]:
    """Call e_step and check the pair's shapes and dtypes (and, if asked, that inputs are left alone).

    ``wired``: with the student's own ``log_joint`` (see :func:`call`).
    """
    X, weights = arrays[0], arrays[1]
    out = run_graded(subject, "e_step", *arrays, wired=wired)
    if untouched:
        expect_untouched(out, "e_step")
    (resp, loglik), (resp_dtype, loglik_dtype) = out["value"], out["dtypes"]
    shape = (len(X), len(weights))
    if resp.shape != shape:
        transposed = (
            " (that is (K, N): rows must be data points, columns components)"
            if resp.shape == shape[::-1]
            else ""
        )
        raise Failure(
            f"resp has shape {resp.shape}, expected (N, K) = {shape}{transposed}"
        )
    if loglik.size != 1:
        raise Failure(
            f"the log-likelihood has shape {loglik.shape}: return one number, the sum over points of log p(x_n)"
        )
    _expect_float64("resp", resp_dtype)
    _expect_float64("the log-likelihood", loglik_dtype)
    return resp, float(loglik.reshape(()))


def _expect_rows_on_simplex(resp: np.ndarray, tolerance: float = 1e-12) -> None:
    _expect_finite(
        resp,
        "resp",
        "subtract the row maximum before exp, or normalise in log space with logsumexp",
    )
    sums = resp.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if resp.min() < -tolerance:
        raise Failure(
            f"resp has a negative entry ({resp.min():.4g}): did you return log-responsibilities? "
            "Return exp(log r)."
        )
    if abs(sums[worst] - 1.0) > tolerance:
        if np.allclose(resp.sum(axis=0), 1.0, rtol=0, atol=1e-9):
            raise Failure(
                f"rows of resp sum to {sums[worst]:.4g} (row {worst}), not 1, but the columns sum to 1: "
                "did you normalise over the data axis (axis=0) instead of over components (axis=1)?"
            )
        raise Failure(
            f"rows of resp sum to {sums[worst]:.12g} (row {worst}), not 1: divide by the sum over "
            "components, and if you clip small values, renormalise afterwards"
        )
    if resp.max() > 1.0 + tolerance:
        raise Failure(
            f"resp has an entry above 1 ({resp.max():.4g}): responsibilities are probabilities"
        )


@check(
    "e_step",
    "returns resp of shape (N, K) and one log-likelihood, and leaves its inputs unchanged",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def e_step_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    resp, loglik = e_step_output(subject, make_arrays(problem), untouched=True)
    _expect_finite(resp, "resp", "look for 0/0 or log(0)")
    _expect_finite(
        np.asarray(loglik), "the log-likelihood", "look for log(0) or overflow"
    )


@check("e_step", "rows of resp sum to 1 and every entry lies in [0, 1]", points=0.5)
@SOME
@given(problem=mixtures())
@small_examples
def e_step_rows_sum_to_one(subject: Subject, problem: Mixture) -> None:
    resp, _ = e_step_output(subject, make_arrays(problem))
    _expect_rows_on_simplex(resp)


@check(
    "e_step",
    "resp follow Bayes' rule and log-likelihood = sum_n logsumexp_k log p(x_n, k) (scipy)",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def e_step_closed_form(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    resp, loglik = e_step_output(subject, arrays)
    close(resp, want.resp, "resp", lambda: resp_hint(resp, arrays, want), **TIGHT)
    close(
        loglik,
        want.loglik,
        "the log-likelihood",
        lambda: loglik_hint(loglik, want),
        **TIGHT,
    )


@check(
    "e_step",
    "K = 1 gives resp = 1; identical components give resp = weights",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def e_step_degenerate_mixtures(subject: Subject, problem: Mixture) -> None:
    X, weights, means, covs = make_arrays(problem)
    single = (X, np.ones(1), means[:1], covs[:1])
    resp, loglik = e_step_output(subject, single)
    close(
        resp,
        np.ones((len(X), 1)),
        "resp with one component",
        rtol=0,
        atol=1e-12,
        hint="with K = 1 every point belongs to that component",
    )
    close(
        loglik,
        float(multivariate_normal(means[0], covs[0]).logpdf(X).sum()),
        "the log-likelihood with one component",
        **TIGHT,
        hint="with K = 1 it is sum_n log N(x_n; mu, Sigma)",
    )
    k = len(weights)
    same = (X, weights, np.repeat(means[:1], k, 0), np.repeat(covs[:1], k, 0))
    resp, _ = e_step_output(subject, same)
    close(
        resp,
        np.tile(weights, (len(X), 1)),
        "resp with identical components",
        **TIGHT,
        hint="when all components are the same Gaussian the posterior is the prior, r_nk = pi_k: "
        "did you include the weights, and normalise over components?",
    )


@check(
    "e_step",
    "permuting data or components permutes resp; an affine change of coordinates leaves it unchanged",
    points=0.5,
)
@SOME
@given(problem=mixtures())
@small_examples
def e_step_equivariance(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    resp, loglik = e_step_output(subject, arrays)
    rows, components = _permutations(problem)
    resp_p, loglik_p = e_step_output(subject, _permuted(arrays, rows, components))
    close(
        resp_p,
        resp[rows][:, components],
        "resp of permuted data and components",
        **TIGHT,
        hint="row n must depend only on x_n and column k only on component k",
    )
    close(
        loglik_p,
        loglik,
        "the log-likelihood of permuted data and components",
        **TIGHT,
        hint="reordering points or components does not change log p(X)",
    )
    moved, log_det_a = _affine(problem, arrays)
    resp_a, loglik_a = e_step_output(subject, moved)
    close(
        resp_a,
        resp,
        "resp after x -> Ax + b",
        **TIGHT,
        hint="posteriors do not depend on the coordinates: check the quadratic form and log det Sigma_k",
    )
    close(
        loglik_a,
        loglik - len(arrays[0]) * log_det_a,
        "the log-likelihood after x -> Ax + b",
        **TIGHT,
        hint="it must shift by -N log|det A|: check the -(1/2) log det Sigma_k term",
    )


@check(
    "e_step",
    "finite one-hot resp and finite log-likelihood for points thousands of standard deviations away",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def e_step_far_points(subject: Subject, problem: Mixture) -> None:
    ordinary = ordinary_e_step_ok(subject, problem)
    arrays, want = far_arrays(problem), right(problem, "far")
    resp, loglik = e_step_output(subject, arrays)
    want_resp, want_loglik = want.resp, want.loglik
    naive = "exp(-4e6) underflows to 0 and 0/0 is NaN: normalise in log space, r = exp(a - logsumexp(a))"
    _expect_finite(resp, "resp far from every component", naive)
    _expect_finite(
        np.asarray(loglik),
        "the log-likelihood far from every component",
        "log(sum(exp(a))) underflows to log 0: use logsumexp (max + log sum exp(a - max))",
    )
    _expect_rows_on_simplex(resp)
    close_extreme(
        ordinary,
        resp,
        want_resp,
        "resp far from every component",
        partial(
            resp_hint,
            resp,
            arrays,
            want,
            "the component nearest in Mahalanobis distance gets responsibility 1",
        ),
        rtol=0,
        atol=1e-9,
    )
    close_extreme(
        ordinary,
        loglik,
        want_loglik,
        "the log-likelihood far from every component",
        partial(
            loglik_hint,
            loglik,
            want,
            "sum_n logsumexp_k a_nk stays exact when every a_nk is about -1e6",
        ),
        rtol=1e-9,
        atol=1e-6,
    )


@check(
    "e_step", "exact for ill-conditioned covariances and tiny determinants", points=0.25
)
@FEW
@given(problem=tabulated())
@small_examples
def e_step_ill_conditioned(subject: Subject, problem: Mixture) -> None:
    ordinary = ordinary_e_step_ok(subject, problem)
    for kind, what in (
        # The message names how the arrays are built from the failing input shown below it.
        (
            "ill",
            "covariances with condition number 1e7 (ill_conditioned_arrays(problem))",
        ),
        (
            "tiny",
            "D = 70 with det(Sigma) below 1e-700 (tiny_determinant_arrays(problem))",
        ),
    ):
        arrays, want = KINDS[kind](problem), right(problem, kind)
        resp, loglik = e_step_output(subject, arrays)
        want_resp, want_loglik = want.resp, want.loglik
        hint = "use a Cholesky factor or np.linalg.solve and slogdet; never log(det(Sigma)), exp then log, nor added jitter"
        _expect_finite(resp, f"resp for {what}", hint)
        _expect_finite(np.asarray(loglik), f"the log-likelihood for {what}", hint)
        close_extreme(
            ordinary,
            resp,
            want_resp,
            f"resp for {what}",
            partial(resp_hint, resp, arrays, want, hint),
            rtol=1e-6,
            atol=1e-7,
        )
        close_extreme(
            ordinary,
            loglik,
            want_loglik,
            f"the log-likelihood for {what}",
            partial(loglik_hint, loglik, want, hint),
            rtol=1e-7,
            atol=1e-7,
        )


def free_energy_output(
    subject: Subject,
    q: np.ndarray,
    arrays: Arrays,
    untouched: bool = False,
    wired: bool = False,
) -> float:
    """Call free_energy and check it returned one float64 number (and, if asked, left its inputs alone).

    ``wired``: with the student's own ``log_joint`` (see :func:`call`).
    """
    X, weights, means, covs = arrays
    out = run_graded(subject, "free_energy", X, q, weights, means, covs, wired=wired)
    if untouched:
        expect_untouched(out, "free_energy")
    value, (dtype,) = out["value"], out["dtypes"]
    if value.size != 1:
        raise Failure(
            f"free_energy returned shape {value.shape}: return one number, summed over points and components"
        )
    _expect_float64("free_energy", dtype)
    return float(value.reshape(()))


@check("free_energy", "returns one number and leaves its inputs unchanged", points=0.5)
@FEW
@given(problem=mixtures())
@small_examples
def free_energy_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    # q has exact zeros: a student who "avoids log 0" by writing into resp is caught here.
    q = random_q(problem, (problem.n_points, problem.n_components), zeros=True)
    # The one free_energy property run with the student's own log_joint, as it is wired.
    free_energy_output(subject, q, arrays, untouched=True, wired=True)


@check("free_energy", "F at the exact posterior equals -log-likelihood", points=1)
@GRADING
@given(problem=tabulated())
@small_examples
def free_energy_at_posterior(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    got = free_energy_output(subject, want.resp, arrays)
    close(
        got,
        -want.loglik,
        "F(posterior)",
        lambda: free_energy_hint(got, want.resp, arrays, want),
        **TIGHT,
    )


@check(
    "free_energy",
    "F(q) = -log-likelihood + sum_n KL(q_n || posterior_n) >= -log-likelihood",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def free_energy_gibbs_identity(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    q = random_q(problem, (problem.n_points, problem.n_components), zeros=False)
    got = free_energy_output(subject, q, arrays)
    energy, entropy, neg_loglik = free_energy_parts(q, want)
    if got < neg_loglik - 1e-9 * abs(neg_loglik):
        raise Failure(
            f"F(q) = {got:.6g} is below -log-likelihood = {neg_loglik:.6g}, but F(q) >= -log p(X) "
            f"for every q: {free_energy_hint(got, q, arrays, want)}"
        )
    close(
        got,
        energy - entropy,
        "F(q)",
        lambda: free_energy_hint(got, q, arrays, want),
        **TIGHT,
    )


@check(
    "free_energy",
    "finite and exact with exact zeros in q (0 log 0 = 0), one-hot q and far points",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def free_energy_zeros(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    far, want_far = far_arrays(problem), right(problem, "far")
    shape = (problem.n_points, problem.n_components)
    cases = [
        (random_q(problem, shape, zeros=True), arrays, want, "q with exact zeros"),
        (np.eye(shape[1])[np.arange(shape[0]) % shape[1]], arrays, want, "one-hot q"),
        (
            want_far.resp,
            far,
            want_far,
            "the one-hot posterior of points thousands of standard deviations away",
        ),
    ]
    for q, case, case_want, what in cases:
        got = free_energy_output(subject, q, case)
        energy, entropy, _ = free_energy_parts(q, case_want)
        if not np.isfinite(got):
            raise Failure(
                f"F for {what} is {got}: {free_energy_hint(got, q, case, case_want)}"
            )
        hint = partial(free_energy_hint, got, q, case, case_want)
        close(got, energy - entropy, f"F for {what}", hint, rtol=1e-9, atol=1e-8)
