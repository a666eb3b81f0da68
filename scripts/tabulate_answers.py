"""Write the right answers the public checks ship: ``autograder/checks/*_answers.py``.

The public checks hold no function that computes a graded answer (issue 19); they compare
against values written here for fixed inputs, computed from the reference by the hidden
tier:

- ``em_answers.py``: the mixtures of :data:`autograder.checks.em.TABULATED` (every kind of
  arrays in :data:`~autograder.checks.em.KINDS`), by :func:`autograder.hidden.em.right_of`;
- ``score_answers.py``: ``gaussian_score`` on :data:`autograder.checks.score.TABULATED_SCORES`
  and the estimators' exact estimates on :data:`autograder.checks.score.TABULATED_ESTIMATES`,
  by :func:`autograder.hidden.score.tabulated_answers`;
- ``elbo_answers.py``: ``mixture_log_prob`` (values and gradients) on
  :data:`autograder.checks.elbo.TABULATED_MIXTURES` and ``elbo_score_grad`` on
  :data:`autograder.checks.elbo.TABULATED_SCORE_CASES`, by
  :func:`autograder.hidden.elbo.tabulated_answers`;
- ``vae_answers.py``: ``gaussian_kl``, ``bernoulli_log_likelihood`` and the per-image negative
  ELBO on :data:`autograder.checks.vae.TABULATED`, by
  :func:`autograder.hidden.vae.tabulated_answers`.

Rerun after changing those inputs or how their arrays are built; each module's
``tests/test_autograder/test_check_<module>.py`` checks its file is current.

Usage: python scripts/tabulate_answers.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.tables import render  # noqa: E402


def em_table() -> dict[str, np.ndarray]:
    """Every field of every tabulated ``01_em`` answer, by :func:`answer_key` and field name."""
    from autograder.checks.em import KINDS, TABULATED, Right, answer_key
    from autograder.hidden.em import right_of

    out = {}
    for problem in TABULATED:
        for kind, build in KINDS.items():
            want = right_of(build(problem))
            for field in Right.FIELDS:
                out[f"{answer_key(problem, kind)}/{field}"] = np.asarray(
                    getattr(want, field), dtype=np.float64
                )
    return out


def score_table() -> dict[str, np.ndarray]:
    from autograder.hidden.score import tabulated_answers

    return tabulated_answers()


def vae_table() -> dict[str, np.ndarray]:
    from autograder.hidden.vae import tabulated_answers

    return tabulated_answers()


def elbo_table() -> dict[str, np.ndarray]:
    from autograder.hidden.elbo import tabulated_answers

    return tabulated_answers()


#: Each answers module: how to build its table, what it holds, and who reads it.
TABLES: dict[str, tuple[Callable[[], dict[str, np.ndarray]], str, str]] = {
    "em_answers.py": (
        em_table,
        "The right answers of ``01_em`` for the tabulated mixtures",
        ":func:`autograder.checks.em.right`",
    ),
    "score_answers.py": (
        score_table,
        "The right ``gaussian_score`` and estimates of ``02_score`` for the tabulated problems",
        ":func:`autograder.checks.score.tabulated_scores` and "
        ":func:`autograder.checks.score.tabulated_estimate`",
    ),
    "elbo_answers.py": (
        elbo_table,
        "The right ``mixture_log_prob`` and ``elbo_score_grad`` of ``04_elbo`` for the "
        "tabulated cases",
        ":func:`autograder.checks.elbo.tabulated_mixture` and "
        ":func:`autograder.checks.elbo.tabulated_score`",
    ),
    "vae_answers.py": (
        vae_table,
        "The right KL, log-likelihood and negative ELBO of ``05_vae`` for the tabulated batches",
        ":func:`autograder.checks.vae.tabulated`",
    ),
}


def main() -> int:
    for name, (build, what, reader) in TABLES.items():
        target = ROOT / "autograder" / "checks" / name
        target.write_text(render(build(), what, reader))
        print(f"{target.relative_to(ROOT)} ({len(target.read_bytes()) >> 10} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
