"""A bug costs points only on the task that has it (issue 15, item 1).

A notebook's functions look their helpers up in the notebook's globals. Each case builds
such a namespace (a correct task that calls its helper by name, as students write it) with
a corpus mutant of the helper, and grades the task: it keeps full marks except on the one
property per task that runs it as the student wired it (README, "How grading decides").
The helper's own task still loses points.
"""

from __future__ import annotations

from typing import Any

import pytest

from autograder.grade import run_task
from autograder.subject import LocalSubject
from autograder.tasks import TASKS
from tests import corpus

#: The properties that deliberately run a task with the student's own helpers.
WIRED = {
    "e_step": {"log-likelihood matches the reference in float64"},
    "free_energy": {"returns one number and leaves its inputs unchanged"},
    "negative_elbo": {
        "matches the reference in float32 on (B, 784) images and (B, 20) latents"
    },
    "train_vae": {"returns one float per epoch and trains the model in place"},
    "VAE": {
        "the reconstruction gradient reaches the encoder through z, and the decoder"
    },
    "elbo_entropy_form": {
        "matches the reference value and gradients on identical noise (three targets, S >= 1)"
    },
}

_EM_NOTEBOOK = """
import numpy as np
from scipy.special import logsumexp, xlogy


def e_step(X, weights, means, covs):
    log_p = log_joint(X, weights, means, covs)
    log_evidence = logsumexp(log_p, axis=1)
    return np.exp(log_p - log_evidence[:, None]), float(log_evidence.sum())


def free_energy(X, resp, weights, means, covs):
    log_p = log_joint(X, weights, means, covs)
    energy = np.sum(np.where(resp > 0, resp * log_p, 0.0))
    return float(-(energy - xlogy(resp, resp).sum()))
"""

#: Helper mutants of several kinds: the issue's (K, N) result, a wrong value, float32, and
#: a helper that writes into its inputs.
_LOG_JOINT_MUTANTS = (
    "log_joint_returns_k_by_n",
    "log_joint_missing_weights",
    "log_joint_float32",
    "log_joint_regularises_covs_in_place",
)


def _notebook(source: str, helpers: dict[str, Any]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    exec(compile(source, "<notebook>", "exec"), namespace)
    namespace.update(helpers)
    return namespace


def _entry(name: str) -> corpus.Entry:
    entries = [e for e in corpus.load(("em",)) if e.name == name]
    assert entries, f"no corpus entry {name}"
    return entries[0]


def _cases() -> list[Any]:
    return [
        pytest.param(mutant, task, id=f"{mutant}->{task}")
        for mutant in _LOG_JOINT_MUTANTS
        for task in ("e_step", "free_energy")
    ]


@pytest.mark.parametrize(("mutant", "task"), _cases())
def test_a_helper_bug_costs_points_only_on_the_helper(mutant: str, task: str) -> None:
    entry = _entry(mutant)
    namespace = _notebook(_EM_NOTEBOOK, {"log_joint": entry.obj})
    helper = run_task("log_joint", LocalSubject(namespace))
    assert sum(r.score for r in helper) < TASKS["log_joint"].points, mutant
    results = run_task(task, LocalSubject(namespace))
    lost = {r.name: r.feedback for r in results if not r.passed}
    assert set(lost) <= WIRED[task], lost
    assert sum(r.score for r in results) >= TASKS[task].points - sum(
        r.max_score for r in results if r.name in WIRED[task]
    )


def test_the_notebook_tasks_are_correct_with_a_correct_helper() -> None:
    """Guards the test above: with the reference helper the notebook tasks get full marks."""
    from course_lib.reference import em as reference

    namespace = _notebook(_EM_NOTEBOOK, {"log_joint": reference.log_joint})
    for task in ("e_step", "free_energy"):
        results = run_task(task, LocalSubject(namespace))
        assert all(r.passed for r in results), [r.feedback for r in results]


def test_the_wired_property_still_sees_the_helper_bug() -> None:
    """The one property run as wired does fail: the stand-in is not applied there."""
    namespace = _notebook(
        _EM_NOTEBOOK, {"log_joint": _entry("log_joint_missing_weights").obj}
    )
    results = run_task("e_step", LocalSubject(namespace))
    assert [r.name for r in results if not r.passed] == sorted(WIRED["e_step"])


_VAE_NOTEBOOK = """
import torch


def negative_elbo(x, logits, mu, logvar):
    return (gaussian_kl(mu, logvar) - bernoulli_log_likelihood(x, logits)).mean()


class VAE(torch.nn.Module):
    def __init__(self, x_dim=784, hidden_dim=400, z_dim=20):
        super().__init__()
        self.encoder = Encoder(x_dim, hidden_dim, z_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)

    def forward(self, x, eps=None):
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(reparameterize(mu, logvar, eps)), mu, logvar


def train_vae(model, train_x, *, epochs, batch_size=128, lr=1e-3, device=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(train_x, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(data), generator=generator).split(batch_size):
            batch = data[idx]
            mu, logvar = model.encoder(batch)
            eps = torch.randn(mu.shape, generator=generator)
            logits = model.decoder(reparameterize(mu, logvar, eps))
            loss = negative_elbo(batch, logits, mu, logvar)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(total / len(data))
    return history
"""


def _vae_namespace(**helpers: Any) -> dict[str, Any]:
    from course_lib.reference import vae as reference

    names = {
        n: getattr(reference, n)
        for n in (
            "gaussian_kl",
            "bernoulli_log_likelihood",
            "reparameterize",
            "Encoder",
            "Decoder",
        )
    }
    names.update(helpers)
    return _notebook(_VAE_NOTEBOOK, names)


def _vae_entry(name: str) -> Any:
    entries = [e for e in corpus.load(("vae",)) if e.name == name]
    assert entries, f"no corpus entry {name}"
    return entries[0].obj


@pytest.mark.parametrize(
    ("helper", "mutant"),
    [
        ("gaussian_kl", "gaussian_kl_sign_flipped"),
        ("bernoulli_log_likelihood", "bernoulli_log_likelihood_naive_log_sigmoid"),
    ],
)
def test_negative_elbo_keeps_its_points_when_a_helper_is_wrong(
    helper: str, mutant: str
) -> None:
    namespace = _vae_namespace(**{helper: _vae_entry(mutant)})
    assert (
        sum(r.score for r in run_task(helper, LocalSubject(namespace)))
        < TASKS[helper].points
    )
    results = run_task("negative_elbo", LocalSubject(namespace))
    lost = {r.name: r.feedback for r in results if not r.passed}
    assert set(lost) <= WIRED["negative_elbo"], lost


@pytest.mark.slow
def test_train_vae_keeps_its_points_when_its_loss_is_wrong() -> None:
    namespace = _vae_namespace(gaussian_kl=_vae_entry("gaussian_kl_sign_flipped"))
    results = run_task("train_vae", LocalSubject(namespace))
    lost = {r.name: r.feedback for r in results if not r.passed}
    assert set(lost) <= WIRED["train_vae"], lost


_ELBO_NOTEBOOK = """
import torch


def elbo_entropy_form(log_joint, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return log_joint(z).mean() + gaussian_entropy(log_sigma)
"""


@pytest.mark.parametrize(
    "mutant", ["gaussian_entropy_log_variance", "gaussian_entropy_mean_over_dims"]
)
def test_elbo_entropy_form_keeps_its_points_when_the_entropy_is_wrong(
    mutant: str,
) -> None:
    entries = [e for e in corpus.load(("elbo",)) if e.name == mutant]
    assert entries, f"no corpus entry {mutant}"
    namespace = _notebook(_ELBO_NOTEBOOK, {"gaussian_entropy": entries[0].obj})
    entropy = run_task("gaussian_entropy", LocalSubject(namespace))
    assert sum(r.score for r in entropy) < TASKS["gaussian_entropy"].points
    results = run_task("elbo_entropy_form", LocalSubject(namespace))
    lost = {r.name: r.feedback for r in results if not r.passed}
    assert set(lost) <= WIRED["elbo_entropy_form"], lost


_IWAE_NOTEBOOK = """
import math
import torch


def iwae_bound(model, x, eps):
    mu, logvar = model.encoder(x)
    z = reparameterize(mu, logvar, eps)  # (K, B, Z): broadcast over the draws
    logits = model.decoder(z)  # (K, B, 784)
    log_likelihood = bernoulli_log_likelihood(x.expand_as(logits), logits)
    log_prior = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
    log_q = -0.5 * (eps.square() + logvar + math.log(2 * math.pi)).sum(-1)
    log_weights = log_likelihood + log_prior - log_q
    return torch.logsumexp(log_weights, dim=0) - math.log(eps.shape[0])
"""


@pytest.mark.parametrize(
    ("helper", "name", "full_marks"),
    [
        ("bernoulli_log_likelihood", "bernoulli_log_likelihood_loop_over_rows", True),
        ("bernoulli_log_likelihood", "bernoulli_log_likelihood_sign_flipped", False),
        ("reparameterize", "reparameterize_exp_logvar_as_std", False),
    ],
)
def test_iwae_bound_is_judged_with_its_helpers_held_correct(
    helper: str, name: str, full_marks: bool
) -> None:
    """Issue 20, item 1: a helper right for the SPEC's (B, 784) shapes, written as a loop over
    rows, or a wrong one, costs iwae_bound nothing (a bound calls it on (K, B, 784))."""
    namespace = _notebook(
        _IWAE_NOTEBOOK, {**_vae_namespace(), helper: _vae_entry(name)}
    )
    own = sum(r.score for r in run_task(helper, LocalSubject(namespace)))
    assert (own == TASKS[helper].points) is full_marks, (name, own)
    results = run_task("iwae_bound", LocalSubject(namespace))
    assert all(r.passed for r in results), [r.feedback for r in results if not r.passed]


def test_vae_keeps_its_points_when_reparameterize_is_wrong() -> None:
    namespace = _vae_namespace(
        reparameterize=_vae_entry("reparameterize_exp_logvar_as_std")
    )
    helper = run_task("reparameterize", LocalSubject(namespace))
    assert sum(r.score for r in helper) < TASKS["reparameterize"].points
    results = run_task("VAE", LocalSubject(namespace))
    lost = {r.name: r.feedback for r in results if not r.passed}
    assert set(lost) <= WIRED["VAE"], lost


def test_reference_graded_before_the_judge_only_answers_are_imported() -> None:
    """Grading the reference module itself in one process rebinds its `log_joint` to the
    stand-in while e_step runs; the held answers imported at that moment must still be the
    reference's (they come from a private copy of it), not the stand-in, whatever the order of
    imports. A fresh interpreter: in this one they are imported already."""
    import subprocess
    import sys

    program = (
        "import sys\n"
        "from autograder.grade import run_task\n"
        "from autograder.subject import LocalSubject\n"
        "from autograder.tasks import TASKS\n"
        "from course_lib.reference import em\n"
        "assert 'autograder.hidden.held' not in sys.modules\n"
        "for task in ('e_step', 'free_energy'):\n"
        "    results = run_task(task, LocalSubject(vars(em)), ('public', 'hidden'))\n"
        "    lost = [r.feedback for r in results if not r.passed]\n"
        "    assert not lost, lost\n"
        "    assert sum(r.score for r in results) == TASKS[task].points\n"
        "assert em.log_joint.__module__ == 'course_lib.reference.em'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "AUTOGRADER_SHRINK": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
