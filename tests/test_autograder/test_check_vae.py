"""The 05_vae checks: their closed forms, the reference gets full marks, bugs cost points
only on their own task (the function tasks and the modules: fast; training is graded in
``test_corpus.py`` under ``slow``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from autograder.checks import vae as checks
from autograder.grade import run_task
from autograder.subject import LocalSubject
from autograder.tasks import TASKS
from course_lib.reference import vae as reference
from tests import corpus

REFERENCE = {name: getattr(reference, name) for name in reference.__all__}
FAST_TASKS = (
    "reparameterize",
    "gaussian_kl",
    "bernoulli_log_likelihood",
    "negative_elbo",
    "Encoder",
    "Decoder",
    "VAE",
)
MUTANTS = {e.name: e for e in corpus.load(("vae",)) if e.kind == "mutant"}


def _grade(task: str, namespace: dict[str, object]) -> list:
    return run_task(task, LocalSubject(namespace), ("public", "hidden"))


def _with(name: str) -> dict[str, object]:
    entry = MUTANTS[name]
    return {**REFERENCE, entry.task: entry.obj}


def test_the_tabulated_answers_are_current_and_the_textbook_formulas() -> None:
    """scripts/tabulate_answers.py wrote them from the reference for these very batches, and
    they are the textbook formulas (to 1e-12 relative: float64 sums of at most 47 terms, whose
    round-off is about 1e-15). Shapes keep a transposed answer apart (batch != z_dim)."""
    for kind, problems in checks.TABULATED.items():
        assert len(set(problems)) == len(problems)
        for problem in problems:
            arrays = [t.double() for t in problem.tensors()]
            if kind.startswith("kl"):
                mu, logvar = arrays[:2]
                assert problem.batch != problem.z_dim
                want = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
            else:
                x, logits = arrays[:2]
                # log sigmoid(l) by logsigmoid: exact for logits of 1e4 too (F.softplus
                # is not: above 20 it returns its input, off by exp(-20) = 2e-9).
                log_sig = torch.nn.functional.logsigmoid
                want = (x * log_sig(logits) + (1 - x) * log_sig(-logits)).sum(-1)
                if kind.startswith("elbo"):
                    mu, logvar = arrays[2:]
                    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
                    want = kl - want
            got = checks.tabulated(kind, problem)
            assert got.shape == (problem.batch,), (kind, problem)
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (
                f"{kind} {problem}: rerun scripts/tabulate_answers.py"
            )
    with pytest.raises(KeyError, match="no tabulated answer"):
        checks.tabulated("kl", checks.LatentBatch(3, 2, 999))


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(problem=checks.latent_batches())
def test_latent_batches_exclude_bug_hiding_sizes(problem: checks.LatentBatch) -> None:
    mu, logvar, eps = problem.tensors()
    assert problem.batch >= 2 and problem.z_dim >= 2 and problem.batch != problem.z_dim
    assert mu.shape == logvar.shape == eps.shape == (problem.batch, problem.z_dim)
    assert not torch.all(logvar == 0)
    assert len(repr(problem)) <= 100  # the "smallest failing input" a student reads


@pytest.mark.parametrize("task", FAST_TASKS)
def test_reference_gets_full_marks(task: str) -> None:
    results = _grade(task, REFERENCE)
    assert [r.feedback for r in results if not r.passed] == []
    assert sum(r.score for r in results) == TASKS[task].points


@pytest.mark.parametrize(
    ("mutant", "hint"),
    [
        ("gaussian_kl_missing_half", "it is twice the KL"),
        (
            "gaussian_kl_mean_over_latent_dims",
            "it is the mean over the latent dimensions",
        ),
        ("reparameterize_exp_logvar_as_std", "exp(logvar / 2)"),
        ("bernoulli_log_likelihood_double_sigmoid", ""),
    ],
)
def test_a_named_bug_loses_points_on_its_task_with_feedback(
    mutant: str, hint: str
) -> None:
    task = MUTANTS[mutant].task
    results = _grade(task, _with(mutant))
    failed = [r for r in results if not r.passed]
    assert sum(r.score for r in results) < TASKS[task].points
    assert failed and all(r.feedback.strip() for r in failed)
    assert not any("grader_error" in r.flags for r in failed)
    assert hint in "\n".join(r.feedback for r in failed)


_NEGATIVE_ELBO = """
def negative_elbo(x, logits, mu, logvar):
    return (gaussian_kl(mu, logvar) - bernoulli_log_likelihood(x, logits)).mean()
"""


def test_a_helper_bug_costs_points_only_on_the_helper() -> None:
    """negative_elbo written as a student does (its helpers looked up by name) keeps its
    points with a wrong gaussian_kl, except on the one property that runs it as wired."""
    from tests.test_autograder.test_double_jeopardy import WIRED

    namespace = _with("gaussian_kl_missing_half")
    exec(_NEGATIVE_ELBO, namespace)
    results = _grade("negative_elbo", namespace)
    failed = {r.name for r in results if not r.passed}
    assert failed == WIRED["negative_elbo"], failed
    assert (
        sum(r.score for r in _grade("gaussian_kl", namespace))
        < TASKS["gaussian_kl"].points
    )
