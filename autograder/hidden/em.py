r"""Hidden checks for ``01_em``: entry-by-entry comparison with the reference in float64.

The expected values come from running the same public probe and validators
(:func:`autograder.checks.em.em_probe`, ``*_output``) on :mod:`course_lib.reference.em` locally,
so both sides go through identical conversions and shape checks.
Mixtures have distinct weights and distinct full covariances; the free energy is compared on
arbitrary ``q``, exact zeros and one-hot rows included (0 log 0 = 0).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given

from autograder.checks.em import (
    TIGHT,
    Arrays,
    Mixture,
    Right,
    close,
    e_step_output,
    free_energy_hint,
    free_energy_output,
    log_joint_hint,
    log_joint_output,
    loglik_hint,
    make_arrays,
    mixtures,
    random_q,
    resp_hint,
    small_examples,
)
from autograder.core import check
from autograder.hidden import reference_subject
from autograder.profiles import GRADING
from autograder.subject import Subject
from course_lib.reference import em

_REFERENCE = reference_subject("em")


def right_of(arrays: Arrays) -> Right:
    """The right answers for any arrays, from the reference (the public checks ship them
    tabulated for :data:`autograder.checks.em.TABULATED` only)."""
    X, _, means, covs = arrays
    log_joint = em.log_joint(*arrays)
    resp, loglik = em.e_step(*arrays)
    chol = np.linalg.cholesky(covs)
    solved = [np.linalg.solve(c, (X - m).T) for c, m in zip(chol, means, strict=True)]
    maha = np.stack([(s**2).sum(axis=0) for s in solved], axis=1)
    log_det = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return Right(log_joint, resp, float(loglik), maha, log_det)


@check("log_joint", "matches the reference entry by entry in float64", points=0.5)
@GRADING
@given(problem=mixtures(points=(3, 12), components=(2, 5), dims=(2, 6)))
@small_examples
def log_joint_matches_reference(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    got = log_joint_output(subject, arrays)
    close(
        got,
        log_joint_output(_REFERENCE, arrays),
        "log_joint",
        lambda: log_joint_hint(got, arrays, right_of(arrays)),
        **TIGHT,
    )


@check("e_step", "resp match the reference entry by entry in float64", points=0.75)
@GRADING
@given(problem=mixtures(points=(3, 12), components=(2, 5), dims=(2, 6)))
@small_examples
def e_step_resp_matches_reference(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    resp, _ = e_step_output(subject, arrays)
    want, _ = e_step_output(_REFERENCE, arrays)
    close(
        resp, want, "resp", lambda: resp_hint(resp, arrays, right_of(arrays)), **TIGHT
    )


@check("e_step", "log-likelihood matches the reference in float64", points=0.5)
@GRADING
@given(problem=mixtures(points=(3, 12), components=(2, 5), dims=(2, 6)))
@small_examples
def e_step_loglik_matches_reference(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    # The one e_step property run with the student's own log_joint, as it is wired.
    _, loglik = e_step_output(subject, arrays, wired=True)
    _, want = e_step_output(_REFERENCE, arrays)
    close(
        loglik,
        want,
        "the log-likelihood",
        lambda: loglik_hint(loglik, right_of(arrays)),
        **TIGHT,
    )


@check(
    "free_energy",
    "matches the reference on arbitrary q, exact zeros included",
    points=1,
)
@GRADING
@given(problem=mixtures(points=(3, 12), components=(2, 5), dims=(2, 6)))
@small_examples
def free_energy_matches_reference(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    q = random_q(problem, (problem.n_points, problem.n_components), zeros=True)
    got = free_energy_output(subject, q, arrays)
    want = free_energy_output(_REFERENCE, q, arrays)
    close(
        got,
        want,
        "F(q)",
        lambda: free_energy_hint(got, q, arrays, right_of(arrays)),
        **TIGHT,
    )
