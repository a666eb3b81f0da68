"""Public properties of the fake assignment (closed forms only)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder import probes
from autograder.core import check, expect

FAST = settings(max_examples=5, derandomize=True, database=None, deadline=None)


@check("add_one", "adds one to every entry", points=1, timeout_s=8)
@FAST
@given(size=st.integers(2, 6))
def adds_one(subject, size):
    x = np.arange(size, dtype=np.float64) * 0.5
    out = subject.call(probes.invoke_probe, "add_one", x)
    value = np.asarray(out["value"])
    expect(value.shape == x.shape, f"returned shape {value.shape}, expected {x.shape}")
    expect(
        np.allclose(value, x + 1),
        "entries are not x + 1: did you add the right constant?",
    )


@check("double", "doubles every entry", points=1, timeout_s=8)
@FAST
@given(size=st.integers(2, 6))
def doubles(subject, size):
    t = torch.arange(size, dtype=torch.float64) + 0.25
    out = subject.call(probes.invoke_probe, "double", t)
    expect(torch.allclose(out["value"], 2 * t), "entries are not 2 t")
