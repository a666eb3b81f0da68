r"""Public checks for ``01_em``: ``log_joint``, ``e_step`` and ``free_energy``.

Tabulated answers and invariants only (students can run these, and no function here computes
a graded answer): the right values for a fixed list of mixtures (:data:`TABULATED`) ship as
data (``autograder/checks/em_answers.py``, written by ``scripts/tabulate_answers.py`` from the
reference); the identities are Bayes' rule, the Gibbs identity
:math:`F(q) = -\log p(X) + \sum_n \mathrm{KL}(q_n \,\|\, p(z_n \mid x_n))`, permutation
equivariance, affine invariance, and numerics far from every component.

Mixtures come from :func:`mixtures`: distinct weights, distinct full covariances (never the
identity, never diagonal), means away from 0, and pairwise distinct ``N``, ``K``, ``D`` so a
transposed axis cannot keep the right shape. A :class:`Mixture` prints as its sizes and seed:
that is the "smallest failing input" a student reads, and it rebuilds the arrays exactly.

The package by role: :mod:`.problems` (mixtures and the arrays built from them),
:mod:`.closed_forms` (the tabulated right answers), :mod:`.probes` (the only part that runs in
the student's process), :mod:`.bugs` (known bugs and their hints), :mod:`.properties` (the
properties; importing the package registers them). What other code imports is re-exported
here: ``from autograder.checks.em import Mixture`` keeps working.
"""

from __future__ import annotations

from autograder.checks.em.bugs import (
    FREE_ENERGY_BUGS,
    LOG_JOINT_BUGS,
    LOGLIK_BUGS,
    RESP_BUGS,
    free_energy_hint,
    log_joint_hint,
    loglik_hint,
    resp_hint,
)
from autograder.checks.em.closed_forms import Right, right
from autograder.checks.em.probes import EmOutput, em_probe
from autograder.checks.em.problems import (
    EXAMPLES,
    KINDS,
    TABULATED,
    Arrays,
    Mixture,
    answer_key,
    far_arrays,
    ill_conditioned_arrays,
    make_arrays,
    mixtures,
    random_q,
    small_examples,
    tabulated,
    tiny_determinant_arrays,
)
from autograder.checks.em.properties import (
    TIGHT,
    close,
    close_extreme,
    e_step_output,
    expect_untouched,
    free_energy_output,
    log_joint_output,
    run_graded,
)

__all__ = [
    "Arrays",
    "EXAMPLES",
    "EmOutput",
    "FREE_ENERGY_BUGS",
    "KINDS",
    "LOGLIK_BUGS",
    "LOG_JOINT_BUGS",
    "Mixture",
    "RESP_BUGS",
    "Right",
    "TABULATED",
    "TIGHT",
    "answer_key",
    "close",
    "close_extreme",
    "e_step_output",
    "em_probe",
    "expect_untouched",
    "far_arrays",
    "free_energy_hint",
    "free_energy_output",
    "ill_conditioned_arrays",
    "log_joint_hint",
    "log_joint_output",
    "loglik_hint",
    "make_arrays",
    "mixtures",
    "random_q",
    "resp_hint",
    "right",
    "run_graded",
    "small_examples",
    "tabulated",
    "tiny_determinant_arrays",
]
