"""VAE training speed: ``train_vae`` against a DataLoader loop and a plain CUDA-graph step.

Three ways to train the same 784-400-20 VAE with Adam, batch 128, on the same images:

* ``dataloader``: the pytorch/examples ``vae/main.py`` pattern, the named baseline: a
  ``Dataset`` that converts one uint8 image per item, a shuffling ``DataLoader``, a sigmoid
  decoder with summed binary cross-entropy, non-fused Adam, each batch moved to the device;
* ``train_vae``: the course's reference (data on the device once, fused Adam; on CUDA the
  whole step replayed from a CUDA graph), and on CUDA also ``train_vae`` with
  ``COURSE_CUDA_GRAPHS=0`` (the eager loop) to show what the graph buys;
* ``cuda_graph``: the textbook CUDA-graph recipe, written plainly: static batch and noise
  buffers filled per batch, one captured step (forward, backward, capturable fused Adam)
  replayed, the last partial batch dropped. It is the ceiling ``train_vae`` is measured
  against on the GPU.

Every timing covers a whole training run (model construction, warm-up and capture included)
and ends with the device synchronised. Sides alternate, best of ``repeats`` each, so machine
noise hits all alike; only ratios from one process are compared.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from course_lib.reference.vae import VAE, negative_elbo, train_vae

BATCH = 128


class ExamplesVAE(torch.nn.Module):
    """784-400-20 with a sigmoid decoder, as in pytorch/examples' vae/main.py."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 400)
        self.fc21 = torch.nn.Linear(400, 20)
        self.fc22 = torch.nn.Linear(400, 20)
        self.fc3 = torch.nn.Linear(20, 400)
        self.fc4 = torch.nn.Linear(400, 784)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z)))), mu, logvar


class ImageDataset(torch.utils.data.Dataset):
    """Per-item uint8 image -> float tensor in [0, 1], as torchvision's MNIST + ToTensor do."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = (images * 255).astype(np.uint8).reshape(-1, 28, 28)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0), 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dataloader_loop(images: np.ndarray, epochs: int, device: torch.device) -> None:
    """The named baseline (pytorch/examples ``vae/main.py``'s training loop)."""
    torch.manual_seed(0)
    model = ExamplesVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        ImageDataset(images), batch_size=BATCH, shuffle=True
    )
    model.train()
    for _ in range(epochs):
        for data, _ in loader:
            data = data.to(device)
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            bce = torch.nn.functional.binary_cross_entropy(
                recon, data.view(-1, 784), reduction="sum"
            )
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            (bce + kld).backward()
            optimizer.step()
    _sync(device)


def reference(
    images: torch.Tensor, epochs: int, device: torch.device, graphs: bool = True
) -> None:
    """``train_vae`` itself (``graphs=False`` sets ``COURSE_CUDA_GRAPHS=0`` for the call)."""
    torch.manual_seed(0)
    before = os.environ.get("COURSE_CUDA_GRAPHS")
    os.environ["COURSE_CUDA_GRAPHS"] = "1" if graphs else "0"
    try:
        train_vae(VAE(), images, epochs=epochs, device=device)
    finally:
        if before is None:
            del os.environ["COURSE_CUDA_GRAPHS"]
        else:
            os.environ["COURSE_CUDA_GRAPHS"] = before
    _sync(device)


def plain_cuda_graph(images: torch.Tensor, epochs: int, device: torch.device) -> None:
    """One captured training step replayed per full batch, written as plainly as possible."""
    torch.manual_seed(0)
    model = VAE().to(device).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-3, fused=True, capturable=True
    )
    data = images.to(device)
    static_x = data[:BATCH].clone()
    static_eps = torch.randn(BATCH, 20, device=device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        logits, mu, logvar = model(static_x, static_eps)
        loss = negative_elbo(static_x, logits, mu, logvar)
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # real steps on the first batch: warm-up
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        step()
    full = data.shape[0] // BATCH * BATCH
    for _ in range(epochs):
        order = torch.randperm(data.shape[0], device=device)
        for start in range(0, full, BATCH):
            static_x.copy_(data[order[start : start + BATCH]])
            static_eps.normal_()
            graph.replay()
    _sync(device)


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each callable once to warm up, then ``repeats`` rounds in turn; best time of each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


@dataclass(frozen=True)
class Row:
    """One data configuration: images per second of each way, and the ratios."""

    label: str
    images: int
    seconds: dict[str, float]

    def rate(self, name: str) -> float:
        return self.images / self.seconds[name]

    def ratio(self, name: str, baseline: str = "dataloader") -> float:
        return self.seconds[baseline] / self.seconds[name]


def measure(
    images: np.ndarray, epochs: int, device: torch.device, repeats: int, label: str
) -> Row:
    """Time every way on the same images (tensor on the host; each way moves it itself)."""
    tensor = torch.from_numpy(images).float()
    runs: dict[str, Callable[[], object]] = {
        "dataloader": lambda: dataloader_loop(images, epochs, device),
        "train_vae": lambda: reference(tensor, epochs, device),
    }
    if device.type == "cuda":
        runs["train_vae_eager"] = lambda: reference(tensor, epochs, device, False)
        runs["cuda_graph"] = lambda: plain_cuda_graph(tensor, epochs, device)
    return Row(label, len(images) * epochs, best_times(runs, repeats))


def table(rows: list[Row], device: torch.device) -> list[str]:
    """Markdown: images/s and ratio against the DataLoader loop, side by side."""
    if device.type == "cuda":
        lines = [
            "| data | DataLoader loop (baseline) | `train_vae` eager (`COURSE_CUDA_GRAPHS=0`) | `train_vae` | plain CUDA-graph step | `train_vae` / CUDA-graph step |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row.label} | {row.rate('dataloader'):,.0f} "
                f"| {row.rate('train_vae_eager'):,.0f} ({row.ratio('train_vae_eager'):.2f}x) "
                f"| {row.rate('train_vae'):,.0f} ({row.ratio('train_vae'):.2f}x) "
                f"| {row.rate('cuda_graph'):,.0f} ({row.ratio('cuda_graph'):.2f}x) "
                f"| {row.ratio('train_vae', 'cuda_graph'):.2f}x |"
            )
        return lines
    lines = [
        "| data | DataLoader loop (baseline) | `train_vae` |",
        "|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.rate('dataloader'):,.0f} "
            f"| {row.rate('train_vae'):,.0f} ({row.ratio('train_vae'):.2f}x) |"
        )
    return lines


def vae_tables(device: torch.device, quick: bool, repeats: int) -> list[str]:
    """The issue's table on ``device``: a 5,000-image subset x 5 epochs, 60,000 x 1 epoch.

    On CPU only the subset (one epoch, or five without ``quick``) is timed: the 60,000-image
    epoch would take a minute per side there and says nothing the subset does not.
    """
    from course_lib.data import load_mnist

    images, _ = load_mnist()
    images = images[:5000].astype(np.float32)
    configs: list[tuple[np.ndarray, int, str]]
    if device.type == "cuda":
        tiled = np.tile(images, (12, 1))
        configs = [
            (images, 5, "5,000-image subset x 5 epochs"),
            (tiled, 1, "60,000 images (the subset tiled) x 1 epoch"),
        ]
        if quick:
            configs = configs[:1]
    else:
        epochs = 1 if quick else 5
        configs = [(images, epochs, f"5,000-image subset x {epochs} epoch(s)")]
    rows = [
        measure(data, epochs, device, repeats, label) for data, epochs, label in configs
    ]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} torch thread(s)"
    )
    return [
        f"VAE training on {name}, images/s (ratio vs the DataLoader loop), batch {BATCH}, 784-400-20, best of {repeats}:",
        "",
        *table(rows, device),
    ]
