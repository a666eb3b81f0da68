"""Where a CPU training step of the 784-400-20 VAE spends its time, and what cutting buys.

Profiles ``train_vae`` on the CPU with ``torch.profiler`` (time per aten operator), then
times, interleaved in one process, the same epoch four ways:

* ``dataloader``: the pytorch/examples loop (the baseline of ``benchmarks/run.py``);
* ``train_vae``: the reference (data in one tensor, fused Adam, autograd);
* ``fused_loss``: the reference loop with the negative ELBO and its gradient in one
  ``autograd.Function`` (analytic backward: ``(sigmoid(l) - x) / B``, ``mu / B``,
  ``(exp(logvar) - 1) / (2B)``), i.e. what fusing the loss buys;
* ``manual``: forward and backward written out with ``addmm``/``mm`` into preallocated
  buffers, no autograd at all, plus fused Adam: what is left is the matrix products and the
  optimizer, the floor for any loop doing this arithmetic on this CPU.

The experimental variants are not used by the course: they round differently from the
autograd loop (so ``train_vae``'s CPU results would change) and ``manual`` knows only the
reference architecture. They exist to measure the ceiling honestly.

Usage: python benchmarks/cpu_step_profile.py [--images 5000] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vae_speed import dataloader_loop
from course_lib.reference.vae import VAE, reparameterize, train_vae


class _FusedNegativeElbo(torch.autograd.Function):
    """Batch mean of ``KL - log p(x|z)`` with its gradient written out (one pass each way)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor
    ) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, logits, mu, logvar)
        batch = x.shape[0]
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum()
        return (bce + kl) / batch

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, Tensor, Tensor]:  # type: ignore[override]
        x, logits, mu, logvar = ctx.saved_tensors
        scale = grad / x.shape[0]
        return (
            None,
            (torch.sigmoid(logits) - x) * scale,
            mu * scale,
            (logvar.exp() - 1.0) * (0.5 * scale),
        )


def _epoch_fused_loss(data: Tensor, seed: int) -> None:
    torch.manual_seed(0)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    for start in range(0, len(data), 128):
        batch = data[order[start : start + 128]]
        eps = torch.randn(batch.shape[0], 20, generator=generator)
        logits, mu, logvar = model(batch, eps)
        loss = _FusedNegativeElbo.apply(batch, logits, mu, logvar)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _manual_grads(layers: list[torch.nn.Linear], x: Tensor, eps: Tensor) -> None:
    """Write d(negative ELBO)/d(every weight and bias) into their ``.grad`` (no autograd)."""
    enc, mean, logv, dec, out = layers
    b = x.shape[0]
    h1 = torch.relu(torch.addmm(enc.bias, x, enc.weight.t()))
    mu = torch.addmm(mean.bias, h1, mean.weight.t())
    logvar = torch.addmm(logv.bias, h1, logv.weight.t())
    std = torch.exp(0.5 * logvar)
    z = reparameterize(mu, logvar, eps)
    h2 = torch.relu(torch.addmm(dec.bias, z, dec.weight.t()))
    logits = torch.addmm(out.bias, h2, out.weight.t())
    # d loss / d logits, then back through the decoder
    g_logits = (torch.sigmoid(logits) - x).div_(b)
    torch.mm(g_logits.t(), h2, out=out.weight.grad)
    torch.sum(g_logits, 0, out=out.bias.grad)
    g_h2 = torch.mm(g_logits, out.weight).mul_(h2 > 0)
    torch.mm(g_h2.t(), z, out=dec.weight.grad)
    torch.sum(g_h2, 0, out=dec.bias.grad)
    g_z = torch.mm(g_h2, dec.weight)
    # z = mu + std * eps, KL = 0.5 sum(mu^2 + exp(logvar) - 1 - logvar) / b
    g_mu = g_z + mu / b
    g_logvar = g_z * eps * std * 0.5 + (logvar.exp() - 1.0) * (0.5 / b)
    torch.mm(g_mu.t(), h1, out=mean.weight.grad)
    torch.sum(g_mu, 0, out=mean.bias.grad)
    torch.mm(g_logvar.t(), h1, out=logv.weight.grad)
    torch.sum(g_logvar, 0, out=logv.bias.grad)
    g_h1 = torch.mm(g_mu, mean.weight).addmm_(g_logvar, logv.weight).mul_(h1 > 0)
    torch.mm(g_h1.t(), x, out=enc.weight.grad)
    torch.sum(g_h1, 0, out=enc.bias.grad)


def _layers(model: VAE) -> list[torch.nn.Linear]:
    return [
        model.encoder.hidden,
        model.encoder.mean,
        model.encoder.logvar,
        model.decoder.hidden,
        model.decoder.out,
    ]


def _epoch_manual(data: Tensor, seed: int) -> None:
    """Forward and backward by hand for the reference 784-400-20 VAE (no autograd)."""
    torch.manual_seed(0)
    model = VAE()
    layers = _layers(model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    with torch.no_grad():
        for start in range(0, len(data), 128):
            x = data[order[start : start + 128]]
            eps = torch.randn(x.shape[0], 20, generator=generator)
            _manual_grads(layers, x, eps)
            optimizer.step()


def check_gradients() -> float:
    """Largest gap between the hand-written and autograd gradients on one batch (float64)."""
    from course_lib.data import load_mnist
    from course_lib.reference.vae import negative_elbo

    torch.manual_seed(0)
    model = VAE().double()
    x = torch.from_numpy(load_mnist()[0][:100]).double()
    eps = torch.randn(100, 20, dtype=torch.float64)
    negative_elbo(x, *model(x, eps)).backward()
    expected = [torch.as_tensor(p.grad).clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        _manual_grads(_layers(model), x, eps)
    return max(
        float((torch.as_tensor(p.grad) - e).abs().max())
        for p, e in zip(model.parameters(), expected)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: keep)"
    )
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from course_lib.data import load_mnist

    images = load_mnist()[0][: args.images].astype(np.float32)
    data = torch.from_numpy(images)
    print(
        f"CPU, {torch.get_num_threads()} torch thread(s), {len(images):,} images x 1 epoch"
    )
    print(
        f"hand-written gradients vs autograd (float64): max gap {check_gradients():.1e}"
    )
    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        train_vae(VAE(), data[:1000], epochs=1, device="cpu")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_vae(VAE(), data, epochs=1, device="cpu")
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages)
        print("self CPU time by operator (train_vae, under the profiler):")
        for event in sorted(averages, key=lambda e: -e.self_cpu_time_total)[:8]:
            print(f"  {100 * event.self_cpu_time_total / total:5.1f}%  {event.key}")
    runs = {
        "dataloader": lambda: dataloader_loop(images, 1, torch.device("cpu")),
        "train_vae": lambda: train_vae(VAE(), data, epochs=1, device="cpu"),
        "fused_loss": lambda: _epoch_fused_loss(data, 0),
        "manual": lambda: _epoch_manual(data, 0),
    }
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    for name, seconds in best.items():
        print(
            f"  {name:<11} {seconds:.3f} s  {len(images) / seconds:8,.0f} images/s  "
            f"{best['dataloader'] / seconds:.2f}x the DataLoader loop, "
            f"{best['train_vae'] / seconds:.2f}x train_vae"
        )


if __name__ == "__main__":
    main()
