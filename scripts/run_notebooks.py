"""Run notebooks top to bottom without Jupyter: for a machine with torch but no kernel stack.

The GPU machine lent to this project has torch, matplotlib and scipy but no ipykernel,
jupyter_client or nbformat, and nothing can be installed there but carried wheels. Each
notebook runs in a fresh Python process of its own: its code cells in order, in one
namespace, with IPython-only lines made harmless exactly as the CI grader does it
(``autograder.grader.submissions.strip_magics``) and matplotlib on Agg. A cell that raises, or any
output on stderr (nbgrader scores such a grade cell 0), fails the notebook.

Usage: python scripts/run_notebooks.py [--timeout S] NOTEBOOK...   (exit 1 if any failed)
Prints one line per notebook: name, seconds, cells, the device it used, verdict.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: one notebook, cells in order; prints a JSON line on stdout at the end.
_CHILD = r"""
import contextlib, io, json, os, sys, time, traceback
sys.path.insert(0, sys.argv[2])  # this checkout, whatever the notebook's folder
import matplotlib
matplotlib.use("Agg")
from autograder.grader.submissions import strip_magics

path = sys.argv[1]
os.chdir(os.path.dirname(os.path.abspath(path)))
cells = [c for c in json.load(open(path, encoding="utf-8"))["cells"] if c.get("cell_type") == "code"]
namespace = {"__name__": "__main__"}
err = io.StringIO()
report = {"cells": len(cells), "failed_cell": None, "error": None}
start = time.perf_counter()
for number, cell in enumerate(cells, start=1):
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    try:
        with contextlib.redirect_stderr(err):
            exec(compile(strip_magics(source), f"<cell {number}>", "exec"), namespace)
    except BaseException:
        report["failed_cell"] = number
        report["error"] = traceback.format_exc(limit=-3)
        break
import torch
report["seconds"] = time.perf_counter() - start
report["cuda"] = torch.cuda.is_available()
report["stderr"] = err.getvalue()[-2000:]
print("\n" + json.dumps(report))
"""


def run(notebook: Path, timeout: float) -> bool:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(notebook), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"{notebook.name}: TIMEOUT after {timeout:.0f} s")
        return False
    wall = time.perf_counter() - start
    last = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        report = json.loads(last[0])
    except json.JSONDecodeError:
        print(
            f"{notebook.name}: CRASHED (exit {done.returncode}) {done.stderr[-1500:]}"
        )
        return False
    device = "cuda" if report["cuda"] else "cpu"
    if report["failed_cell"] is not None:
        print(
            f"{notebook.name}: FAILED in code cell {report['failed_cell']} "
            f"of {report['cells']}\n{report['error']}"
        )
        return False
    stderr = report["stderr"] + done.stderr
    if stderr.strip():
        print(f"{notebook.name}: FAILED: wrote to stderr:\n{stderr[-1500:]}")
        return False
    print(
        f"{notebook.name}: ok, {report['seconds']:.1f} s in cells ({wall:.1f} s with start-up), "
        f"{report['cells']} code cells, torch.cuda.is_available()={report['cuda']} ({device})"
    )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    results = [run(path.resolve(), args.timeout) for path in args.notebooks]
    print(f"notebooks: {sum(results)} of {len(results)} ran clean")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
