r"""Public checks for ``05_vae``: the VAE's closed forms, its modules, and its training loop.

Functions are checked against independent closed forms (students can run these):
``torch.distributions.kl_divergence`` for :math:`\mathrm{KL}(q \,\|\, \mathcal{N}(0, I))`,
``binary_cross_entropy_with_logits`` for the Bernoulli log-likelihood, and the derivatives
of both (Kingma & Welling 2014, appendices B and C). The functions are dimension-agnostic, so
the checks use small, pairwise distinct sizes (batch != latent != pixels) that keep a
transposed or wrongly reduced axis from passing.

Students choose their own architectures, so the classes are checked by properties, never by
weights: sizes and argument order, float32 outputs, unconstrained outputs, per-image
independence, trainable parameters, and for :class:`VAE` consistency with its own encoder
and decoder (seen through forward hooks, so dropout or batch norm cannot break it).

``train_vae`` is graded on :class:`GradingVAE`, a small public model (:mod:`.probes`), never on
the student's ``VAE``: the training task is then independent of the ``VAE`` task, and the
model can record what the loop feeds it (batch sizes, the noise behind every ``z``) and
whether gradients were zeroed between optimizer steps.

``iwae_bound`` is graded on :class:`ScoringVAE`, another small public model rebuilt from a
seed on both sides. With :math:`K = 1` the bound must equal the importance log-weight
:math:`\log p(x|z) + \log p(z) - \log q(z|x)` from ``torch.distributions``; with :math:`K > 1` it
must be the log-mean-exp of the student's own :math:`K = 1` values for the same draws (an
invariant, so no reference is needed), and stay finite in float32 when every weight underflows.

The package by role: :mod:`.problems` (batches, module problems, the tabulated problems and
their strategies), :mod:`.closed_forms` (the IWAE log-weights of a model from
``torch.distributions``, the test of the recorded training noise), :mod:`.probes` (the only part
that runs in the student's process: the probes, their outputs, the public models
:class:`GradingVAE` and :class:`ScoringVAE`, and the problems whose methods a probe calls,
:class:`PixelBatch` and :class:`IwaeProblem`), :mod:`.bugs` (known bugs and their hints),
:mod:`.properties` (the properties and the helpers held correct, :data:`HELD`; importing the
package registers them). What other code imports is re-exported here.
"""

from __future__ import annotations

from autograder.checks.vae.bugs import IWAE_BUGS, KL_BUGS
from autograder.checks.vae.closed_forms import log_weights_closed_form, noise_test
from autograder.checks.vae.probes import (
    GradingVAE,
    IwaeProblem,
    PixelBatch,
    ScoringVAE,
    TrainConfig,
    devices_probe,
    grading_images,
    iwae_probe,
    module_probe,
    train_probe,
    vae_probe,
)
from autograder.checks.vae.problems import (
    TABULATED,
    ElboBatch,
    LatentBatch,
    ModuleProblem,
    answer_key,
    elbo_batches,
    iwae_problems,
    latent_batches,
    module_problems,
    pixel_batches,
    tabulated,
)
from autograder.checks.vae.properties import (
    HELD,
    expect_untouched,
    held_for,
    run_train_vae,
)

__all__ = [
    "ElboBatch",
    "GradingVAE",
    "HELD",
    "IWAE_BUGS",
    "IwaeProblem",
    "KL_BUGS",
    "LatentBatch",
    "ModuleProblem",
    "PixelBatch",
    "ScoringVAE",
    "TABULATED",
    "TrainConfig",
    "answer_key",
    "devices_probe",
    "elbo_batches",
    "expect_untouched",
    "grading_images",
    "held_for",
    "iwae_probe",
    "iwae_problems",
    "latent_batches",
    "log_weights_closed_form",
    "module_probe",
    "module_problems",
    "noise_test",
    "pixel_batches",
    "run_train_vae",
    "tabulated",
    "train_probe",
    "vae_probe",
]
