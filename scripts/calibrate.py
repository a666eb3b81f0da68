"""Calibrate every statistical check: run the reference through it on many fresh seeds.

Each statistical property states ``alpha``, its false-failure probability for a correct
implementation. This reruns it ``--reps`` times against the reference with different seed
offsets (``AUTOGRADER_SEED_OFFSET``) and prints observed failures next to the stated rate,
with a one-sided 95% upper bound (Clopper–Pearson) on the observed rate. Not run in CI.

Usage: python scripts/calibrate.py [--reps 200] [--tasks e_step ...] [--out reports/calibration.md]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("AUTOGRADER_SHRINK", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import beta

from autograder.core import run_property
from autograder.subject import LocalSubject
from autograder.tasks import TASKS, properties


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [
        f"Reference run through each statistical check on {args.reps} seed offsets.",
        "",
        "| property | stated false-failure rate | failures | observed rate | 95% upper bound | seconds/run |",
        "|---|---|---|---|---|---|",
    ]
    for task_id in args.tasks:
        module = importlib.import_module(
            f"course_lib.reference.{TASKS[task_id].module}"
        )
        names = {n: getattr(module, n) for n in module.__all__}
        subject = LocalSubject(names)
        for prop in properties(task_id):
            if prop.alpha is None:
                continue
            failures, start = 0, time.perf_counter()
            for rep in range(1, args.reps + 1):
                os.environ["AUTOGRADER_SEED_OFFSET"] = str(rep)
                result = run_property(prop, subject)
                failures += not result.passed
            os.environ.pop("AUTOGRADER_SEED_OFFSET", None)
            per_run = (time.perf_counter() - start) / args.reps
            upper = float(beta.ppf(0.95, failures + 1, args.reps - failures))
            lines.append(
                f"| {prop.test_name} | {prop.alpha:.1e} | {failures} | {failures / args.reps:.2e} | {upper:.2e} | {per_run:.2f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.out:
        args.out.write_text("# Calibration of the statistical checks\n\n" + text + "\n")


if __name__ == "__main__":
    main()
