"""Write the right answers the public checks ship: ``autograder/checks/em_answers.py``.

The public checks of ``01_em`` hold no function that computes a graded answer; they compare
against the values written here for the mixtures of :data:`autograder.checks.em.TABULATED`
(every kind of arrays in :data:`~autograder.checks.em.KINDS`), computed from the reference
by :func:`autograder.hidden.em.right_of`. Rerun after changing those mixtures or how their
arrays are built; ``tests/test_autograder/test_check_em.py`` checks the file is current.

Usage: python scripts/tabulate_answers.py
"""

from __future__ import annotations

import base64
import io
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.checks.em import KINDS, TABULATED, Right, answer_key  # noqa: E402
from autograder.hidden.em import right_of  # noqa: E402

TARGET = ROOT / "autograder" / "checks" / "em_answers.py"


def table() -> dict[str, np.ndarray]:
    """Every field of every tabulated answer, by :func:`answer_key` and field name."""
    out = {}
    for problem in TABULATED:
        for kind, build in KINDS.items():
            want = right_of(build(problem))
            for field in Right.FIELDS:
                out[f"{answer_key(problem, kind)}/{field}"] = np.asarray(
                    getattr(want, field), dtype=np.float64
                )
    return out


def render(values: dict[str, np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **values)
    encoded = base64.b64encode(zlib.compress(buffer.getvalue(), 9)).decode()
    lines = "\n".join(f'    "{chunk}"' for chunk in textwrap.wrap(encoded, 80))
    return (
        '"""The right answers of ``01_em`` for the tabulated mixtures (data, not code).\n\n'
        "Written by ``scripts/tabulate_answers.py``; read by :func:`autograder.checks.em.right`.\n"
        '"""\n\n'
        "# A zlib-compressed numpy .npz archive, base64-encoded.\n"
        f"DATA = (\n{lines}\n)\n"
    )


def main() -> int:
    TARGET.write_text(render(table()))
    print(f"{TARGET.relative_to(ROOT)} ({len(TARGET.read_bytes()) >> 10} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
