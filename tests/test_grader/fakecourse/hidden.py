"""Hidden properties of the fake assignment (judge only; a worker must never load this)."""

from __future__ import annotations

import numpy as np
import torch

from autograder import probes
from autograder.core import check, expect
from autograder.subject import LocalSubject
from autograder.tasks import register_hidden_checks

SECRET = "the hidden answer is 42"


def _reference_add_one(x):
    return x + 1.0


@check("add_one", "matches the reference on negative inputs", points=1, timeout_s=8)
def matches_reference(subject):
    x = -np.linspace(1.0, 3.0, 5)
    expected = LocalSubject({"add_one": _reference_add_one}).call(
        probes.invoke_probe, "add_one", x
    )["value"]
    out = subject.call(probes.invoke_probe, "add_one", x)
    expect(np.allclose(np.asarray(out["value"]), expected), "wrong for negative inputs")


@check("double", "leaves its input unchanged", points=1, timeout_s=8)
def leaves_input(subject):
    out = subject.call(
        probes.invoke_probe, "double", torch.ones(3, dtype=torch.float64)
    )
    expect(
        not out["mutated"], "double modified its argument in place: return a new tensor"
    )


register_hidden_checks("fake", __name__)
