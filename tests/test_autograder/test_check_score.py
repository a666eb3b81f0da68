"""The oracles behind the 02_score checks are right, independently of the reference's formula."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autograder import probes, transport
from autograder.checks import score as checks
from autograder.core import Failure
from autograder.grade import run_task
from autograder.subject import LocalSubject
from course_lib.reference import score as reference


def _flat(grads):
    return np.concatenate([g.detach().numpy().ravel() for g in grads])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bernoulli_law_truth_is_the_gradient_of_the_exact_expectation(
    seed: int,
) -> None:
    case = checks.Case("bernoulli", S=0, D=3, seed=seed)
    law, built = checks.estimator_law(case), case.build()
    support = torch.tensor(
        list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64
    )
    logits = built.params[0].clone().requires_grad_(True)
    probs = torch.exp(
        torch.distributions.Bernoulli(logits=logits).log_prob(support).sum(1)
    )
    (exact,) = torch.autograd.grad((probs * built.f(support)).sum(), logits)
    np.testing.assert_allclose(law.truth, exact.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("S", [2, 3])
def test_loo_variance_formula_is_exact_by_enumerating_every_batch(S: int) -> None:
    """Enumerate every S-tuple of a 2-bit Bernoulli: the exact variance of the reference's
    leave-one-out estimate must equal the U-statistic formula."""
    case = checks.Case("bernoulli", S=0, D=2, seed=3)
    law, built = checks.estimator_law(case, offset=2.0), case.build(offset=2.0)
    points = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64
    )
    weights = dict(zip(((0, 0), (1, 0), (0, 1), (1, 1)), law.weights, strict=True))
    keys = [(0, 0), (1, 0), (0, 1), (1, 1)]
    mean = np.zeros(2)
    second = np.zeros(2)
    for batch in itertools.product(range(4), repeat=S):
        z = points[list(batch)]
        g = _flat(
            reference.score_function_grad_loo(
                built.f, built.make_q, built.params, S, z=z
            )
        )
        p = np.prod([weights[keys[i]] for i in batch])
        mean += p * g
        second += p * g**2
    np.testing.assert_allclose(mean, law.truth, rtol=1e-10)
    np.testing.assert_allclose(
        second - mean**2, checks.loo_variance(law, S), rtol=1e-10
    )


def test_gaussian_quadrature_matches_the_closed_form_and_plain_variance_matches_sampling() -> (
    None
):
    case = checks.stat_case("gaussian", 11)
    law, built = checks.estimator_law(case), case.build()
    _, var, _, _ = checks.plain_moments(law)
    torch.manual_seed(0)
    z = built.make_q(*built.params).sample((200_000,))
    mu, log_sigma = built.params
    eps = (z - mu) / torch.exp(log_sigma)
    per_sample = built.f(z)[:, None] * torch.cat(
        [eps / torch.exp(log_sigma), eps**2 - 1], dim=1
    )
    np.testing.assert_allclose(per_sample.var(0).numpy(), var, rtol=0.05)
    np.testing.assert_allclose(
        per_sample.mean(0).numpy(), law.truth, atol=5 * np.sqrt(var.max() / 200_000)
    )


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_the_reference_is_exact_on_an_enumerated_support(family: str) -> None:
    built, exact = checks.EnumerationCase(family, 3, 5).build()
    (got,) = reference.score_function_grad(
        built.f, built.make_q, built.params, built.z.shape[0], z=built.z
    )
    np.testing.assert_allclose(got.numpy(), exact.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("family", list(checks.FAMILIES))
def test_problem_objects_cross_the_boundary_with_a_short_repr(family: str) -> None:
    case = checks.Case(family, S=4, D=3, seed=7)
    built = case.build()
    args, _ = transport.unpickle_args(
        transport.pickle_args((built.f, built.make_q, built.params, built.z), {})
    )
    f, _, params, z = args
    assert torch.equal(f(z, *params), built.f(built.z, *built.params))
    assert (
        len(repr(case)) < 60
        and len(repr(built.f)) < 40
        and len(repr(built.make_q)) < 40
    )


def test_hints_name_the_bug() -> None:
    def summed(f, make_q, params, num_samples, z=None):
        grads = reference.score_function_grad(f, make_q, params, num_samples, z)
        return tuple(num_samples * g for g in grads)

    results = run_task(
        "score_function_grad",
        LocalSubject({"score_function_grad": summed}),
        ("public",),
    )
    feedback = [r.feedback for r in results if not r.passed]
    assert any("sum over samples instead of averaging" in text for text in feedback), (
        feedback
    )


def test_side_effect_report_names_the_parameter() -> None:
    out: probes.SideEffects = {"mutated": [1], "grad_left": [], "flag_changed": []}
    with pytest.raises(Failure, match="log_sigma"):
        checks.expect_untouched(out, "score_function_grad", ("mu", "log_sigma"))
    out = {"mutated": [2], "grad_left": [], "flag_changed": []}
    with pytest.raises(Failure, match="modified `z` in place"):
        checks.expect_untouched(out, "score_function_grad", ("mu", "log_sigma"))


def test_the_tabulated_scores_are_current_and_distinct() -> None:
    """scripts/tabulate_answers.py wrote them from the reference for these very problems
    (equal to 1e-12 relative: the same float64 arithmetic); the public closed-form property
    draws only from them, with S != D so a transposed answer cannot keep the shape."""
    cases = checks.TABULATED_SCORES
    assert len(set(cases)) == len(cases) and all(c.S != c.D for c in cases)
    for case in cases:
        fresh = reference.gaussian_score(*case.arrays())
        for shipped, want in zip(checks.tabulated_scores(case), fresh, strict=True):
            np.testing.assert_allclose(
                shipped.numpy(),
                want.numpy(),
                rtol=1e-12,
                atol=1e-15,
                err_msg=f"{case}: rerun scripts/tabulate_answers.py",
            )
    with pytest.raises(KeyError, match="no tabulated answer"):
        checks.tabulated_scores(checks.GaussianScoreCase(4, 2, 999))


def test_the_tabulated_estimates_are_current() -> None:
    """scripts/tabulate_answers.py wrote the exact estimates of every family for these very
    problems (plain and leave-one-out, with the wrong variants the hints name)."""
    from autograder.hidden.score import expected_estimate

    for family in checks.ESTIMATE_FAMILIES:
        for S, D, seed in checks.TABULATED_ESTIMATES:
            case = checks.Case(family, S, D, seed)
            for loo in (False, True):
                fresh = expected_estimate(case, case.build(), loo)
                shipped = checks.tabulated_estimate(case, loo)
                assert shipped.scale == fresh.scale
                assert shipped.parts.keys() == fresh.parts.keys()
                pairs = list(zip(shipped.grads, fresh.grads, strict=True))
                for name in fresh.parts:
                    pairs += zip(shipped.parts[name], fresh.parts[name], strict=True)
                for got, want in pairs:
                    # Float64 written to disk and read back: bit for bit.
                    assert torch.equal(got, want), (
                        f"{case}: rerun scripts/tabulate_answers.py"
                    )
    with pytest.raises(KeyError, match="no tabulated estimate"):
        checks.tabulated_estimate(checks.Case("gaussian", 4, 2, 999), loo=False)
