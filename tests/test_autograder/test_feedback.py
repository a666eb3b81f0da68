"""feedback.one_cause: a task's later failures defer to the known bug named first."""

from __future__ import annotations

from autograder import compare
from autograder.core import INPUT_LINE, CheckResult
from autograder.feedback import OTHER_INPUT_LINE, one_cause

BUG = compare.KnownBug(
    "t/mean_instead_of_sum", "it is the mean over points: sum instead"
)
OTHER = compare.KnownBug("t/missing_half", "the quadratic form lacks its 1/2")
for _bug in (BUG, OTHER):
    compare.KNOWN_BUGS.remove(_bug)

INPUT = "problem=P(n=3)\n  Rebuild it in one line: from m import P; problem = P(n=3)"


def _failed(name: str, message: str, headline: str = "", inputs: str = INPUT, **kw):
    kw.setdefault("wrong_result", True)
    feedback = message + (INPUT_LINE + inputs if inputs else "")
    return CheckResult(
        "t",
        name,
        "public",
        0.0,
        1.0,
        False,
        feedback,
        headline=headline,
        inputs=inputs,
        **kw,
    )


def test_later_failures_defer_to_the_named_cause(monkeypatch) -> None:
    monkeypatch.setattr(compare, "KNOWN_BUGS", [BUG, OTHER])
    first = _failed(
        "a",
        f"ll is wrong: got 1, expected 3. {BUG.hint}",
        "ll is wrong: got 1, expected 3",
    )
    elsewhere = _failed(
        "b",
        "ll after x -> Ax is wrong: got 2. check log det",
        "ll after x -> Ax is wrong: got 2",
    )
    no_headline = _failed(
        "c",
        "resp far away are not one-hot: check the max shift",
        inputs="problem=P(n=9)",
    )
    second_bug = _failed(
        "d", f"x is wrong. {OTHER.hint}", "x is wrong", inputs="problem=P(n=5)"
    )
    raised = _failed("e", "Your code raised ValueError: bad", wrong_result=False)
    out = one_cause([first, elsewhere, no_headline, second_bug, raised])
    text = [r.feedback for r in out]
    assert BUG.hint in text[0] and text[0].count("Smallest failing input") == 1
    assert (
        text[1]
        == 'll after x -> Ax is wrong: got 2: same cause as above ("a"): fix that first'
    )
    assert text[2] == 'this check fails too, same cause as above ("a"): fix that first'
    # a second diagnosed bug keeps its message and names its own (other) input on one line
    assert text[3] == f"x is wrong. {OTHER.hint}{OTHER_INPUT_LINE}problem=P(n=5)"
    assert text[4] == "Your code raised ValueError: bad"  # errors are never rewritten
    assert [r.score for r in out] == [
        r.score for r in (first, elsewhere, no_headline, second_bug, raised)
    ]


def test_without_a_named_cause_messages_stay(monkeypatch) -> None:
    monkeypatch.setattr(compare, "KNOWN_BUGS", [BUG])
    results = [_failed("a", "wrong: look at A"), _failed("b", "wrong: look at B")]
    out = one_cause(results)
    assert out[0].feedback == results[0].feedback
    assert (
        out[1].feedback == "wrong: look at B"
    )  # same input: the block is not repeated
