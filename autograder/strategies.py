"""Hypothesis strategies shared by the checks: seeds, and numbers away from bug-hiding values.

Values that hide bugs are excluded, not down-weighted: ``sigma = 1`` (``log_sigma = 0``) hides
std/variance/log confusions, ``mu = 0`` hides sign and centring bugs, equal sizes hide axis
bugs. Assignment-specific strategies live next to their checks.
"""

from __future__ import annotations

import os

from hypothesis import strategies as st

__all__ = ["away_from", "distinct_sizes", "log_scales", "locations", "seeds"]


def _offset(seed: int) -> int:
    # `make calibrate` varies AUTOGRADER_SEED_OFFSET to rerun statistical checks on fresh
    # seeds; grading leaves it unset, so every student sees the same seeds.
    return (
        seed + int(os.environ.get("AUTOGRADER_SEED_OFFSET", "0")) * 0x9E3779B1
    ) % 2**32


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator``/``numpy.random.default_rng`` (torch's RNG is not Hypothesis's)."""
    return st.integers(min_value=0, max_value=2**32 - 1).map(_offset)


def away_from(
    low: float, high: float, bad: tuple[float, ...], margin: float
) -> st.SearchStrategy[float]:
    """Floats in ``[low, high]`` at least ``margin`` from every value in ``bad``."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False).filter(
        lambda x: all(abs(x - b) >= margin for b in bad)
    )


def log_scales(low: float = -1.5, high: float = 1.0) -> st.SearchStrategy[float]:
    """Log standard deviations away from 0 (sigma = 1 hides std/variance confusions)."""
    return away_from(low, high, (0.0,), 0.15)


def locations(bound: float = 2.0) -> st.SearchStrategy[float]:
    """Means away from 0 (mu = 0 hides sign and centring bugs)."""
    return away_from(-bound, bound, (0.0,), 0.2)


def distinct_sizes(
    count: int, low: int = 2, high: int = 7
) -> st.SearchStrategy[tuple[int, ...]]:
    """``count`` pairwise-distinct sizes (N != K != D keeps transposed axes from matching)."""
    return st.lists(
        st.integers(low, high), min_size=count, max_size=count, unique=True
    ).map(tuple)
