"""Unit tests of the check engine, apart from any assignment: ``core`` (feedback and the
reported counterexample), the transport guard, ``compare``, ``probes`` and ``stats``."""

from __future__ import annotations

import pickle
from typing import get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder import compare, core, probes, stats, transport
from autograder.checks.vae import LatentBatch
from autograder.core import Failure, Property, run_property
from autograder.profiles import GRADING
from autograder.subject import (
    STUDENT_ERROR_KINDS,
    LocalSubject,
    StudentError,
    StudentErrorKind,
)


def _property(fn: object, points: float = 1.0) -> Property:
    """A property that is not registered (the registry stays the course's)."""
    return Property("t", "a property", points, "public", core.bound_shrinking(fn))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- core


def test_a_failure_reports_its_message_and_the_smallest_failing_input() -> None:
    @settings(GRADING)
    @given(n=st.integers(0, 100))
    def prop(subject: object, n: int) -> None:
        print("printed output is swallowed")
        core.expect(n < 5, f"n = {n} is too large: keep it below 5")

    result = run_property(_property(prop), LocalSubject({}))
    assert (result.passed, result.score, result.flags) == (False, 0.0, [])
    message, example = result.feedback.split("\n  Smallest failing input: ")
    assert message.startswith("n = ") and message.endswith("keep it below 5")
    assert example.startswith("n=") and int(example[2:]) >= 5
    assert "subject" not in result.feedback and "printed" not in result.feedback


def _recording() -> tuple[object, list[int]]:
    seen: list[int] = []

    @settings(GRADING)
    @given(n=st.integers(-(10**6), 10**6))
    def prop(subject: object, n: int) -> None:
        seen.append(n)

    return prop, seen


def test_seed_once_draws_what_derandomize_draws_and_digests_the_source_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hypothesis.core
    from hypothesis.internal.reflection import function_digest

    plain, expected = _recording()
    plain(LocalSubject({}))  # derandomized by GRADING: seeded from the source's digest
    digests: list[object] = []

    def counted(function: object) -> bytes:
        digests.append(function)
        return function_digest(function)

    monkeypatch.setattr(hypothesis.core, "function_digest", counted)
    seeded, seen = _recording()
    for _ in range(3):
        run_property(_property(seeded), LocalSubject({}))
    assert len(expected) == 30 and seen == expected * 3, (
        "other examples than derandomize's"
    )
    assert digests == [], "Hypothesis digested the source again on a seeded run"
    assert core.seed_once(seeded) is seeded  # idempotent


def test_a_grade_cell_gives_unseeded_randomness_the_same_feedback_every_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from autograder import grade

    def gaussian_score(*args: object) -> None:
        raise ValueError(f"drew {float(torch.rand(())):.9f} and {np.random.rand():.9f}")  # noqa: NPY002

    reports = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002 - the notebook's own global state
        before = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
        grade("gaussian_score", gaussian_score, namespace={})
        reports.append(capsys.readouterr().out)
        assert torch.equal(torch.get_rng_state(), before[0]), (
            "grading moved torch's stream"
        )
        assert (np.random.get_state()[1] == before[1]).all(), "grading moved NumPy's"  # noqa: NPY002
    assert "drew 0." in reports[0]
    assert reports[0] == reports[1]


def test_an_input_from_a_public_check_module_comes_with_the_line_that_rebuilds_it() -> (
    None
):
    @settings(GRADING)
    @given(problem=st.just(LatentBatch(3, 4, 7)))
    def prop(subject: object, problem: LatentBatch) -> None:
        raise Failure("wrong")

    feedback = run_property(_property(prop), LocalSubject({})).feedback
    assert (
        "Smallest failing input: problem=LatentBatch(batch=3, z_dim=4, seed=7"
        in feedback
    )
    assert (
        "Rebuild it in one line: from autograder.checks.vae import LatentBatch;"
        in feedback
    )


def test_a_passing_property_earns_its_points() -> None:
    result = run_property(_property(lambda subject: None, 2.5), LocalSubject({}))
    assert (result.passed, result.score, result.max_score, result.feedback) == (
        True,
        2.5,
        2.5,
        "",
    )


@pytest.mark.parametrize(
    ("error", "feedback", "flags"),
    [
        (StudentError("missing", "`f` is not defined"), "`f` is not defined", []),
        (
            StudentError("raised", "raised ValueError: x"),
            "Your code raised ValueError: x",
            [],
        ),
        (
            StudentError("timeout", "ran too long"),
            "Your code ran too long",
            ["timeout"],
        ),
        (StudentError("crashed", "died"), "Your code died", ["crashed"]),
        (
            KeyError("oops"),
            "the grader could not run this check (KeyError",
            ["grader_error"],
        ),
    ],
)
def test_each_kind_of_error_becomes_feedback_and_flags(
    error: BaseException, feedback: str, flags: list[str]
) -> None:
    def prop(subject: object) -> None:
        raise error

    result = run_property(_property(prop), LocalSubject({}))
    assert not result.passed and result.feedback.startswith(feedback)
    assert result.flags == flags


def test_student_error_kinds_are_checked() -> None:
    assert STUDENT_ERROR_KINDS == set(get_args(StudentErrorKind))
    assert {"raised", "missing", "bad_result", "timeout", "crashed", "forbidden"} <= (
        STUDENT_ERROR_KINDS
    )
    with pytest.raises(ValueError, match="unknown StudentError kind"):
        StudentError("exploded", "x")


# ------------------------------------------------------------------------ transport


def test_plain_data_crosses_the_boundary_unchanged() -> None:
    value = {
        "t": torch.arange(6.0).reshape(2, 3)[:, 1],
        "a": np.eye(2),
        "n": [1, 2.5, None, "s", True],
        "pair": (np.int64(5), torch.tensor(1)),
    }
    back = transport.decode(transport.encode(value))
    assert torch.equal(back["t"], value["t"]) and back["t"].is_contiguous()
    assert isinstance(back["a"], np.ndarray) and np.array_equal(back["a"], value["a"])
    assert back["n"] == [1, 2.5, None, "s", True]
    assert back["pair"][0] == 5 and isinstance(back["pair"], tuple)


@pytest.mark.parametrize(
    "value",
    [object(), np.array([object()]), {1: "non-string key"}, [lambda: 0]],
    ids=["object", "object array", "int key", "function"],
)
def test_encode_refuses_what_is_not_plain_data(value: object) -> None:
    with pytest.raises(transport.TransportError):
        transport.encode(value)


@pytest.mark.parametrize(
    "payload", [b"", b"PK\x03\x04 not an archive", pickle.dumps(1)]
)
def test_decode_refuses_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(transport.TransportError):
        transport.decode(payload)


def test_probe_arguments_may_not_come_from_hidden_or_reference_modules() -> None:
    from autograder.hidden import reference_subject
    from course_lib.reference import em

    for forbidden in (reference_subject, em.e_step):
        payload = transport.pickle_args((forbidden,), {})
        with pytest.raises(transport.TransportError, match="may not be sent"):
            transport.unpickle_args(payload)
    args, kwargs = transport.unpickle_args(
        transport.pickle_args((probes.invoke_probe, np.ones(2)), {"k": 1})
    )
    assert args[0] is probes.invoke_probe and kwargs == {"k": 1}


def test_a_probe_result_that_cannot_cross_is_the_students_bad_result() -> None:
    subject = LocalSubject({"f": lambda: object()})
    with pytest.raises(StudentError) as caught:
        subject.call(probes.invoke_probe, "f")
    assert caught.value.kind == "bad_result"


# --------------------------------------------------------------------------- probes


def test_side_effects_by_position() -> None:
    a, b, c = torch.zeros(3), np.zeros(2), torch.ones(2, requires_grad=True)
    before = probes.snapshot((a, b, c, "s"))
    a.add_(1)
    c.sum().backward()
    effects = probes.side_effects(
        before, (a, b, c, "s"), requires_grad=[None, None, False, None]
    )
    assert effects == {"mutated": [0], "grad_left": [2], "flag_changed": [2]}


def test_invoke_probe_reports_the_value_and_what_changed() -> None:
    def scale_in_place(x: torch.Tensor, k: float) -> torch.Tensor:
        return x.mul_(k)

    out = LocalSubject({"scale": scale_in_place}).call(
        probes.invoke_probe, "scale", torch.ones(2), 3.0
    )
    assert torch.equal(out["value"], torch.full((2,), 3.0))
    assert (out["mutated"], out["grad_left"], out["flag_changed"]) == ([0], [], [])


# -------------------------------------------------------------------------- compare


def test_assert_close_names_the_worst_entry_and_the_hint() -> None:
    with pytest.raises(Failure) as caught:
        compare.assert_close([1.0, 2.0, 5.0], [1.0, 2.0, 3.0], "z", hint="look at z[2]")
    assert (
        str(caught.value) == "z is wrong at index (2,): got 5, expected 3. look at z[2]"
    )
    compare.assert_close([1.0, 2.0 + 1e-12], [1.0, 2.0], "z")


def test_assert_close_on_shapes_and_non_finite_values() -> None:
    with pytest.raises(Failure, match=r"has shape \(2,\), expected \(3,\)"):
        compare.assert_close([1.0, 2.0], [1.0, 2.0, 3.0], "z")
    with pytest.raises(Failure, match=r"z is nan at index .* look for overflow"):
        compare.assert_close([1.0, float("nan")], [1.0, 2.0], "z")
    with pytest.raises(Failure, match="should be numbers"):
        compare.assert_close(["a"], [1.0], "z")
    with pytest.raises(Failure, match=r"has shape \(2,\), expected \(3,\): hint"):
        compare.assert_shape(np.zeros(2), (3,), "v", "hint")


def test_side_effect_feedback_names_the_arguments() -> None:
    effects: probes.SideEffects = {"mutated": [1], "grad_left": [], "flag_changed": []}
    with pytest.raises(Failure, match=r"^f modified `b` in place: copy it$"):
        compare.expect_no_side_effects("f", effects, ("a", "b"), mutated="copy it")
    effects = {"mutated": [], "grad_left": [0, 2], "flag_changed": []}
    with pytest.raises(Failure, match=r"^f left \.grad on `a`, argument 2: "):
        compare.expect_no_side_effects("f", effects, ("a",))
    compare.expect_no_side_effects(
        "f", {"mutated": [], "grad_left": [], "flag_changed": []}, ()
    )


def test_known_bugs_are_tried_in_order_and_a_broken_candidate_is_skipped() -> None:
    first = compare.KnownBug("t/first", "first")
    second = compare.KnownBug("t/second", "second: {k}")
    for bug in (first, second):
        compare.KNOWN_BUGS.remove(bug)
    catalogue = (
        (first, lambda x: 1 / 0),
        (second, lambda x: 2 * x),
        (compare.KnownBug("t/third", "third"), lambda x: 2 * x),
    )
    compare.KNOWN_BUGS.pop()
    same = lambda got, candidate: got == candidate  # noqa: E731
    assert compare.first_known_bug(6, catalogue, same, 3) is second
    assert compare.hint_for(5, catalogue, same, 3) == ""
    assert [b.mutant for b in compare.all_known_bugs(6, catalogue, same, 3)] == [
        "t/second",
        "t/third",
    ]
    assert second.text(k=4) == "second: 4"
    assert compare.present(0, "missing") == 0
    with pytest.raises(Failure, match="missing"):
        compare.present(None, "missing")


# ---------------------------------------------------------------------------- stats


def test_mean_close_accepts_the_truth_and_names_a_bias() -> None:
    stats.mean_close(
        np.array([1.0, 2.0]),
        np.array([1.0, 2.0]),
        np.ones(2),
        100,
        alpha=1e-3,
        what="g",
    )
    with pytest.raises(
        Failure,
        match=r"g is biased: averaged over 100 draws it is 3, .*\(10\.0 standard errors away\)",
    ):
        stats.mean_close(
            np.array([3.0]), np.array([2.0]), np.ones(1), 100, alpha=1e-3, what="g"
        )
    with pytest.raises(Failure, match="NaN or infinity"):
        stats.mean_close(
            np.array([np.nan]), np.array([0.0]), np.ones(1), 10, alpha=0.1, what="g"
        )


def test_thresholds() -> None:
    assert stats.z_threshold(0.05) == pytest.approx(1.959964, abs=1e-6)
    eps = stats.dkw_bound(200, 0.01)
    assert 2 * np.exp(-2 * 200 * eps**2) == pytest.approx(0.01)
