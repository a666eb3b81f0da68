"""scripts/run_notebooks.py, the kernel-less runner the GPU check uses (no Jupyter there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # three Python processes that import torch


def _notebook(path: Path, *sources: str) -> Path:
    cells = [
        {"cell_type": "code", "metadata": {}, "outputs": [], "source": s}
        for s in sources
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4}))
    return path


def test_runs_cells_in_order_and_fails_on_an_error_or_stderr(tmp_path: Path) -> None:
    good = _notebook(
        tmp_path / "good.ipynb",
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nx = 2",
        ["y = x * 21\n", "plt.plot([y])\n", "assert y == 42"],
    )
    raises = _notebook(tmp_path / "raises.ipynb", "x = 1", "1 / 0", "x = 3")
    noisy = _notebook(tmp_path / "noisy.ipynb", "import sys; sys.stderr.write('oops')")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "run_notebooks.py"),
            good,
            raises,
            noisy,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout
    assert done.returncode == 1, lines + done.stderr
    assert (
        "good.ipynb: ok" in lines and "2 code cells" in lines
    )  # a str source, a list source
    assert "raises.ipynb: FAILED in code cell 2 of 3" in lines
    assert "ZeroDivisionError" in lines
    assert "noisy.ipynb: FAILED: wrote to stderr" in lines and "oops" in lines
    assert "notebooks: 1 of 3 ran clean" in lines
