"""Throughput of grading on Dask (1 and 2 workers) against the local ``--jobs`` path.

Grades the honest students of the demo class (``examples/submitted``: ``ada_correct`` and
``ben_partly_wrong``) with ``autograde grade --jobs 1`` and ``--jobs 2``, then on a
``LocalCluster`` on 127.0.0.1 with 1 and with 2 one-thread Dask workers, each twice: *cold*
(the first run: every Dask worker starts its judge, which imports torch and starts its zygote)
and *warm* (``--force`` on the same cluster: the judges are already up, as on a cluster that
grades assignment after assignment). Prints seconds, submissions per minute and the ratio to
``--jobs 1`` (wall clock includes each CLI process's start; the LocalCluster's own start is
not counted), and checks that every run's results.json files are byte-identical.

Ratios, not absolute times, are what carry over between machines; on a machine with 2 cores,
2 Dask workers cannot beat ``--jobs 2`` (same processes plus Dask's messages).

Usage: ``python scripts/cluster_throughput.py [--students ...] [--assignments ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.grader_throughput import (  # noqa: E402
    HONEST,
    copy_class,
    run_autograde,
)


def results(out: Path) -> dict[str, bytes]:
    """Every results.json under ``out``, by relative path."""
    return {
        str(p.relative_to(out)): p.read_bytes() for p in out.glob("*/*/results.json")
    }


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two runs' results.json files: per test, the score or the text."""
    lines = []
    for name, content in sorted(results(a).items()):
        other = (b / name).read_bytes() if (b / name).is_file() else b""
        if content == other:
            continue
        if not other:
            lines.append(f"{name}: missing")
            continue
        tests_a = {t["name"]: t for t in json.loads(content)["tests"]}
        tests_b = {t["name"]: t for t in json.loads(other)["tests"]}
        changed = [
            f"{t} ({tests_a[t]['score']} vs {tests_b.get(t, {}).get('score')})"
            for t in tests_a
            if tests_a[t] != tests_b.get(t)
        ]
        lines.append(f"{name}: {'; '.join(changed) or 'summary or notes differ'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", nargs="+", default=list(HONEST))
    parser.add_argument(
        "--assignments",
        nargs="+",
        default=["01_em", "02_score", "03_reparam", "04_elbo", "05_vae"],
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--keep", type=Path, help="work in this (new) folder and keep the outputs"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import dask
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory(prefix="cluster-throughput-") as tmp:
        base = args.keep or Path(tmp)
        pairs = copy_class(args.students, args.assignments, base / "submitted")
        if not pairs:
            print("no submissions: run python scripts/make_demo_class.py first")
            return 2
        rows: list[tuple[str, float]] = []
        outputs: list[Path] = []
        for jobs in args.workers:
            out = base / f"jobs{jobs}"
            rows.append(
                (
                    f"autograde grade --jobs {jobs}",
                    run_autograde(base / "submitted", out, "--jobs", str(jobs)),
                )
            )
            outputs.append(out)
        for workers in args.workers:
            settings = {"distributed.scheduler.worker-saturation": 1.0}
            with dask.config.set(settings):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            try:
                out = base / f"dask{workers}"
                address = ("--scheduler", cluster.scheduler_address)
                cold = run_autograde(base / "submitted", out, *address)
                warm = run_autograde(base / "submitted", out, *address, "--force")
            finally:
                cluster.close()
            rows.append((f"--scheduler, {workers} Dask worker(s), cold", cold))
            rows.append((f"--scheduler, {workers} Dask worker(s), warm", warm))
            outputs.append(out)
        reference = results(outputs[0])
        unequal = [str(o.name) for o in outputs[1:] if results(o) != reference]
        for other in outputs[1:]:
            for line in differences(outputs[0], other):
                print(f"{outputs[0].name} vs {other.name}: {line}")
        n = len(pairs)
        print(
            f"{n} submissions ({', '.join(args.students)} x {', '.join(args.assignments)}), "
            f"{os.cpu_count()} CPUs\n"
        )
        print("| run | seconds | submissions/min | vs --jobs 1 |")
        print("|---|---|---|---|")
        for name, seconds in rows:
            print(
                f"| {name} | {seconds:.1f} | {60 * n / seconds:.1f} | {rows[0][1] / seconds:.2f}x |"
            )
        print(
            "\nresults.json byte-identical across all runs: "
            + (
                "yes"
                if not unequal and len(reference) == n
                else f"NO ({', '.join(unequal)})"
            )
        )
        return 1 if unequal else 0


if __name__ == "__main__":
    sys.exit(main())
