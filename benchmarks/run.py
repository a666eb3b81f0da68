"""Benchmarks: our references against named baselines, interleaved in one process.

Prints ratios (baseline time / our time; > 1 means we are faster), best of ``--repeats``
runs of each, alternating so that machine noise hits both sides alike. Not a test: no
assertion on time anywhere.

Usage: python benchmarks/run.py [--quick] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.reference import em, reparam, score
from course_lib.reference.vae import VAE, train_vae


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(
    ours: Callable[[], object], baseline: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Alternate the two, best of ``repeats`` each."""
    ours(), baseline()  # warm-up
    t_ours, t_base = [], []
    for _ in range(repeats):
        t_ours.append(best_of(ours, 1))
        t_base.append(best_of(baseline, 1))
    return min(t_ours), min(t_base)


def bench_e_step(quick: bool, repeats: int) -> tuple[str, float, float]:
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


def bench_score(quick: bool, repeats: int) -> tuple[str, float, float]:
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


def bench_pathwise(quick: bool, repeats: int) -> tuple[str, float, float]:
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


class _ExamplesVAE(torch.nn.Module):
    """784-400-20 with a sigmoid decoder, as in pytorch/examples' vae/main.py."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = (
            torch.nn.Linear(784, 400),
            torch.nn.Linear(400, 20),
            torch.nn.Linear(400, 20),
        )
        self.fc3, self.fc4 = torch.nn.Linear(20, 400), torch.nn.Linear(400, 784)

    def forward(self, x):
        h = torch.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z)))), mu, logvar


class _ImageDataset(torch.utils.data.Dataset):
    """Per-item uint8 image -> float tensor in [0, 1], as torchvision's MNIST + ToTensor do."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = (images * 255).astype(np.uint8).reshape(-1, 28, 28)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0), 0


def _baseline_epoch(images: np.ndarray) -> None:
    torch.manual_seed(0)
    model = _ExamplesVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        _ImageDataset(images), batch_size=128, shuffle=True
    )
    model.train()
    for data, _ in loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        bce = torch.nn.functional.binary_cross_entropy(
            recon, data.view(-1, 784), reduction="sum"
        )
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        (bce + kld).backward()
        optimizer.step()


def bench_vae(quick: bool, repeats: int) -> tuple[str, float, float]:
    from course_lib.data import load_mnist

    images, _ = load_mnist()
    images = images[: 2000 if quick else 5000]
    torch.manual_seed(0)

    def ours():
        train_vae(VAE(), images, epochs=1, device="cpu")

    t_ours, t_base = compare(ours, lambda: _baseline_epoch(images), repeats)
    n = len(images)
    return (
        f"VAE training, 1 epoch of {n:,} MNIST images, batch 128, 784-400-20, CPU (images/s: ours {n / t_ours:,.0f}, baseline {n / t_base:,.0f}) vs a pytorch/examples-style DataLoader loop",
        t_ours,
        t_base,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, for a smoke run"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    lines = [
        f"Machine: {machine}",
        "",
        "| benchmark | ours (s) | baseline (s) | speed-up (baseline / ours) |",
        "|---|---|---|---|",
    ]
    print(lines[0], flush=True)
    for bench in (bench_e_step, bench_score, bench_pathwise, bench_vae):
        name, ours, base = bench(args.quick, args.repeats)
        lines.append(f"| {name} | {ours:.4f} | {base:.4f} | {base / ours:.2f}x |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text(
            "# Benchmarks\n\n`make bench` (benchmarks/run.py): best of 5 interleaved runs per side, ratios in one process.\n\n"
            + "\n".join(lines)
            + "\n"
        )


if __name__ == "__main__":
    main()
