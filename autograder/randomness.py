"""Where code under grading starts its global random streams: the same state every run.

torch's CPU generator, NumPy's legacy global state (what ``np.random.rand`` draws from) and
Python's ``random`` are seeded from the OS in a fresh process, so a submission that draws
unseeded randomness would get other feedback, or other points, at each grading and a regrade
diff would show changes nobody made. The CI grader's worker starts each notebook from
:func:`seed_globals`, a notebook's grade cell checks inside :func:`seeded_globals`, and the
corpus and the benchmark's floor grade the same way. (The probes seed their own draws per
call: :func:`autograder.probes.seeded`.)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["seed_globals", "seeded_globals"]


def seed_globals(seed: int = 0) -> None:
    """Seed torch's CPU generator, NumPy's global state and Python's ``random``."""
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state, as np.random.rand


@contextlib.contextmanager
def seeded_globals(seed: int = 0) -> Iterator[None]:
    """:func:`seed_globals` for the block; the caller's states are given back afterwards (a
    notebook's streams never move because a grade cell ran)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        seed_globals(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002
