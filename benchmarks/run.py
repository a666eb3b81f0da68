"""Benchmarks: our references against named baselines, interleaved in one process.

Prints ratios (baseline time / our time; > 1 means we are faster), best of ``--repeats``
runs of each, alternating so that machine noise hits both sides alike. Not a test: no
assertion on time anywhere.

The VAE rows (benchmarks/vae_speed.py) are on the CPU always and, where CUDA is present
(or with ``--device cuda``), on the GPU as well: DataLoader loop, ``train_vae`` and a plain
CUDA-graph step side by side.

The last table grades the demo class's honest students with ``autograde`` and with
``nbgrader autograde`` (scripts/grader_throughput.py), skipped with ``--no-grading``.

Usage: python benchmarks/run.py [--quick] [--device auto|cpu|cuda] [--repeats N]
[--no-grading] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vae_speed import vae_tables
from course_lib.reference import em, reparam, score


class Timing(NamedTuple):
    """Best wall-clock and best CPU seconds (this process) of one side over its repeats.

    CPU seconds of single-threaded work (OMP_NUM_THREADS=1) barely move when other
    processes share the machine, so their ratio is the steadier one on a busy machine.
    """

    wall: float
    cpu: float


def best_of(fn: Callable[[], object], repeats: int) -> Timing:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return Timing(min(walls), min(cpus))


def compare(
    ours: Callable[[], object], baseline: Callable[[], object], repeats: int
) -> tuple[Timing, Timing]:
    """Alternate the two, best of ``repeats`` each (wall and CPU seconds separately)."""
    ours(), baseline()  # warm-up
    t_ours, t_base = [], []
    for _ in range(repeats):
        t_ours.append(best_of(ours, 1))
        t_base.append(best_of(baseline, 1))
    return (
        Timing(min(t.wall for t in t_ours), min(t.cpu for t in t_ours)),
        Timing(min(t.wall for t in t_base), min(t.cpu for t in t_base)),
    )


def bench_e_step(quick: bool, repeats: int) -> tuple[str, Timing, Timing]:
    from sklearn.mixture import GaussianMixture

    n, k, d = (20_000 if quick else 100_000), 10, 10
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    covs = a @ a.transpose(0, 2, 1) / d + np.eye(d)
    gmm = GaussianMixture(k, covariance_type="full")
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covs
    gmm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(covs))
    ours, base = compare(
        lambda: em.e_step(X, weights, means, covs),
        lambda: gmm._estimate_log_prob_resp(X),
        repeats,
    )
    return (
        f"e_step vs scikit-learn `_estimate_log_prob_resp` (N={n:,}, K={k}, D={d}, float64)",
        ours,
        base,
    )


def bench_score(quick: bool, repeats: int) -> tuple[str, Timing, Timing]:
    s, d = (200_000 if quick else 1_000_000), 1
    mu = torch.tensor([0.3], dtype=torch.float64)
    log_sigma = torch.tensor([-0.2], dtype=torch.float64)

    def f(z, mu, log_sigma):
        return (z - 1.0).square().sum(-1)

    def make_q(mu, log_sigma):
        return torch.distributions.Normal(mu, log_sigma.exp())

    def baseline():
        m, ls = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
        q = torch.distributions.Normal(m, ls.exp())
        z = q.sample((s,))
        surrogate = (f(z, m, ls).detach() * q.log_prob(z).sum(-1)).mean()
        return torch.autograd.grad(surrogate, (m, ls))

    ours, base = compare(
        lambda: score.score_function_grad(f, make_q, (mu, log_sigma), s),
        baseline,
        repeats,
    )
    return (
        f"score_function_grad vs torch.distributions sample+log_prob surrogate (S={s:,}, D={d})",
        ours,
        base,
    )


def bench_pathwise(quick: bool, repeats: int) -> tuple[str, Timing, Timing]:
    s, d = (200_000 if quick else 1_000_000), 1
    mu = torch.tensor([0.3], dtype=torch.float64)
    log_sigma = torch.tensor([-0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)

    def f(z):
        return (z - 1.0).square().sum(-1)

    def ours():
        eps = torch.randn(s, d, generator=g, dtype=torch.float64)
        return reparam.reparam_grad(f, reparam.gaussian_rsample, (mu, log_sigma), eps)

    def baseline():
        m, ls = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
        z = torch.distributions.Normal(m, ls.exp()).rsample((s,))
        return torch.autograd.grad(f(z).mean(), (m, ls))

    t_ours, t_base = compare(ours, baseline, repeats)
    return (
        f"reparam_grad + gaussian_rsample vs torch.distributions rsample (S={s:,}, D={d}, noise drawn inside both)",
        t_ours,
        t_base,
    )


def grading_throughput(quick: bool) -> list[str]:
    """``scripts/grader_throughput.py``: the demo class's honest students graded by
    ``autograde --jobs 1``, ``--jobs 2`` and ``nbgrader autograde`` (the named baseline), wall
    and CPU ratios from one run (one student with --quick)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "grader_throughput.py"
    command = [
        sys.executable,
        str(script),
        *(["--students", "ada_correct"] if quick else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [
        "Grading throughput (autograde vs nbgrader autograde, same notebooks):",
        "",
    ]
    lines += [f"    {line}" for line in done.stdout.splitlines()]
    if done.returncode != 0:
        lines.append(f"    (exit {done.returncode}) {done.stderr[-2000:]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, for a smoke run"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="cuda: add the GPU VAE table (auto: where CUDA is present)",
    )
    parser.add_argument(
        "--vae-only",
        action="store_true",
        help="only the VAE tables (a GPU machine without scikit-learn)",
    )
    parser.add_argument(
        "--no-grading",
        action="store_true",
        help="skip the grading-throughput comparison with nbgrader (about 5 minutes)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the tables (markdown) to this file"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    lines = [
        f"Machine: {machine}",
        "",
        "| benchmark | ours (s) | baseline (s) | speed-up (baseline / ours) | CPU speed-up |",
        "|---|---|---|---|---|",
    ]
    print(lines[0], flush=True)
    for bench in () if args.vae_only else (bench_e_step, bench_score, bench_pathwise):
        name, ours, base = bench(args.quick, args.repeats)
        lines.append(
            f"| {name} | {ours.wall:.4f} | {base.wall:.4f} | {base.wall / ours.wall:.2f}x"
            f" | {base.cpu / ours.cpu:.2f}x |"
        )
        print(lines[-1], flush=True)
    devices = [torch.device("cpu")]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    for device in devices:
        vae_lines = vae_tables(device, args.quick, args.repeats)
        print("", *vae_lines, sep="\n", flush=True)
        lines += ["", *vae_lines]
    if not (args.vae_only or args.no_grading):
        grading = grading_throughput(args.quick)
        print("", *grading, sep="\n", flush=True)
        lines += ["", *grading]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
