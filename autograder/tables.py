"""Right answers shipped as data: the tables the public checks compare against.

A public check holds no function that computes a graded answer (issue 19); where it needs
the right value it reads it from a table written by ``scripts/tabulate_answers.py`` from the
reference, for a fixed list of inputs (``autograder/checks/<module>_answers.py``). This
module only encodes and decodes such tables.
"""

from __future__ import annotations

import base64
import functools
import importlib
import io
import textwrap
import zlib
from typing import Any

import numpy as np

__all__ = ["load", "render"]


@functools.cache
def load(module: str) -> dict[str, np.ndarray]:
    """The table held by ``module`` (its ``DATA``), by key.

    Args:
        module: A dotted module name, e.g. ``"autograder.checks.score_answers"``.
    """
    data = importlib.import_module(module).DATA
    with np.load(io.BytesIO(zlib.decompress(base64.b64decode(data)))) as archive:
        return {key: archive[key] for key in archive.files}


def render(values: dict[str, np.ndarray], what: str, reader: str) -> str:
    """The source of an answers module holding ``values``.

    Args:
        values: The table, arrays by key.
        what: What the table holds (its docstring's first line).
        reader: The function that reads it (named in the docstring).
    """
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {
        k: np.asarray(v, dtype=np.float64) for k, v in values.items()
    }
    np.savez(buffer, **arrays)
    encoded = base64.b64encode(zlib.compress(buffer.getvalue(), 9)).decode()
    lines = "\n".join(f'    "{chunk}"' for chunk in textwrap.wrap(encoded, 80))
    return (
        f'"""{what} (data, not code).\n\n'
        f"Written by ``scripts/tabulate_answers.py``; read by {reader}.\n"
        '"""\n\n'
        "# A zlib-compressed numpy .npz archive, base64-encoded.\n"
        f"DATA = (\n{lines}\n)\n"
    )
