"""Run the corpus through the checks and print detection rates (markdown) per assignment.

Usage: python scripts/mutation_report.py [module ...] [--out reports/mutation.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("AUTOGRADER_SHRINK", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.grade import run_task
from autograder.subject import LocalSubject
from autograder.tasks import ASSIGNMENTS, TASKS
from tests import corpus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("modules", nargs="*", default=list(ASSIGNMENTS.values()))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    entries = corpus.load(tuple(args.modules))
    rows = []
    # caught, mutants, full, variants
    per_module: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    seconds: dict[str, float] = defaultdict(float)
    for entry in entries:
        start = time.perf_counter()
        results = run_task(
            entry.task, LocalSubject(corpus.namespace(entry)), ("public", "hidden")
        )
        seconds[entry.module] += time.perf_counter() - start
        score = sum(r.score for r in results)
        full = score == TASKS[entry.task].points
        caught_by = [r.name for r in results if not r.passed]
        stats = per_module[entry.module]
        if entry.kind == "mutant":
            stats[0] += not full
            stats[1] += 1
        else:
            stats[2] += full
            stats[3] += 1
        rows.append((entry, score, caught_by))
    lines = [
        "| assignment | mutants caught | correct variants with full marks | seconds |",
        "|---|---|---|---|",
    ]
    total = [0, 0, 0, 0]
    for module, (caught, mutants, full, variants) in per_module.items():
        rate = caught / mutants if mutants else float("nan")
        lines.append(
            f"| {module} | {caught}/{mutants} ({rate:.1%}) | {full}/{variants} | {seconds[module]:.1f} |"
        )
        total = [t + s for t, s in zip(total, (caught, mutants, full, variants))]
    rate = total[0] / total[1] if total[1] else float("nan")
    lines.append(
        f"| **all** | {total[0]}/{total[1]} ({rate:.1%}) | {total[2]}/{total[3]} | {sum(seconds.values()):.1f} |"
    )
    lines += [
        "",
        "| task | implementation | kind | score | failed properties |",
        "|---|---|---|---|---|",
    ]
    for entry, score, caught_by in rows:
        lines.append(
            f"| {entry.task} | {entry.name} | {entry.kind} | {score:g}/{TASKS[entry.task].points:g} | {'; '.join(caught_by)} |"
        )
    if corpus.EQUIVALENT:
        lines += ["", "Left out (equivalent or statistically invisible):", ""]
        lines += [
            f"- `{name}` ({task}): {reason}"
            for name, (task, reason) in corpus.EQUIVALENT.items()
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text("# Mutation report\n\n" + text + "\n")


if __name__ == "__main__":
    main()
