r"""Public checks for ``03_reparam``: inverse-CDF identities, implicit gradients, closed forms.

Noise is passed in, so every property here is deterministic. For each sampler (the six
``*_rsample`` tasks) a *family* below holds what the judge knows in closed form: a pivot
:math:`P(z; \lambda)` that a correct sample maps back to its noise (the CDF :math:`F(z;\lambda) = u`
for inverse-CDF families, :math:`(z - \mu)/\sigma = \epsilon` for the Gaussian ones), tail
probabilities, and how the family is built from its standard member. From the pivot come
the implicit-gradient identity

.. math:: \frac{\partial z}{\partial \lambda} = -\frac{\partial_\lambda P(z; \lambda)}{\partial_z P(z; \lambda)}
          \quad\Big(= -\frac{\partial_\lambda F(z;\lambda)}{q(z;\lambda)}\Big),

computed by autograd through the closed form, and, for failure messages only, :math:`F^{-1}(u)`
by bisection (the public checks never contain a quantile formula).

``reparam_grad`` is checked against per-sample closed forms with the public samplers and
integrands of :mod:`.probes` (module-level classes, so they travel to the student's process).

References:
    Mohamed, Rosca, Figurnov & Mnih (2020), "Monte Carlo Gradient Estimation in ML", §5;
    Figurnov, Mohamed & Mnih (2018), "Implicit Reparameterization Gradients" (the identity).

The package by role: :mod:`.problems` (the families: what the judge knows about each sampler
task, its parameter ranges and its known wrong formulas; the problems and strategies),
:mod:`.closed_forms` (CDFs, tails, pivots, bisection), :mod:`.probes` (the only part that runs
in the student's process: the probes, their outputs, and the integrands and samplers handed to
student code), :mod:`.bugs` (known bugs, diagnoses and hints), :mod:`.properties` (the
properties, registered per family; importing the package registers them). What other code
imports is re-exported here.
"""

from __future__ import annotations

from autograder.checks.reparam.bugs import (
    _GAMMA_SUSPECTS,
    _T_SUSPECTS,
    GRAD_BUGS,
    diagnose,
    diagnose_composed,
    grad_hint,
    show_noise,
    show_pair,
)
from autograder.checks.reparam.closed_forms import _erlang_cdf
from autograder.checks.reparam.probes import (
    DTYPE,
    Bump,
    Cosine,
    LogisticSampler,
    Quadratic,
    SinhNormalSampler,
    WeibullSampler,
    composed_probe,
    gamma_implicit_probe,
    reparam_grad_probe,
    rsample_probe,
)
from autograder.checks.reparam.problems import (
    COMPOSED_PARAMS,
    FAMILIES,
    LOC2,
    LOC3,
    LOG_SIGMA,
    SAMPLERS,
    ComposedProblem,
    Family,
    GradProblem,
    ImplicitGammaCase,
    SamplerProblem,
    _implicit_derivatives,
    _positive,
    composed_problems,
    grad_problems,
    implicit_gamma_cases,
    sampler_problems,
)
from autograder.checks.reparam.properties import (
    IMPLICIT_RTOL,
    SAMPLER_SETTINGS,
    compare_grads,
    run_implicit,
    sample_derivatives,
)

__all__ = [
    "Bump",
    "COMPOSED_PARAMS",
    "ComposedProblem",
    "Cosine",
    "DTYPE",
    "FAMILIES",
    "Family",
    "GRAD_BUGS",
    "GradProblem",
    "IMPLICIT_RTOL",
    "ImplicitGammaCase",
    "LOC2",
    "LOC3",
    "LOG_SIGMA",
    "LogisticSampler",
    "Quadratic",
    "SAMPLERS",
    "SAMPLER_SETTINGS",
    "SamplerProblem",
    "SinhNormalSampler",
    "WeibullSampler",
    "_GAMMA_SUSPECTS",
    "_T_SUSPECTS",
    "_erlang_cdf",
    "_implicit_derivatives",
    "_positive",
    "compare_grads",
    "composed_probe",
    "composed_problems",
    "diagnose",
    "diagnose_composed",
    "gamma_implicit_probe",
    "grad_hint",
    "grad_problems",
    "implicit_gamma_cases",
    "reparam_grad_probe",
    "rsample_probe",
    "run_implicit",
    "sample_derivatives",
    "sampler_problems",
    "show_noise",
    "show_pair",
]
