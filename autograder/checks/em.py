r"""Public checks for ``01_em``: ``log_joint``, ``e_step`` and ``free_energy``.

Tabulated answers and invariants only (students can run these, and no function here computes
a graded answer): the right values for a fixed list of mixtures (:data:`TABULATED`) ship as
data (``autograder/checks/em_answers.py``, written by ``scripts/tabulate_answers.py`` from the
reference); the identities are Bayes' rule, the Gibbs identity
:math:`F(q) = -\log p(X) + \sum_n \mathrm{KL}(q_n \,\|\, p(z_n \mid x_n))`, permutation
equivariance, affine invariance, and numerics far from every component.

Mixtures come from :func:`mixtures`: distinct weights, distinct full covariances (never the
identity, never diagonal), means away from 0, and pairwise distinct ``N``, ``K``, ``D`` so a
transposed axis cannot keep the right shape. A :class:`Mixture` prints as its sizes and seed:
that is the "smallest failing input" a student reads, and it rebuilds the arrays exactly.
"""

from __future__ import annotations

import base64
import functools
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, xlogy
from scipy.stats import multivariate_normal

from autograder import probes
from autograder.compare import (
    Catalogue,
    KnownBug,
    assert_close,
    expect_no_side_effects,
    hint_for,
)
from autograder.core import Failure, check, expect
from autograder.profiles import GRADING
from autograder.strategies import seeds
from autograder.subject import Student, StudentError, Subject

__all__ = [
    "KINDS",
    "Arrays",
    "TABULATED",
    "Mixture",
    "Right",
    "answer_key",
    "right",
    "tabulated",
    "e_step_output",
    "free_energy_output",
    "log_joint_output",
    "far_arrays",
    "ill_conditioned_arrays",
    "make_arrays",
    "mixtures",
    "small_examples",
    "random_q",
    "em_probe",
    "tiny_determinant_arrays",
]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
ARG_NAMES = {
    "log_joint": ("X", "weights", "means", "covs"),
    "e_step": ("X", "weights", "means", "covs"),
    "free_energy": ("X", "resp", "weights", "means", "covs"),
}
#: float64 agreement between two correct algorithms (Cholesky, eigh, solve) on these mixtures;
#: float32 anywhere in the computation misses it by orders of magnitude.
TIGHT = {"rtol": 1e-8, "atol": 1e-10}
FEW = settings(GRADING, max_examples=10)
SOME = settings(GRADING, max_examples=15)


# --------------------------------------------------------------------------- problems


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


# --------------------------------------------------------------------------- tabulated answers

#: How the arrays of a tabulated answer are built from its mixture.
KINDS: dict[str, Callable[[Mixture], Arrays]] = {
    "ordinary": make_arrays,
    "far": far_arrays,
    "ill": ill_conditioned_arrays,
    "tiny": tiny_determinant_arrays,
}


@dataclass(frozen=True)
class Right:
    """The right answers for one mixture's arrays, and the pieces the hints build the known
    wrong answers from."""

    #: ``log pi_k + log N(x_n; mu_k, Sigma_k)``, shape ``(N, K)``.
    log_joint: np.ndarray
    #: The responsibilities, shape ``(N, K)``.
    resp: np.ndarray
    #: ``sum_n log p(x_n)``.
    loglik: float
    #: Mahalanobis distances ``(x_n - mu_k)^T Sigma_k^-1 (x_n - mu_k)``, shape ``(N, K)``.
    maha: np.ndarray
    #: ``log det Sigma_k``, shape ``(K,)``.
    log_det: np.ndarray

    FIELDS = ("log_joint", "resp", "loglik", "maha", "log_det")


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


@functools.cache
def _table() -> dict[str, np.ndarray]:
    from autograder.checks import em_answers

    with np.load(
        io.BytesIO(zlib.decompress(base64.b64decode(em_answers.DATA)))
    ) as data:
        return {key: data[key] for key in data.files}


def right(problem: Mixture, kind: str = "ordinary") -> Right:
    """The tabulated right answers for ``KINDS[kind](problem)``.

    Raises:
        KeyError: ``problem`` is not in :data:`TABULATED` (a public check drew it elsewhere).
    """
    key, table = answer_key(problem, kind), _table()
    if f"{key}/log_joint" not in table:
        raise KeyError(f"no tabulated answer for {problem!r} ({kind})")
    values: dict[str, Any] = {field: table[f"{key}/{field}"] for field in Right.FIELDS}
    return Right(**{**values, "loglik": float(values["loglik"])})


# --------------------------------------------------------------------------- probe


def _as_float_array(value: Any, what: str) -> tuple[np.ndarray, str]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
        dtype = str(array.dtype)
        return array.astype(np.float64), dtype
    except (TypeError, ValueError):
        raise StudentError(
            "bad_result",
            f"returned {type(value).__name__} for {what}, expected a numpy array of numbers",
        ) from None


class EmOutput(probes.SideEffects):
    """What :func:`em_probe` brings back: the result as float64 arrays (``(resp, loglik)`` for
    ``e_step``), the dtypes the student returned, and the side effects on the arrays."""

    value: Any
    dtypes: list[str]


def em_probe(
    student: Student,
    name: str,
    *arrays: np.ndarray,
    held: dict[str, Any] | None = None,
) -> EmOutput:
    """Call ``student.<name>(*arrays)``; return its result as float64 arrays, their dtypes, mutated args.

    ``e_step`` must return a pair ``(resp, log_likelihood)``; torch tensors and array-likes are
    accepted and converted (the original dtype is reported so float32 can be flagged).
    ``held`` maps helper names to stand-ins (:func:`autograder.probes.held_correct`).
    """
    with probes.held_correct(student, name, held or {}):
        out = probes.invoke_probe(student, name, *arrays)
    value = out["value"]
    if name == "e_step":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            got = f"a {type(value).__name__}" + (
                f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""
            )
            raise StudentError(
                "bad_result",
                f"returned {got} from e_step; expected a pair (resp, log_likelihood)",
            )
        (resp, resp_dtype), (loglik, loglik_dtype) = (
            _as_float_array(value[0], "resp"),
            _as_float_array(value[1], "the log-likelihood"),
        )
        return {
            "value": (resp, loglik),
            "dtypes": [resp_dtype, loglik_dtype],
            **_effects(out),
        }
    array, dtype = _as_float_array(value, f"the result of {name}")
    return {"value": array, "dtypes": [dtype], **_effects(out)}


def _effects(out: probes.Invoked) -> probes.SideEffects:
    return {
        "mutated": out["mutated"],
        "grad_left": out["grad_left"],
        "flag_changed": out["flag_changed"],
    }


#: Tasks that call the student's ``log_joint``.
_HELD_BY = ("e_step", "free_energy")


def run_graded(
    subject: Subject, name: str, *arrays: np.ndarray, wired: bool = False
) -> EmOutput:
    """Judge side: run :func:`em_probe` (the subject copies the arrays across, so ours stay untouched).

    ``e_step`` and ``free_energy`` are graded with the student's ``log_joint`` held correct
    (:func:`autograder.probes.hold`: the judge computes its values), so a bug in
    ``log_joint`` costs points on ``log_joint`` only; ``wired=True``, or a machine without
    the hidden checks (a student's), runs the student's own ``log_joint``.
    """
    if name in _HELD_BY and not wired:
        return subject.call(em_probe, name, *arrays, held=probes.hold("log_joint"))
    return subject.call(em_probe, name, *arrays)


def close(
    got: Any,
    want: Any,
    what: str,
    hint: Callable[[], str] | str = "",
    *,
    rtol: float,
    atol: float,
) -> None:
    """:func:`assert_close`, building the (costly) diagnostic hint only when it fails."""
    try:
        assert_close(got, want, what, rtol=rtol, atol=atol)
    except Failure:
        hint_text = _diagnose(got, want, hint)
        assert_close(got, want, what, rtol=rtol, atol=atol, hint=hint_text)


#: Hints for extreme inputs (lost precision, log-space tricks) assume the ordinary case is
#: right; when it is not, the feedback names that instead of guessing.
_ORDINARY_WRONG = (
    "your code is already wrong on ordinary inputs (see the failed check against scipy's "
    "density on ordinary inputs): fix that first; this check only adds extreme inputs"
)


def close_extreme(
    ordinary_ok: bool,
    got: Any,
    want: Any,
    what: str,
    hint: Callable[[], str] | str = "",
    *,
    rtol: float,
    atol: float,
) -> None:
    """:func:`close` for extreme inputs; its hints only where the ordinary case is right."""
    try:
        assert_close(got, want, what, rtol=rtol, atol=atol)
    except Failure:
        hint_text = _diagnose(got, want, hint) if ordinary_ok else _ORDINARY_WRONG
        assert_close(got, want, what, rtol=rtol, atol=atol, hint=hint_text)


def ordinary_e_step_ok(subject: Subject, problem: Mixture) -> bool:
    """Whether ``e_step`` is right on the ordinary arrays of ``problem`` (conditions hints)."""
    want = right(problem)
    try:
        resp, loglik = e_step_output(subject, make_arrays(problem))
    except Failure:
        return False
    return bool(
        np.allclose(resp, want.resp, rtol=1e-6, atol=1e-9)
        and np.isclose(loglik, want.loglik, rtol=1e-8, atol=1e-8)
    )


def _diagnose(got: Any, want: Any, hint: Callable[[], str] | str) -> str:
    """A near miss means lost precision; otherwise ask ``hint``. Never raises (a hint is a bonus)."""
    try:
        got_array, want_array = (
            np.asarray(got, dtype=np.float64),
            np.asarray(want, dtype=np.float64),
        )
        if got_array.shape != want_array.shape:
            return ""
        if np.all(np.isfinite(got_array)) and np.allclose(
            got_array, want_array, rtol=1e-4, atol=1e-6
        ):
            scale = np.maximum(np.abs(want_array), 1e-3)
            digits = int(
                -np.log10(
                    max(float(np.max(np.abs(got_array - want_array) / scale)), 1e-16)
                )
            )
            return (
                f"it agrees with the expected value to only about {digits} significant digits: did something "
                "get computed in float32 (np.float32, a float32 torch tensor), did you add jitter to the "
                "covariances, clip small values, or add a small epsilon inside a log?"
            )
        return hint if isinstance(hint, str) else hint()
    except Exception:  # a diagnostic must never turn a wrong answer into a grader error
        return ""


# --------------------------------------------------------------------------- judging helpers


def expect_untouched(out: probes.SideEffects, name: str) -> None:
    expect_no_side_effects(
        name,
        out,
        ARG_NAMES[name],
        mutated="work on copies (write `covs = covs + ...`, not `covs += ...`; `X - mean`, "
        "not `X -= mean`), the caller still needs the originals",
    )


def _expect_float64(what: str, dtype: str) -> None:
    expect(
        not dtype.startswith(("float32", "float16", "torch.float32")),
        f"{what} has dtype {dtype}: compute in float64 (the inputs are float64); float32 keeps only ~7 digits",
    )


def _expect_finite(array: np.ndarray, what: str, hint: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
        where = f" at index {index}" if index else ""
        raise Failure(f"{what} is {array[index] if index else array}{where}: {hint}")


def _matches(got: np.ndarray, candidate: np.ndarray) -> bool:
    """Whether ``got`` is what a known bug computes. Where the bug gives exactly 0, so must
    ``got``: a wrong posterior that is merely near one-hot (1e-12, a covariance not inverted)
    is not the hard-assignment bug, whose zeros are exact."""
    got, candidate = np.asarray(got), np.asarray(candidate)
    return (
        got.shape == candidate.shape
        and bool(np.allclose(got, candidate, rtol=1e-6, atol=1e-8))
        and bool(np.all(got[candidate == 0] == 0))
    )


_NUMERICS_HINT = (
    "solve with the covariance itself (Cholesky or np.linalg.solve, no added jitter) and take "
    "log det from np.linalg.slogdet or the Cholesky diagonal"
)


@dataclass(frozen=True)
class _LogJointTerms:
    """The pieces of the right log joint, from which the known wrong ones are built."""

    right: np.ndarray
    weights: np.ndarray
    maha: np.ndarray
    log_det: np.ndarray
    const: np.ndarray
    sigma_maha: np.ndarray


def _normalised(scores: np.ndarray) -> np.ndarray:
    """Rows of non-negative scores divided by their sums (building wrong responsibilities)."""
    return scores / scores.sum(axis=1, keepdims=True)


#: Known wrong log joints, each with the corpus mutant that has it (tests/corpus/em.py).
LOG_JOINT_BUGS: Catalogue = (
    (
        KnownBug(
            "log_joint/log_joint_missing_weights",
            "it matches log N(x; mu_k, Sigma_k) without log pi_k: add the log mixture weights",
        ),
        lambda t: t.right - np.log(t.weights),
    ),
    (
        KnownBug(
            "log_joint/log_joint_adds_weights_not_log",
            "it matches pi_k + log N(...): add log pi_k, not pi_k",
        ),
        lambda t: t.right - np.log(t.weights) + t.weights,
    ),
    (
        KnownBug(
            "log_joint/log_joint_drops_normaliser",
            "the normaliser -(D/2) log 2pi - (1/2) log det Sigma_k is missing",
        ),
        lambda t: np.log(t.weights) - 0.5 * t.maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_missing_half_in_exponent",
            "the quadratic term lacks its 1/2: -(1/2) (x - mu)^T Sigma^-1 (x - mu)",
        ),
        lambda t: t.right - 0.5 * t.maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_missing_half_on_log_det",
            "log det Sigma_k lacks its 1/2",
        ),
        lambda t: t.right - 0.5 * t.log_det,
    ),
    (
        KnownBug(
            "log_joint/log_joint_sigma_not_inverse",
            "the quadratic form uses Sigma_k instead of its inverse",
        ),
        lambda t: np.log(t.weights) + t.const - 0.5 * t.sigma_maha,
    ),
    (
        KnownBug(
            "log_joint/log_joint_weights_squared",
            "the weights enter squared: use log pi_k once",
        ),
        lambda t: t.right - np.log(t.weights) + 2 * np.log(t.weights),
    ),
)


def log_joint_hint(
    got: np.ndarray, arrays: Arrays, want: Right, fallback: str = ""
) -> str:
    """Name the bug when ``got`` matches a known wrong log joint, else say which term to look at."""
    X, weights, means, covs = arrays
    d = X.shape[1]
    const = -0.5 * (d * np.log(2 * np.pi) + want.log_det)
    sigma_maha = np.stack(
        [np.einsum("nd,de,ne->n", X - m, c, X - m) for m, c in zip(means, covs)], 1
    )
    terms = _LogJointTerms(
        want.log_joint, weights, want.maha, want.log_det, const, sigma_maha
    )
    hint = hint_for(got, LOG_JOINT_BUGS, _matches, terms)
    if hint or fallback:
        return hint or fallback
    diff = got - want.log_joint
    if np.all(np.isfinite(diff)) and np.allclose(diff, diff[:1], rtol=1e-6, atol=1e-6):
        return (
            "the error is the same for every x_n, so look at the terms that do not depend on x: "
            "log pi_k, -(1/2) log det Sigma_k and -(D/2) log 2pi"
        )
    return (
        "the error changes with x_n: look at the quadratic form (x_n - mu_k)^T Sigma_k^-1 (x_n - mu_k) "
        "(the full covariance, its inverse, the matching component k, and the factor 1/2)"
    )


#: Known wrong responsibilities, built from the right log joint ``a``, the right
#: responsibilities ``r`` and the weights.
RESP_BUGS: Catalogue = (
    (
        KnownBug(
            "e_step/e_step_normalises_over_data",
            "they are normalised over the data axis: divide by the sum over components (axis=1)",
        ),
        lambda a, r, w: np.exp(a - logsumexp(a, axis=0)),
    ),
    (
        KnownBug(
            "e_step/e_step_missing_weights",
            "they ignore the mixture weights: r_nk is proportional to pi_k N(x_n; mu_k, Sigma_k)",
        ),
        lambda a, r, w: _normalised(r / w),
    ),
    (
        KnownBug(
            "e_step/e_step_hard_assignments",
            "they are hard (one-hot) assignments: keep the soft posterior probabilities",
        ),
        lambda a, r, w: np.eye(len(w))[np.argmax(a, axis=1)],
    ),
    (
        KnownBug(
            "e_step/e_step_returns_log_resp",
            "these are log-responsibilities: exponentiate them",
        ),
        lambda a, r, w: np.log(np.clip(r, 1e-300, None)),
    ),
    (
        KnownBug(
            "e_step/e_step_weights_squared",
            "the weights enter squared: multiply by pi_k once",
        ),
        lambda a, r, w: _normalised(r * w),
    ),
)


def resp_hint(got: np.ndarray, arrays: Arrays, want: Right, fallback: str = "") -> str:
    """Name the bug when responsibilities match a known wrong answer."""
    hint = hint_for(got, RESP_BUGS, _matches, want.log_joint, want.resp, arrays[1])
    return (
        hint
        or fallback
        or "compare with r_nk = exp(a_nk - logsumexp_j a_nj), a_nk = log pi_k + log N(x_n; mu_k, Sigma_k)"
    )


#: Known wrong log-likelihoods, built from the right log joint ``a``, the posterior ``r``
#: and the right total.
LOGLIK_BUGS: Catalogue = (
    (
        KnownBug(
            "e_step/e_step_loglik_mean_over_points",
            "it is the mean over points: return the sum over n",
        ),
        lambda a, r, right: np.asarray(right / len(a)),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_negated",
            "it has the wrong sign: return log p(X), not -log p(X)",
        ),
        lambda a, r, right: np.asarray(-right),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_from_max",
            "it uses max_k a_nk: use logsumexp_k a_nk (sum over components inside the log)",
        ),
        lambda a, r, right: np.asarray(a.max(axis=1).sum()),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_expected_complete_data",
            "it is the expected complete-data log-likelihood sum r_nk a_nk, not log p(X) = sum_n logsumexp_k a_nk",
        ),
        lambda a, r, right: np.asarray((r * a).sum()),
    ),
    (
        KnownBug(
            "e_step/e_step_loglik_resp_entropy",
            "it is sum r log r: use sum_n logsumexp_k a_nk",
        ),
        lambda a, r, right: np.asarray(xlogy(r, r).sum()),
    ),
)


def loglik_hint(got: float, want: Right, fallback: str = "") -> str:
    """Name the bug when the log-likelihood matches a known wrong total."""
    hint = hint_for(
        np.asarray(got), LOGLIK_BUGS, _matches, want.log_joint, want.resp, want.loglik
    )
    return (
        hint
        or fallback
        or "log p(X) = sum_n logsumexp_k (log pi_k + log N(x_n; mu_k, Sigma_k))"
    )


def free_energy_parts(q: np.ndarray, want: Right) -> tuple[float, float, float]:
    """``(energy -sum q a, entropy -sum q log q, -log-likelihood)`` from the right answers."""
    energy = -float(np.sum(np.where(q > 0, q * want.log_joint, 0.0)))
    return energy, -float(xlogy(q, q).sum()), -want.loglik


@dataclass(frozen=True)
class _FreeEnergyTerms:
    """The pieces of the right free energy, from which the known wrong ones are built."""

    energy: float
    entropy: float
    neg_loglik: float
    q: np.ndarray
    weights: np.ndarray
    resp: np.ndarray

    @property
    def right(self) -> float:
        return self.energy - self.entropy


#: Known wrong free energies (tests/corpus/em.py has a mutant for each).
FREE_ENERGY_BUGS: Catalogue = (
    (
        KnownBug(
            "free_energy/free_energy_missing_entropy",
            "the entropy term is missing: F = -sum q log p(x, z) + sum q log q",
        ),
        lambda t: np.asarray(t.energy),
    ),
    (
        KnownBug(
            "free_energy/free_energy_wrong_sign",
            "the sign is flipped: F = -ELBO = -sum q (log p(x, z) - log q)",
        ),
        lambda t: np.asarray(-t.right),
    ),
    (
        KnownBug(
            "free_energy/free_energy_entropy_sign_flipped",
            "the entropy has the wrong sign: F = -sum q (log p(x, z) - log q)",
        ),
        lambda t: np.asarray(t.energy + t.entropy),
    ),
    (
        KnownBug(
            "free_energy/free_energy_mean_over_points",
            "it is averaged over points: F sums over n",
        ),
        lambda t: np.asarray(t.right / len(t.q)),
    ),
    (
        KnownBug(
            "free_energy/free_energy_ignores_q",
            "it does not depend on q (it is -log-likelihood): use the resp you are given",
        ),
        lambda t: np.asarray(t.neg_loglik),
    ),
    (
        KnownBug(
            "free_energy/free_energy_missing_weights",
            "log pi_k is missing: log p(x_n, z_n = k) = log pi_k + log N(x_n; mu_k, Sigma_k)",
        ),
        lambda t: np.asarray(t.right + np.sum(t.q * np.log(t.weights))),
    ),
    (
        KnownBug(
            "free_energy/free_energy_entropy_of_posterior",
            "the entropy is that of the posterior, not of the q you are given",
        ),
        lambda t: np.asarray(t.energy + xlogy(t.resp, t.resp).sum()),
    ),
)


def free_energy_hint(got: float, q: np.ndarray, arrays: Arrays, want: Right) -> str:
    """Name the bug when the free energy matches a known wrong formula."""
    if np.isnan(got):
        return "0 * log 0 must count as 0: use scipy.special.xlogy(q, q) or mask the zero entries of q"
    if not np.isfinite(got):
        return (
            "a log density became log(0) = -inf: compute log p(x_n, z_n = k) in log space "
            "(log pi_k + log N, never log of exp or of a density) and skip the terms where q is 0"
        )
    energy, entropy, neg_loglik = free_energy_parts(q, want)
    terms = _FreeEnergyTerms(energy, entropy, neg_loglik, q, arrays[1], want.resp)
    hint = hint_for(np.asarray(got), FREE_ENERGY_BUGS, _matches, terms)
    return (
        hint
        or "F(q) = -sum_n sum_k q_nk (log pi_k + log N(x_n; mu_k, Sigma_k) - log q_nk)"
    )


# --------------------------------------------------------------------------- log_joint


def log_joint_output(
    subject: Subject, arrays: Arrays, untouched: bool = False
) -> np.ndarray:
    """Call log_joint and check shape and dtype (and, if asked, that the inputs are left alone)."""
    X, weights = arrays[0], arrays[1]
    out = run_graded(subject, "log_joint", *arrays)
    if untouched:
        expect_untouched(out, "log_joint")
    value, (dtype,) = out["value"], out["dtypes"]
    shape = (len(X), len(weights))
    if value.shape != shape:
        transposed = (
            " (that is (K, N): rows must be data points, columns components)"
            if value.shape == shape[::-1]
            else ""
        )
        raise Failure(
            f"log_joint returned shape {value.shape}, expected (N, K) = {shape}{transposed}"
        )
    _expect_float64("log_joint", dtype)
    return value


@check(
    "log_joint",
    "returns an (N, K) float64 array and leaves its inputs unchanged",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def log_joint_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    value = log_joint_output(subject, make_arrays(problem), untouched=True)
    _expect_finite(
        value,
        "log_joint",
        "log densities of these ordinary points are finite: look for log(0) or overflow",
    )


@check(
    "log_joint",
    "equals log pi_k + log N(x_n; mu_k, Sigma_k) (scipy's density)",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def log_joint_closed_form(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    got = log_joint_output(subject, arrays)
    close(
        got,
        want.log_joint,
        "log_joint",
        lambda: log_joint_hint(got, arrays, want),
        **TIGHT,
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


@check(
    "log_joint",
    "permutes with data and components; shifts by -log|det A| under x -> Ax + b",
    points=0.5,
)
@SOME
@given(problem=mixtures())
@small_examples
def log_joint_equivariance(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    base = log_joint_output(subject, arrays)
    rows, components = _permutations(problem)
    permuted = log_joint_output(subject, _permuted(arrays, rows, components))
    close(
        permuted,
        base[rows][:, components],
        "log_joint of permuted data and components",
        **TIGHT,
        hint="row n must depend only on x_n and column k only on component k: check which axis you index or sum",
    )
    moved, log_det_a = _affine(problem, arrays)
    close(
        log_joint_output(subject, moved),
        base - log_det_a,
        "log_joint after x -> Ax + b",
        **TIGHT,
        hint="log N(Ax + b; A mu + b, A Sigma A^T) = log N(x; mu, Sigma) - log|det A|: "
        "check the -(1/2) log det Sigma_k term and that the quadratic form uses the full inverse",
    )


@check(
    "log_joint",
    "is exact far from every component and for ill-conditioned covariances",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def log_joint_extreme(subject: Subject, problem: Mixture) -> None:
    cases = [
        (
            "far",
            "points thousands of standard deviations away",
            {"rtol": 1e-9, "atol": 1e-6},
        ),
        (
            "ill",
            "covariances with condition number 1e7",
            {"rtol": 1e-7, "atol": 1e-7},
        ),
        (
            "tiny",
            "D = 70 with det(Sigma) below 1e-700",
            {"rtol": 1e-7, "atol": 1e-7},
        ),
    ]
    for kind, what, tol in cases:
        arrays, want = KINDS[kind](problem), right(problem, kind)
        got = log_joint_output(subject, arrays)
        _expect_finite(
            got,
            f"log_joint for {what}",
            "work in log space: use a Cholesky factor (log det = "
            "2 sum log diag L) or np.linalg.slogdet, never log(det(Sigma)) or log(exp(...))",
        )
        close(
            got,
            want.log_joint,
            f"log_joint for {what}",
            partial(log_joint_hint, got, arrays, want, _NUMERICS_HINT),
            **tol,
        )


# --------------------------------------------------------------------------- e_step


def e_step_output(
    subject: Subject, arrays: Arrays, untouched: bool = False, wired: bool = False
) -> tuple[np.ndarray, float]:
    """Call e_step and check the pair's shapes and dtypes (and, if asked, that inputs are left alone).

    ``wired``: with the student's own ``log_joint`` (see :func:`call`).
    """
    X, weights = arrays[0], arrays[1]
    out = run_graded(subject, "e_step", *arrays, wired=wired)
    if untouched:
        expect_untouched(out, "e_step")
    (resp, loglik), (resp_dtype, loglik_dtype) = out["value"], out["dtypes"]
    shape = (len(X), len(weights))
    if resp.shape != shape:
        transposed = (
            " (that is (K, N): rows must be data points, columns components)"
            if resp.shape == shape[::-1]
            else ""
        )
        raise Failure(
            f"resp has shape {resp.shape}, expected (N, K) = {shape}{transposed}"
        )
    if loglik.size != 1:
        raise Failure(
            f"the log-likelihood has shape {loglik.shape}: return one number, the sum over points of log p(x_n)"
        )
    _expect_float64("resp", resp_dtype)
    _expect_float64("the log-likelihood", loglik_dtype)
    return resp, float(loglik.reshape(()))


def _expect_rows_on_simplex(resp: np.ndarray, tolerance: float = 1e-12) -> None:
    _expect_finite(
        resp,
        "resp",
        "subtract the row maximum before exp, or normalise in log space with logsumexp",
    )
    sums = resp.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if resp.min() < -tolerance:
        raise Failure(
            f"resp has a negative entry ({resp.min():.4g}): did you return log-responsibilities? "
            "Return exp(log r)."
        )
    if abs(sums[worst] - 1.0) > tolerance:
        if np.allclose(resp.sum(axis=0), 1.0, rtol=0, atol=1e-9):
            raise Failure(
                f"rows of resp sum to {sums[worst]:.4g} (row {worst}), not 1, but the columns sum to 1: "
                "did you normalise over the data axis (axis=0) instead of over components (axis=1)?"
            )
        raise Failure(
            f"rows of resp sum to {sums[worst]:.12g} (row {worst}), not 1: divide by the sum over "
            "components, and if you clip small values, renormalise afterwards"
        )
    if resp.max() > 1.0 + tolerance:
        raise Failure(
            f"resp has an entry above 1 ({resp.max():.4g}): responsibilities are probabilities"
        )


@check(
    "e_step",
    "returns resp of shape (N, K) and one log-likelihood, and leaves its inputs unchanged",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def e_step_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    resp, loglik = e_step_output(subject, make_arrays(problem), untouched=True)
    _expect_finite(resp, "resp", "look for 0/0 or log(0)")
    _expect_finite(
        np.asarray(loglik), "the log-likelihood", "look for log(0) or overflow"
    )


@check("e_step", "rows of resp sum to 1 and every entry lies in [0, 1]", points=0.5)
@SOME
@given(problem=mixtures())
@small_examples
def e_step_rows_sum_to_one(subject: Subject, problem: Mixture) -> None:
    resp, _ = e_step_output(subject, make_arrays(problem))
    _expect_rows_on_simplex(resp)


@check(
    "e_step",
    "resp follow Bayes' rule and log-likelihood = sum_n logsumexp_k log p(x_n, k) (scipy)",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def e_step_closed_form(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    resp, loglik = e_step_output(subject, arrays)
    close(resp, want.resp, "resp", lambda: resp_hint(resp, arrays, want), **TIGHT)
    close(
        loglik,
        want.loglik,
        "the log-likelihood",
        lambda: loglik_hint(loglik, want),
        **TIGHT,
    )


@check(
    "e_step",
    "K = 1 gives resp = 1; identical components give resp = weights",
    points=0.5,
)
@FEW
@given(problem=mixtures())
@small_examples
def e_step_degenerate_mixtures(subject: Subject, problem: Mixture) -> None:
    X, weights, means, covs = make_arrays(problem)
    single = (X, np.ones(1), means[:1], covs[:1])
    resp, loglik = e_step_output(subject, single)
    close(
        resp,
        np.ones((len(X), 1)),
        "resp with one component",
        rtol=0,
        atol=1e-12,
        hint="with K = 1 every point belongs to that component",
    )
    close(
        loglik,
        float(multivariate_normal(means[0], covs[0]).logpdf(X).sum()),
        "the log-likelihood with one component",
        **TIGHT,
        hint="with K = 1 it is sum_n log N(x_n; mu, Sigma)",
    )
    k = len(weights)
    same = (X, weights, np.repeat(means[:1], k, 0), np.repeat(covs[:1], k, 0))
    resp, _ = e_step_output(subject, same)
    close(
        resp,
        np.tile(weights, (len(X), 1)),
        "resp with identical components",
        **TIGHT,
        hint="when all components are the same Gaussian the posterior is the prior, r_nk = pi_k: "
        "did you include the weights, and normalise over components?",
    )


@check(
    "e_step",
    "permuting data or components permutes resp; an affine change of coordinates leaves it unchanged",
    points=0.5,
)
@SOME
@given(problem=mixtures())
@small_examples
def e_step_equivariance(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    resp, loglik = e_step_output(subject, arrays)
    rows, components = _permutations(problem)
    resp_p, loglik_p = e_step_output(subject, _permuted(arrays, rows, components))
    close(
        resp_p,
        resp[rows][:, components],
        "resp of permuted data and components",
        **TIGHT,
        hint="row n must depend only on x_n and column k only on component k",
    )
    close(
        loglik_p,
        loglik,
        "the log-likelihood of permuted data and components",
        **TIGHT,
        hint="reordering points or components does not change log p(X)",
    )
    moved, log_det_a = _affine(problem, arrays)
    resp_a, loglik_a = e_step_output(subject, moved)
    close(
        resp_a,
        resp,
        "resp after x -> Ax + b",
        **TIGHT,
        hint="posteriors do not depend on the coordinates: check the quadratic form and log det Sigma_k",
    )
    close(
        loglik_a,
        loglik - len(arrays[0]) * log_det_a,
        "the log-likelihood after x -> Ax + b",
        **TIGHT,
        hint="it must shift by -N log|det A|: check the -(1/2) log det Sigma_k term",
    )


@check(
    "e_step",
    "finite one-hot resp and finite log-likelihood for points thousands of standard deviations away",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def e_step_far_points(subject: Subject, problem: Mixture) -> None:
    ordinary = ordinary_e_step_ok(subject, problem)
    arrays, want = far_arrays(problem), right(problem, "far")
    resp, loglik = e_step_output(subject, arrays)
    want_resp, want_loglik = want.resp, want.loglik
    naive = "exp(-4e6) underflows to 0 and 0/0 is NaN: normalise in log space, r = exp(a - logsumexp(a))"
    _expect_finite(resp, "resp far from every component", naive)
    _expect_finite(
        np.asarray(loglik),
        "the log-likelihood far from every component",
        "log(sum(exp(a))) underflows to log 0: use logsumexp (max + log sum exp(a - max))",
    )
    _expect_rows_on_simplex(resp)
    close_extreme(
        ordinary,
        resp,
        want_resp,
        "resp far from every component",
        partial(
            resp_hint,
            resp,
            arrays,
            want,
            "the component nearest in Mahalanobis distance gets responsibility 1",
        ),
        rtol=0,
        atol=1e-9,
    )
    close_extreme(
        ordinary,
        loglik,
        want_loglik,
        "the log-likelihood far from every component",
        partial(
            loglik_hint,
            loglik,
            want,
            "sum_n logsumexp_k a_nk stays exact when every a_nk is about -1e6",
        ),
        rtol=1e-9,
        atol=1e-6,
    )


@check(
    "e_step", "exact for ill-conditioned covariances and tiny determinants", points=0.25
)
@FEW
@given(problem=tabulated())
@small_examples
def e_step_ill_conditioned(subject: Subject, problem: Mixture) -> None:
    ordinary = ordinary_e_step_ok(subject, problem)
    for kind, what in (
        # The message names how the arrays are built from the failing input shown below it.
        (
            "ill",
            "covariances with condition number 1e7 (ill_conditioned_arrays(problem))",
        ),
        (
            "tiny",
            "D = 70 with det(Sigma) below 1e-700 (tiny_determinant_arrays(problem))",
        ),
    ):
        arrays, want = KINDS[kind](problem), right(problem, kind)
        resp, loglik = e_step_output(subject, arrays)
        want_resp, want_loglik = want.resp, want.loglik
        hint = "use a Cholesky factor or np.linalg.solve and slogdet; never log(det(Sigma)), exp then log, nor added jitter"
        _expect_finite(resp, f"resp for {what}", hint)
        _expect_finite(np.asarray(loglik), f"the log-likelihood for {what}", hint)
        close_extreme(
            ordinary,
            resp,
            want_resp,
            f"resp for {what}",
            partial(resp_hint, resp, arrays, want, hint),
            rtol=1e-6,
            atol=1e-7,
        )
        close_extreme(
            ordinary,
            loglik,
            want_loglik,
            f"the log-likelihood for {what}",
            partial(loglik_hint, loglik, want, hint),
            rtol=1e-7,
            atol=1e-7,
        )


# --------------------------------------------------------------------------- free_energy


def free_energy_output(
    subject: Subject,
    q: np.ndarray,
    arrays: Arrays,
    untouched: bool = False,
    wired: bool = False,
) -> float:
    """Call free_energy and check it returned one float64 number (and, if asked, left its inputs alone).

    ``wired``: with the student's own ``log_joint`` (see :func:`call`).
    """
    X, weights, means, covs = arrays
    out = run_graded(subject, "free_energy", X, q, weights, means, covs, wired=wired)
    if untouched:
        expect_untouched(out, "free_energy")
    value, (dtype,) = out["value"], out["dtypes"]
    if value.size != 1:
        raise Failure(
            f"free_energy returned shape {value.shape}: return one number, summed over points and components"
        )
    _expect_float64("free_energy", dtype)
    return float(value.reshape(()))


@check("free_energy", "returns one number and leaves its inputs unchanged", points=0.5)
@FEW
@given(problem=mixtures())
@small_examples
def free_energy_shape_and_inputs(subject: Subject, problem: Mixture) -> None:
    arrays = make_arrays(problem)
    # q has exact zeros: a student who "avoids log 0" by writing into resp is caught here.
    q = random_q(problem, (problem.n_points, problem.n_components), zeros=True)
    # The one free_energy property run with the student's own log_joint, as it is wired.
    free_energy_output(subject, q, arrays, untouched=True, wired=True)


@check("free_energy", "F at the exact posterior equals -log-likelihood", points=1)
@GRADING
@given(problem=tabulated())
@small_examples
def free_energy_at_posterior(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    got = free_energy_output(subject, want.resp, arrays)
    close(
        got,
        -want.loglik,
        "F(posterior)",
        lambda: free_energy_hint(got, want.resp, arrays, want),
        **TIGHT,
    )


@check(
    "free_energy",
    "F(q) = -log-likelihood + sum_n KL(q_n || posterior_n) >= -log-likelihood",
    points=1,
)
@GRADING
@given(problem=tabulated())
@small_examples
def free_energy_gibbs_identity(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    q = random_q(problem, (problem.n_points, problem.n_components), zeros=False)
    got = free_energy_output(subject, q, arrays)
    energy, entropy, neg_loglik = free_energy_parts(q, want)
    if got < neg_loglik - 1e-9 * abs(neg_loglik):
        raise Failure(
            f"F(q) = {got:.6g} is below -log-likelihood = {neg_loglik:.6g}, but F(q) >= -log p(X) "
            f"for every q: {free_energy_hint(got, q, arrays, want)}"
        )
    close(
        got,
        energy - entropy,
        "F(q)",
        lambda: free_energy_hint(got, q, arrays, want),
        **TIGHT,
    )


@check(
    "free_energy",
    "finite and exact with exact zeros in q (0 log 0 = 0), one-hot q and far points",
    points=0.5,
)
@FEW
@given(problem=tabulated())
@small_examples
def free_energy_zeros(subject: Subject, problem: Mixture) -> None:
    arrays, want = make_arrays(problem), right(problem)
    far, want_far = far_arrays(problem), right(problem, "far")
    shape = (problem.n_points, problem.n_components)
    cases = [
        (random_q(problem, shape, zeros=True), arrays, want, "q with exact zeros"),
        (np.eye(shape[1])[np.arange(shape[0]) % shape[1]], arrays, want, "one-hot q"),
        (
            want_far.resp,
            far,
            want_far,
            "the one-hot posterior of points thousands of standard deviations away",
        ),
    ]
    for q, case, case_want, what in cases:
        got = free_energy_output(subject, q, case)
        energy, entropy, _ = free_energy_parts(q, case_want)
        if not np.isfinite(got):
            raise Failure(
                f"F for {what} is {got}: {free_energy_hint(got, q, case, case_want)}"
            )
        hint = partial(free_energy_hint, got, q, case, case_want)
        close(got, energy - entropy, f"F for {what}", hint, rtol=1e-9, atol=1e-8)
