"""Timings of ``autograde report`` and ``autograde similar`` on a synthetic class of N students.

The class is built from a class that was really graded (``--from OUT`` with its ``SUBMITTED``):
synthetic student ``sNNN`` gets, for each assignment, the results.json and grading.json of a graded submission
drawn with a fixed seed (timings scaled by a random factor in [0.8, 1.25]) and a copy of that
submission's notebook with variation: every code cell's local names renamed with a per-student
suffix in some functions, comments added, blank lines shuffled, so no two notebooks are equal
byte for byte and copydetect's tokeniser (which folds names) still sees the shared code.
No grading happens here: only the two commands are timed. Not a test: nothing is asserted.

Usage: python benchmarks/instructor_scale.py --from OUT --submitted SUBMITTED [--students 300]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.grader.classreport import write_report
from autograder.grader.similar import write_similar

ROOT = Path(__file__).resolve().parents[1]


def _vary(source: str, rng: random.Random, tag: str) -> str:
    lines = source.splitlines()
    out = []
    for line in lines:
        if rng.random() < 0.15:
            out.append(
                f"{' ' * (len(line) - len(line.lstrip()))}# note {tag} {rng.randint(0, 99)}"
            )
        out.append(line)
    text = "\n".join(out)
    if rng.random() < 0.5:  # rename a local in one function, as a student would
        text = re.sub(r"\btable\b", f"table_{tag}", text)
    return text


def _copy_one(
    source: Path,
    submitted: Path,
    new_out: Path,
    new_submitted: Path,
    student: str,
    index: int,
    rng: random.Random,
) -> None:
    """One synthetic submission: the results of ``source`` and a varied copy of its notebook."""
    assignment = source.parent.name
    results = json.loads(source.read_text())
    results["extra_data"]["student_id"] = student
    folder = new_out / student / assignment
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    timing_path = source.with_name("grading.json")
    if timing_path.is_file():
        timing = json.loads(timing_path.read_text())
        factor = rng.uniform(0.8, 1.25)
        timing["seconds"] = timing.get("seconds", 0) * factor
        timing["tests"] = {
            k: v * factor for k, v in (timing.get("tests") or {}).items()
        }
        (folder / "grading.json").write_text(json.dumps(timing))
    notebook = (
        submitted / source.parent.parent.name / assignment / f"{assignment}.ipynb"
    )
    if notebook.is_file():
        try:
            data = json.loads(notebook.read_text())
            for cell in data.get("cells", []):
                if cell.get("cell_type") == "code":
                    text = cell["source"]
                    text = "".join(text) if isinstance(text, list) else text
                    cell["source"] = _vary(text, rng, str(index))
            payload = json.dumps(data)
        except (ValueError, KeyError, TypeError):
            payload = notebook.read_text(errors="replace")
        where = new_submitted / student / assignment
        where.mkdir(parents=True)
        (where / f"{assignment}.ipynb").write_text(payload)


def synthesise(
    out: Path, submitted: Path, target: Path, students: int, seed: int = 0
) -> tuple[Path, Path]:
    """``target/out`` and ``target/submitted`` with ``students`` synthetic students."""
    rng = random.Random(seed)
    graded = sorted(out.glob("*/*/results.json"))
    if not graded:
        raise SystemExit(f"no results.json under {out}")
    new_out, new_submitted = target / "out", target / "submitted"
    by_assignment: dict[str, list[Path]] = {}
    for path in graded:
        by_assignment.setdefault(path.parent.name, []).append(path)
    for index in range(students):
        student = f"s{index:03d}"
        for _assignment, sources in sorted(by_assignment.items()):
            _copy_one(
                rng.choice(sources),
                submitted,
                new_out,
                new_submitted,
                student,
                index,
                rng,
            )
    return new_out, new_submitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--submitted", type=Path, required=True)
    parser.add_argument("--students", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="instructor-scale-") as tmp:
        out, submitted = synthesise(
            args.source, args.submitted, Path(tmp), args.students
        )
        start, cpu = time.perf_counter(), time.process_time()
        page, _table, report = write_report(out)
        report_s = time.perf_counter() - start
        report_cpu = time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        _page, pairs, _notes = write_similar(
            submitted, Path(tmp), release_root=ROOT, threshold=0.5
        )
        similar_s = time.perf_counter() - start
        similar_cpu = time.process_time() - cpu
        notebooks = sum(1 for _ in submitted.glob("*/*/*.ipynb"))
        print(
            f"{args.students} synthetic students ({report['submissions']} results, "
            f"{notebooks} notebooks): report {report_s:.1f} s wall, {report_cpu:.1f} s CPU "
            f"({page.stat().st_size / 1e3:.0f} kB), similar {similar_s:.1f} s wall, "
            f"{similar_cpu:.1f} s CPU "
            f"({len(pairs)} pairs >= 50%)"
        )
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
