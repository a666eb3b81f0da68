r"""Public checks for ``02_score``: ``gaussian_score``, ``score_function_grad`` and
``score_function_grad_loo``.

Tabulated answers, autograd and invariants only (students can run these; no function here
computes ``gaussian_score``'s answer by its formula: issue 19).

Deterministic tier (the grader passes ``z``, so every call is exact in float64):

* ``gaussian_score`` against the right scores tabulated for :data:`TABULATED_SCORES`
  (``autograder/checks/score_answers.py``, from the reference), and on any problem against
  autograd of ``Normal.log_prob``;
* the estimators against :math:`\frac1S\sum_s f(z_s)\nabla\log q(z_s) + \nabla f(z_s)` with the
  scores of the Gaussian (autograd of ``Normal.log_prob``, per sample), the
  Bernoulli (:math:`z - \operatorname{sigmoid}(\ell)`) and the categorical
  (:math:`\operatorname{onehot}(z) - \operatorname{softmax}(\ell)`);
* exactness by enumeration: when ``z`` holds every point :math:`x` of a discrete support
  :math:`m_x` times and the integrand is the table :math:`\tilde f(x) = f(x)\, q(x)\, S/m_x`
  (``q`` frozen at the current parameters, so :math:`\tilde f` does not depend on them), the
  estimate :math:`\frac1S \sum_s \tilde f(z_s)\nabla\log q(z_s) = \sum_x q(x) f(x) \nabla\log q(x)`
  is the exact gradient of :math:`\sum_x q_\lambda(x) f(x)` (computed here by autograd of the
  exact expectation, not from the estimator's formula);
* linearity in ``f`` on fixed samples, and, for the leave-one-out estimator, invariance under
  :math:`f \to f + c` (the baseline absorbs constants; the plain estimate moves by
  :math:`c\,\overline{\nabla \log q}`).

Statistical tier (only where the student draws its own samples, ``z=None``): unbiasedness
against closed forms with the *known* per-sample variance (Gauss–Hermite quadrature for the
Gaussian, enumeration for the Bernoulli), ``n >= 100 * skewness**2`` and a Bonferroni-corrected
two-sided z-test; each property states its false-failure probability ``alpha``.

Problems print as their family, sizes and seed (``Case('gaussian', S=5, D=3, seed=7)``): that is
the smallest failing input a student reads, and it rebuilds every tensor exactly.

The package by role: :mod:`.problems` (cases and the tabulated problems), :mod:`.closed_forms`
(tabulated answers read back, autograd of ``torch.distributions``, the estimators' laws for the
statistical tier), :mod:`.probes` (the only part that runs in the student's process: the
probes, their outputs, and the families and integrands handed to student code),
:mod:`.bugs` (known bugs and their hints), :mod:`.properties` (the properties; importing the
package registers them). What other code imports is re-exported here.
"""

from __future__ import annotations

from autograder.checks.score.bugs import (
    LOO_PART_BUGS,
    NO_GRAD_F_HINT,
    RATIO_BUGS,
    SCORE_BUGS,
    SFG_PART_BUGS,
    parts_close,
    ratio_hint,
)
from autograder.checks.score.closed_forms import (
    Expected,
    _autograd_scores,
    _grad_f,
    _leave_one_out,
    _normal,
    _per_sample,
    centred_moments,
    estimator_law,
    loo_variance,
    plain_moments,
    tabulated_estimate,
    tabulated_scores,
)
from autograder.checks.score.probes import (
    BernoulliFamily,
    CategoricalFamily,
    CosineCost,
    DetachedCost,
    GaussianFamily,
    LinearCombination,
    MultivariateGaussianFamily,
    ParamDependentCost,
    PoissonFamily,
    QuadraticCost,
    TableCost,
    TanhLogitCost,
    estimator_probe,
    gaussian_score_probe,
    optimal_baseline_probe,
    repeat_estimator_probe,
)
from autograder.checks.score.problems import (
    ESTIMATE_FAMILIES,
    FAMILIES,
    SCORE_FIELDS,
    TABULATED_ESTIMATES,
    TABULATED_SCORES,
    BaselineCase,
    Built,
    Case,
    EnumerationCase,
    GaussianScoreCase,
    baseline_cases,
    cases,
    estimate_key,
    gaussian_score_cases,
    score_key,
    stat_case,
)
from autograder.checks.score.properties import (
    FEW,
    SOME,
    STAT,
    compare_scores,
    expect_baseline_shapes,
    expect_untouched,
)

__all__ = [
    "BaselineCase",
    "BernoulliFamily",
    "Built",
    "Case",
    "CategoricalFamily",
    "CosineCost",
    "DetachedCost",
    "ESTIMATE_FAMILIES",
    "EnumerationCase",
    "Expected",
    "FAMILIES",
    "FEW",
    "GaussianFamily",
    "GaussianScoreCase",
    "LOO_PART_BUGS",
    "LinearCombination",
    "MultivariateGaussianFamily",
    "NO_GRAD_F_HINT",
    "ParamDependentCost",
    "PoissonFamily",
    "QuadraticCost",
    "RATIO_BUGS",
    "SCORE_BUGS",
    "SCORE_FIELDS",
    "SFG_PART_BUGS",
    "SOME",
    "STAT",
    "TABULATED_ESTIMATES",
    "TABULATED_SCORES",
    "TableCost",
    "TanhLogitCost",
    "_autograd_scores",
    "_grad_f",
    "_leave_one_out",
    "_normal",
    "_per_sample",
    "baseline_cases",
    "cases",
    "centred_moments",
    "compare_scores",
    "estimate_key",
    "estimator_law",
    "estimator_probe",
    "expect_baseline_shapes",
    "expect_untouched",
    "gaussian_score_cases",
    "gaussian_score_probe",
    "loo_variance",
    "optimal_baseline_probe",
    "parts_close",
    "plain_moments",
    "ratio_hint",
    "repeat_estimator_probe",
    "score_key",
    "stat_case",
    "tabulated_estimate",
    "tabulated_scores",
]
