"""Grading accuracy (issue 15): load-independent scores, one error block per task, clean inputs."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from autograder import core
from autograder.core import Property, bound_shrinking, run_property
from autograder.grade import format_report, run_task
from autograder.profiles import GRADING
from autograder.subject import LocalSubject
from course_lib.reference import em as em_ref
from course_lib.reference import vae as vae_ref


def _namespace_with(task: str, fn: object) -> dict[str, object]:
    names = {n: getattr(em_ref, n) for n in em_ref.__all__}
    names[task] = fn
    return names


def e_step_name_error(X, weights, means, covs):
    return undefined_name + 1  # type: ignore[name-defined] # noqa: F821


def test_a_raising_function_prints_one_error_block_per_task() -> None:
    results = run_task(
        "e_step", LocalSubject(_namespace_with("e_step", e_step_name_error))
    )
    assert len([r for r in results if not r.passed]) > 3
    report = format_report("e_step", results, "public/hidden")
    assert report.count("NameError") == 1, report
    assert report.count("Smallest failing input") == 1, report
    assert report.count("the same error as above") == len(results) - 1


def gaussian_kl_name_error(mu, logvar):
    return undefined_name + 1  # type: ignore[name-defined] # noqa: F821


def test_the_failing_input_is_printed_cleanly_with_a_rebuild_line() -> None:
    names = {n: getattr(vae_ref, n) for n in vae_ref.__all__}
    names["gaussian_kl"] = gaussian_kl_name_error
    results = run_task("gaussian_kl", LocalSubject(names))
    feedback = results[0].feedback
    line = next(x for x in feedback.splitlines() if "Smallest failing input" in x)
    assert line.strip().endswith(")") and ", )" not in line and "  ," not in line, line
    rebuild = next(x for x in feedback.splitlines() if "Rebuild it in one line" in x)
    code = rebuild.split("Rebuild it in one line: ", 1)[1]
    scope: dict[str, object] = {}
    exec(code, scope)  # the line a student pastes rebuilds the input
    assert repr(scope["problem"]) in line


@settings(GRADING, phases=list(Phase))
@given(n=st.integers(0, 10_000))
def _fails_from_ten(subject: object, n: int) -> None:
    _fails_from_ten.calls += 1  # type: ignore[attr-defined]
    assert n < 10, f"n = {n} is too large"


def test_shrinking_stops_after_a_fixed_number_of_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The work after the first failure is a count: the same on an idle and a busy machine."""
    monkeypatch.setattr(core, "SHRINK_RUNS", 3)
    _fails_from_ten.calls = 0  # type: ignore[attr-defined]
    prop = Property("t", "n is small", 1.0, "public", bound_shrinking(_fails_from_ten))
    result = run_property(prop, LocalSubject({}))
    assert not result.passed
    runs_to_first_failure = (
        _fails_from_ten.calls - 4
    )  # 3 allowed runs + the one refused
    assert runs_to_first_failure >= 1
    # the message and the input reported come from the same (last failing) run
    shown = int(result.feedback.split("n = ", 1)[1].split()[0])
    assert f"Smallest failing input: n={shown}" in result.feedback
    assert shown >= 10


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


@pytest.fixture
def loaded_cpu() -> Iterator[None]:
    """One busy process per core for the duration of the test (on top of whatever else runs)."""
    stop_at = time.time() + 600
    workers = [
        multiprocessing.Process(target=_busy, args=(stop_at,), daemon=True)
        for _ in range(os.cpu_count() or 1)
    ]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        for w in workers:
            w.terminate()
            w.join()


#: Two wrong 02_score submissions, each on properties it fails (shrinking then runs).
_GRADE_TWO_MUTANTS = """
import json
from autograder.core import run_property
from autograder.subject import LocalSubject
from autograder.tasks import properties
from tests import corpus
wanted = {"loo_in_sample_mean_baseline": (1,), "sfg_sign_flipped": (5, 7)}
out = {}
for e in corpus.load(("score",)):
    if e.name in wanted:
        props = properties(e.task)
        subject = LocalSubject(corpus.namespace(e))
        rs = [run_property(props[i], subject) for i in wanted[e.name]]
        out[e.name] = [(r.name, r.score, r.feedback, r.flags) for r in rs]
print(json.dumps(out))
"""


def _grade_with_shrinking() -> dict[str, list[list[object]]]:
    env = {**os.environ, "AUTOGRADER_SHRINK": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _GRADE_TWO_MUTANTS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_scores_do_not_depend_on_machine_load(loaded_cpu: None) -> None:
    """Two wrong 02_score submissions, shrinking on as in grading, checked twice on a busy CPU.

    Timing differs between the runs (the busy processes compete for the cores); the
    scores, the feedback and the reported inputs must not.
    """
    first, second = _grade_with_shrinking(), _grade_with_shrinking()
    assert set(first) == {"loo_in_sample_mean_baseline", "sfg_sign_flipped"}
    assert first == second
    for name, outcome in first.items():
        failed = [feedback for _, score, feedback, _ in outcome if score == 0]
        assert failed, f"{name} got full marks"
        flags = [flag for *_, fl in outcome for flag in fl]  # type: ignore[union-attr]
        assert "grader_error" not in flags and "timeout" not in flags, outcome


def _waits(subject: object) -> None:
    time.sleep(1.5)


def _computes(subject: object) -> None:
    end = time.process_time() + 3.0
    while time.process_time() < end:
        pass


def test_the_time_limit_counts_computing_not_waiting() -> None:
    """Waiting (a busy machine, a sleep) is not computing: only CPU seconds hit the limit."""
    waits = run_property(
        Property("t", "waits", 1.0, "public", _waits, 1.0), LocalSubject({})
    )
    assert waits.passed, waits.feedback
    computes = run_property(
        Property("t", "computes", 1.0, "public", _computes, 1.0), LocalSubject({})
    )
    assert not computes.passed and computes.flags == ["timeout"], computes.feedback


def _feedback_of(module: str, mutant: str, task: str) -> str:
    from tests import corpus

    entry = next(e for e in corpus.load((module,)) if e.name == mutant)
    results = run_task(task, LocalSubject(corpus.namespace(entry)))
    return "\n".join(r.feedback for r in results if not r.passed)


@pytest.mark.parametrize(
    ("module", "mutant", "task", "misleading"),
    [
        ("em", "e_step_missing_weights", "e_step", ("float32", "jitter")),
        ("vae", "reparameterize_exp_logvar_as_std", "reparameterize", (".detach()",)),
        ("vae", "gaussian_kl_summed_over_batch", "gaussian_kl", ("log(exp",)),
        ("vae", "gaussian_kl_std_as_variance", "gaussian_kl", (".detach()",)),
        (
            "score",
            "loo_in_sample_mean_baseline",
            "score_function_grad_loo",
            ("1 - 1/S", "(S-1)/S"),
        ),
    ],
)
def test_hints_are_conditioned_on_what_holds(
    module: str, mutant: str, task: str, misleading: tuple[str, ...]
) -> None:
    """Feedback names the bug there is, not one an earlier failure makes look likely."""
    feedback = _feedback_of(module, mutant, task)
    assert feedback, f"{mutant} lost no points"
    for words in misleading:
        assert words not in feedback, feedback
