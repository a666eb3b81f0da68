"""Problems of ``01_em``: Gaussian mixtures and the arrays built from them.

Mixtures come from :func:`mixtures`: distinct weights, distinct full covariances (never the
identity, never diagonal), means away from 0, and pairwise distinct ``N``, ``K``, ``D`` so a
transposed axis cannot keep the right shape. A :class:`Mixture` prints as its sizes and seed:
that is the "smallest failing input" a student reads, and it rebuilds the arrays exactly.
:data:`TABULATED` lists the mixtures whose right answers ship as data (:mod:`.closed_forms`);
the permutations and the affine map of the invariance properties live here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import example
from hypothesis import strategies as st

from autograder.strategies import seeds

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Mixture:
    """A Gaussian mixture and data, rebuilt from its sizes and seed (see :func:`make_arrays`).

    Deliberately not a dataclass: Hypothesis prints dataclasses field by field, and this
    repr (sizes and seed) is the "smallest failing input" a student reads.
    """

    __slots__ = ("dim", "n_components", "n_points", "seed")

    def __init__(
        self,
        n_points: int = 0,
        n_components: int = 0,
        dim: int = 0,
        seed: int = 0,
        *,
        # The repr's names, so that the repr a student reads rebuilds the problem.
        N: int | None = None,
        K: int | None = None,
        D: int | None = None,
    ) -> None:
        self.n_points = n_points if N is None else N
        self.n_components = n_components if K is None else K
        self.dim = dim if D is None else D
        self.seed = seed

    def _key(self) -> tuple[int, int, int, int]:
        return (self.n_points, self.n_components, self.dim, self.seed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mixture) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Mixture(N={self.n_points}, K={self.n_components}, D={self.dim}, seed={self.seed})"


def mixtures(
    points: tuple[int, int] = (3, 9),
    components: tuple[int, int] = (2, 4),
    dims: tuple[int, int] = (2, 5),
) -> st.SearchStrategy[Mixture]:
    """Mixtures with pairwise distinct ``N``, ``K``, ``D`` (equal sizes hide transposed axes)."""
    sizes = st.tuples(
        st.integers(*points), st.integers(*components), st.integers(*dims)
    )
    return st.builds(
        lambda s, seed: Mixture(s[0], s[1], s[2], seed),
        sizes.filter(lambda s: len(set(s)) == 3),
        seeds(),
    )


def _distinct_weights(rng: np.random.Generator, k: int) -> np.ndarray:
    # Gaps of at least 0.5 between raw weights: equal weights hide a missing log pi.
    raw = rng.permutation(k) + 1.0 + rng.uniform(0.0, 0.5, k)
    return raw / raw.sum()


def _full_spd(rng: np.random.Generator, dim: int, scale: float) -> np.ndarray:
    """A dense SPD matrix (off-diagonals matter; never the identity), condition number ~ 10-100."""
    a = rng.normal(size=(dim, dim))
    cov = scale * (a @ a.T / dim + np.diag(rng.uniform(0.3, 1.0, dim)))
    return 0.5 * (cov + cov.T)


def _rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diagonal(r))


def _points_near(
    rng: np.random.Generator, n: int, means: np.ndarray, covs: np.ndarray, spread: float
) -> np.ndarray:
    labels = rng.integers(len(means), size=n)
    noise = spread * rng.normal(size=(n, means.shape[1]))
    return means[labels] + np.einsum(
        "nde,ne->nd", np.linalg.cholesky(covs)[labels], noise
    )


def make_arrays(problem: Mixture) -> Arrays:
    """``(X (N, D), weights (K,), means (K, D), covs (K, D, D))``: distinct weights and full covariances."""
    rng = np.random.default_rng(problem.seed)
    k, d = problem.n_components, problem.dim
    weights = _distinct_weights(rng, k)
    means = rng.normal(0.0, 1.5, (k, d))
    scales = np.exp(rng.uniform(-1.0, 0.7, k))
    covs = np.stack([_full_spd(rng, d, s) for s in scales])
    X = _points_near(rng, problem.n_points, means, covs, spread=1.3)
    return X, weights, means, covs


def far_arrays(problem: Mixture) -> Arrays:
    """Every point thousands of standard deviations from every component."""
    X, weights, means, covs = make_arrays(problem)
    rng = np.random.default_rng(problem.seed + 1)
    largest_std = float(np.sqrt(max(np.linalg.eigvalsh(c).max() for c in covs)))
    directions = rng.normal(size=X.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    distance = 3000.0 * largest_std * rng.uniform(1.0, 2.0, (len(X), 1))
    return means.mean(axis=0) + distance * directions, weights, means, covs


def ill_conditioned_arrays(problem: Mixture) -> Arrays:
    """Rotated covariances with eigenvalues from 1e-4 to 1e3 (condition number 1e7), still SPD."""
    rng = np.random.default_rng(problem.seed + 2)
    k, d = problem.n_components, problem.dim
    covs = []
    for _ in range(k):
        rotation = _rotation(rng, d)
        eigenvalues = rng.permutation(np.logspace(-4, 3, d)) * np.exp(
            rng.uniform(-0.5, 0.5)
        )
        cov = (rotation * eigenvalues) @ rotation.T
        covs.append(0.5 * (cov + cov.T))
    weights = _distinct_weights(rng, k)
    means = rng.normal(0.0, 2.0, (k, d))
    X = _points_near(rng, problem.n_points, means, np.stack(covs), spread=1.5)
    return X, weights, means, np.stack(covs)


def tiny_determinant_arrays(problem: Mixture) -> Arrays:
    """``D`` around 70 with variances 1e-13..1e-10: det(Sigma) underflows to 0 and the density
    overflows (log N is about +800 near the mean), while log det and log N stay exact."""
    rng = np.random.default_rng(problem.seed + 3)
    k, d = problem.n_components, 66 + problem.dim
    covs = []
    for _ in range(k):
        rotation = _rotation(rng, d)
        variances = rng.permutation(np.logspace(-13, -10, d)) * np.exp(
            rng.uniform(-0.5, 0.5)
        )
        cov = (rotation * variances) @ rotation.T
        covs.append(0.5 * (cov + cov.T))
    weights = _distinct_weights(rng, k)
    means = rng.normal(0.0, 1e-3, (k, d))
    X = _points_near(rng, problem.n_points, means, np.stack(covs), spread=1.0)
    return X, weights, means, np.stack(covs)


def random_q(problem: Mixture, shape: tuple[int, int], zeros: bool) -> np.ndarray:
    """Rows on the simplex; with ``zeros``, exact zeros in some entries and one-hot rows."""
    rng = np.random.default_rng(problem.seed + 4)
    q = rng.dirichlet(np.ones(shape[1]), size=shape[0])
    if zeros:
        keep = rng.random(shape) < 0.6
        keep[np.arange(shape[0]), rng.integers(shape[1], size=shape[0])] = True
        q = np.where(keep, q, 0.0)
        q[::3] = np.eye(shape[1])[rng.integers(shape[1], size=len(q[::3]))]
        q /= q.sum(axis=1, keepdims=True)
    return q


#: Tried first, before any generated mixture: most bugs fail here at once, with no shrinking,
#: and the student reads a small input.
EXAMPLES = (Mixture(3, 2, 4, 0), Mixture(6, 3, 2, 1))


def small_examples(fn: Any) -> Any:
    """Run :data:`EXAMPLES` before generated mixtures (apply just below ``@given``)."""
    for problem in reversed(EXAMPLES):
        fn = example(problem=problem)(fn)
    return fn


#: How the arrays of a tabulated answer are built from its mixture.
KINDS: dict[str, Callable[[Mixture], Arrays]] = {
    "ordinary": make_arrays,
    "far": far_arrays,
    "ill": ill_conditioned_arrays,
    "tiny": tiny_determinant_arrays,
}


#: The mixtures whose right answers ship with the public checks (no shared sizes, as
#: :func:`mixtures`); the public properties draw from these, the hidden ones from any.
TABULATED: tuple[Mixture, ...] = (
    *EXAMPLES,
    Mixture(4, 2, 3, 11),
    Mixture(5, 3, 4, 12),
    Mixture(7, 2, 5, 13),
    Mixture(3, 4, 2, 14),
    Mixture(9, 4, 3, 15),
    Mixture(6, 4, 5, 16),
    Mixture(8, 3, 2, 17),
    Mixture(5, 2, 4, 18),
    Mixture(7, 4, 2, 19),
    Mixture(4, 3, 5, 20),
)


def tabulated() -> st.SearchStrategy[Mixture]:
    """The mixtures of :data:`TABULATED`, the small examples first."""
    return st.sampled_from(TABULATED)


def answer_key(problem: Mixture, kind: str) -> str:
    """Where ``problem``'s answers for arrays of ``kind`` sit in the table."""
    return (
        f"{kind}/{problem.n_points}/{problem.n_components}/{problem.dim}/{problem.seed}"
    )


def _affine(problem: Mixture, arrays: Arrays) -> tuple[Arrays, float]:
    """``x -> A x + b`` applied to data, means, covariances; returns the arrays and log|det A|."""
    X, weights, means, covs = arrays
    rng = np.random.default_rng(problem.seed + 5)
    d = X.shape[1]
    scales = np.asarray(rng.uniform(0.5, 2.0, d))
    scales[0] = 1.8  # |det A| well away from 1, or a missing normaliser would cancel
    A = _rotation(rng, d) * scales
    b = rng.normal(0.0, 2.0, d)
    covs_new = A @ covs @ A.T
    return (
        X @ A.T + b,
        weights,
        means @ A.T + b,
        0.5 * (covs_new + np.swapaxes(covs_new, 1, 2)),
    ), float(np.log(np.abs(np.linalg.det(A))))


def _permutations(problem: Mixture) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(problem.seed + 6)
    n, k = problem.n_points, problem.n_components
    return np.roll(rng.permutation(n), 1), np.roll(
        np.arange(k), 1
    )  # never the identity


def _permuted(arrays: Arrays, rows: np.ndarray, components: np.ndarray) -> Arrays:
    X, weights, means, covs = arrays
    return X[rows], weights[components], means[components], covs[components]
