r"""Public checks for ``04_elbo``: the entropy, the ELBO (two forms), its score gradient, BBVI.

Closed forms and invariants only (students can run these). The oracles:

* the Gaussian entropy :math:`H = \sum_d (\log\sigma_d + \tfrac12\log 2\pi e)`, and
  ``torch.distributions.Normal(...).entropy()``;
* the **zero-variance oracle**: at :math:`q` = the exact posterior of a
  :class:`~course_lib.models.ConjugateGaussian`, :math:`\log p(x, z) - \log q(z) = \log p(x)`
  for every :math:`z`, so every single-sample ELBO equals the evidence exactly;
* the **pathwise identity**: with :math:`z = \mu + \sigma\epsilon`,
  :math:`\log q(z) = \sum_d(-\tfrac12\epsilon_d^2 - \log\sigma_d - \tfrac12\log 2\pi)`, so the
  total derivative of one sample's ELBO is :math:`\nabla_z \log p(x, z)` in :math:`\mu` and
  :math:`\nabla_z \log p(x, z)\,\sigma\epsilon + 1` in :math:`\log\sigma` (the spec asks for the
  total derivative, not "sticking the landing"), for both ELBO forms;
* moment-matched noise (sample mean 0, sample variance 1 per dimension): at the exact
  posterior, the entropy form equals :math:`\log p(x)` and the score gradient is exactly 0;
* for ``fit_bbvi``: the closed-form :math:`\mathrm{KL}(q \,\|\, p(z \mid x))` after a short run
  (statistical, thresholds calibrated in ``reports/calibration_elbo.md``), the ELBO trace
  against :math:`\log p(x)`, reproducibility from ``seed``, and two estimator invariants
  (the pathwise gradient ignores constants added to :math:`\log p`; the score-function
  estimator needs only values of :math:`\log p`).

Problems print as their sizes and seed and rebuild their arrays from them. They exclude
bug-hiding values: posterior and prior standard deviations away from 1, means away from 0,
dimension at least 2, sample counts different from the dimension.

The package by role: :mod:`.problems` (problems, strategies and the tabulated cases),
:mod:`.closed_forms` (the judge's closed forms: KL to the posterior, the pathwise identity,
moment-matched noise; tabulated answers read back), :mod:`.probes` (the only part that runs in
the student's process: the probes, their outputs, and the targets handed to student code),
:mod:`.bugs` (known bugs and their hints), :mod:`.properties` (the properties and the helpers
held correct, :data:`HELD`; importing the package registers them). What other code imports is
re-exported here.
"""

from __future__ import annotations

from autograder.checks.elbo.bugs import (
    FULLCOV_ENTROPY_BUGS,
    FULLCOV_RSAMPLE_BUGS,
    MIXTURE_BUGS,
)
from autograder.checks.elbo.closed_forms import (
    cholesky_factor,
    kl_to_posterior,
    moment_matched,
    pathwise_expected,
    tabulated_mixture,
    tabulated_score,
)
from autograder.checks.elbo.probes import (
    Offset,
    Recorder,
    ValuesOnly,
    entropy_probe,
    fit_error_probe,
    fit_held_probe,
    fit_probe,
    per_sample_probe,
    q_probe,
    scalar_probe,
    score_grad_probe,
    signature_defaults_probe,
)
from autograder.checks.elbo.problems import (
    MIXTURE_FIELDS,
    TABULATED_MIXTURES,
    TABULATED_SCORE_CASES,
    Conjugate,
    CovCase,
    FitSettings,
    FullCovCase,
    MixtureCase,
    QCase,
    SurrogateCase,
    conjugate_problems,
    cov_cases,
    fullcov_cases,
    log_sigmas,
    mixture_cases,
    mixture_key,
    q_cases,
    score_key,
    surrogate_cases,
)
from autograder.checks.elbo.properties import (
    ENTROPY_ATOL_PER_DIM,
    HELD,
    _fit,
    expect_untouched,
    held_for,
    probe_grads,
    value_tol,
)

__all__ = [
    "Conjugate",
    "CovCase",
    "ENTROPY_ATOL_PER_DIM",
    "FULLCOV_ENTROPY_BUGS",
    "FULLCOV_RSAMPLE_BUGS",
    "FitSettings",
    "FullCovCase",
    "HELD",
    "MIXTURE_BUGS",
    "MIXTURE_FIELDS",
    "MixtureCase",
    "Offset",
    "QCase",
    "Recorder",
    "SurrogateCase",
    "TABULATED_MIXTURES",
    "TABULATED_SCORE_CASES",
    "ValuesOnly",
    "_fit",
    "cholesky_factor",
    "conjugate_problems",
    "cov_cases",
    "entropy_probe",
    "expect_untouched",
    "held_for",
    "fit_error_probe",
    "fit_held_probe",
    "fit_probe",
    "fullcov_cases",
    "kl_to_posterior",
    "log_sigmas",
    "mixture_cases",
    "mixture_key",
    "moment_matched",
    "pathwise_expected",
    "per_sample_probe",
    "probe_grads",
    "q_cases",
    "q_probe",
    "scalar_probe",
    "score_grad_probe",
    "score_key",
    "signature_defaults_probe",
    "surrogate_cases",
    "tabulated_mixture",
    "tabulated_score",
    "value_tol",
]
