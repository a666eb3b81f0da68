r"""Reference solutions for ``05_vae``: a variational autoencoder on MNIST.

ELBO = :math:`\mathbb{E}_{q_\phi(z|x)}[\log p_\theta(x|z)] - \mathrm{KL}(q_\phi(z|x) \,\|\, \mathcal{N}(0, I))`
with a Gaussian encoder, a Bernoulli decoder (logits) and the reparameterization trick.

References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", appendices B and C;
    pytorch/examples ``vae/main.py`` for the 784-400-20 architecture;
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", eq. (8).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.device import get_device

__all__ = [
    "VAE",
    "Decoder",
    "Encoder",
    "bernoulli_log_likelihood",
    "gaussian_kl",
    "iwae_bound",
    "negative_elbo",
    "reparameterize",
    "train_vae",
]


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    r""":math:`z = \mu + e^{\frac12 \log\sigma^2}\,\epsilon`; shapes ``(B, Z)``."""
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu, \operatorname{diag} e^{\log\sigma^2}) \,\|\, \mathcal{N}(0, I))` per row.

    Kingma & Welling (2014), appendix B:
    :math:`\tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`. Shape ``(B,)``.
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    r""":math:`\sum_i x_i \ell_i - \operatorname{softplus}(\ell_i)` per row: finite for any logits. Shape ``(B,)``."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def negative_elbo(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Batch mean of ``KL - log-likelihood`` (a scalar)."""
    return (gaussian_kl(mu, logvar) - bernoulli_log_likelihood(x, logits)).mean()


class Encoder(nn.Module):
    """:math:`q_\\phi(z|x)`: one hidden ReLU layer, then the mean and the log-variance."""

    def __init__(
        self, x_dim: int = 784, hidden_dim: int = 400, z_dim: int = 20
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(x_dim, hidden_dim)
        self.mean = nn.Linear(hidden_dim, z_dim)
        self.logvar = nn.Linear(hidden_dim, z_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, x_dim)`` -> ``(mu, logvar)``, each ``(B, z_dim)``."""
        h = F.relu(self.hidden(x))
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    """:math:`p_\\theta(x|z)`: one hidden ReLU layer, then Bernoulli logits."""

    def __init__(
        self, z_dim: int = 20, hidden_dim: int = 400, x_dim: int = 784
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(z_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, x_dim)

    def forward(self, z: Tensor) -> Tensor:
        """``z`` ``(B, z_dim)`` -> logits ``(B, x_dim)``."""
        return self.out(F.relu(self.hidden(z)))


class VAE(nn.Module):
    """Encoder + reparameterization + decoder."""

    def __init__(
        self, x_dim: int = 784, hidden_dim: int = 400, z_dim: int = 20
    ) -> None:
        super().__init__()
        self.encoder = Encoder(x_dim, hidden_dim, z_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)

    def forward(
        self, x: Tensor, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(logits, mu, logvar)``; draws ``eps`` from the global RNG when not given."""
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(reparameterize(mu, logvar, eps)), mu, logvar


def _adam(
    model: nn.Module, lr: float, device: torch.device, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this torch build supports it (CPU and CUDA).

    ``capturable`` keeps every piece of optimizer state on the device so that ``step()`` can be
    recorded in a CUDA graph; the fused kernel does the same arithmetic either way (the flag
    only moves the bias correction's step counter, already on the device when fused).
    """
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(
                model.parameters(),
                lr=lr,
                fused=True,
                capturable=capturable and device.type == "cuda",
            )
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(model.parameters(), lr=lr)


#: Eager steps before the capture (on the capture's side stream), as
#: ``torch.cuda.make_graphed_callables`` does by default: they initialise cuBLAS handles and
#: workspaces, autograd's accumulation streams and Adam's state outside the capture. They are
#: real training steps on real batches, so the warm-up costs no extra work.
_WARMUP_STEPS = 3


def _cuda_graphs_wanted() -> bool:
    """CUDA graphs unless ``COURSE_CUDA_GRAPHS=0`` (a switch for debugging a custom model)."""
    return os.environ.get("COURSE_CUDA_GRAPHS", "1").strip() != "0"


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Tensor,
    eps: Tensor,
    total: Tensor,
) -> None:
    """One Adam step on the batch's negative ELBO; adds ``loss * batch size`` to ``total``.

    Nothing here reads a value back to the host, so the same code runs eagerly and under
    CUDA-graph capture.
    """
    logits, mu, logvar = model(batch, eps)
    loss = negative_elbo(batch, logits, mu, logvar)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    total.add_(loss.detach(), alpha=batch.shape[0])


def _epochs_eager(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    z_dim: int,
) -> list[float]:
    """The plain loop: one gathered batch and one noise draw per step (any device)."""
    n_images, target = data.shape[0], data.device
    history: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n_images, generator=generator, device=target)
        total = torch.zeros((), device=target)
        for start in range(0, n_images, batch_size):
            batch = data[order[start : start + batch_size]]
            eps = torch.randn(batch.shape[0], z_dim, generator=generator, device=target)
            _step(model, optimizer, batch, eps, total)  # no sync per batch
        history.append(float(total) / n_images)
    return history


class _GraphedStep:
    """One full-batch training step captured in a CUDA graph, replayed per batch.

    The batch and the noise are written into static buffers that the graph reads; the loss
    accumulates into a static device scalar inside the graph. The same generator draws the
    same noise, in the same order, as the eager loop, so the two give the same results up to
    floating-point rounding.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Tensor,
        batch_size: int,
        z_dim: int,
    ) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        device = data.device
        self.x = torch.empty(batch_size, data.shape[1], device=device)
        self.eps = torch.empty(batch_size, z_dim, device=device)
        self.total = torch.zeros((), device=device)
        self.stream = torch.cuda.Stream(device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.failed = False

    def load(self, index: Tensor, generator: torch.Generator) -> None:
        """Gather the batch and draw its noise straight into the static buffers."""
        torch.index_select(self.data, 0, index, out=self.x)
        torch.randn(self.eps.shape, generator=generator, out=self.eps)

    def run(self) -> None:
        """Warm up, then capture once, then replay (each call is one training step)."""
        if self.graph is not None:
            self.graph.replay()
            return
        current = torch.cuda.current_stream(self.x.device)
        self.stream.wait_stream(current)
        if self.warm < _WARMUP_STEPS:
            with torch.cuda.stream(self.stream):
                _step(self.model, self.optimizer, self.x, self.eps, self.total)
            current.wait_stream(self.stream)
            self.warm += 1
            return
        graph = torch.cuda.CUDAGraph()
        # As torch.cuda.graph does on entry: nothing in flight when the capture begins.
        torch.cuda.synchronize(self.x.device)
        try:
            # capture_begin/end rather than the torch.cuda.graph context manager, so that the
            # stream context is restored even when capture_end raises after a failed capture
            with torch.cuda.stream(self.stream):
                graph.capture_begin()
                try:
                    _step(self.model, self.optimizer, self.x, self.eps, self.total)
                finally:
                    graph.capture_end()
        except RuntimeError:
            # Capture recorded but did not run anything: the model's state is untouched, so
            # this batch and every later one run eagerly instead.
            self.failed = True
            torch.cuda.synchronize(self.x.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.stream(self.stream):
                _step(self.model, self.optimizer, self.x, self.eps, self.total)
            current.wait_stream(self.stream)
            return
        current.wait_stream(self.stream)
        self.graph = graph
        graph.replay()  # capture only records: this replay is the step for this batch


def _epochs_cuda_graphed(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    z_dim: int,
) -> list[float]:
    """The eager loop's arithmetic, with every full batch replayed from one CUDA graph.

    The last, partial batch of each epoch (when ``N`` is not a multiple of ``batch_size``) runs
    eagerly on its own tensors, so every image is used exactly once per epoch as in the eager
    loop. If capture fails (a model that reads values back to the host, say), training goes on
    eagerly with the same optimizer and the same random stream.
    """
    n_images, target = data.shape[0], data.device
    graphed = _GraphedStep(model, optimizer, data, batch_size, z_dim)
    history: list[float] = []
    with warnings.catch_warnings():
        # capturable Adam warns once when stepped outside a capture (warm-up, partial batches)
        warnings.filterwarnings("ignore", message=".*capturable=True.*")
        for _ in range(epochs):
            order = torch.randperm(n_images, generator=generator, device=target)
            graphed.total.zero_()
            for start in range(0, n_images, batch_size):
                index = order[start : start + batch_size]
                if index.shape[0] == batch_size and not graphed.failed:
                    graphed.load(index, generator)
                    graphed.run()
                    continue
                batch = data[index]
                eps = torch.randn(
                    batch.shape[0], z_dim, generator=generator, device=target
                )
                _step(model, optimizer, batch, eps, graphed.total)
            history.append(float(graphed.total) / n_images)
    return history


def train_vae(
    model: nn.Module,
    train_x: Any,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> list[float]:
    r"""Train ``model`` in place with Adam on the negative ELBO.

    The data moves to the device once; each epoch shuffles indices on the device and slices
    batches there, so no batch is copied from the host. Noise and shuffling come from a
    generator seeded by ``seed``. On CUDA the whole step (forward, backward, fused Adam) is
    captured once in a CUDA graph and replayed per batch, which removes the per-kernel launch
    cost that bounds this small network on a GPU; the results equal the eager loop's up to
    rounding. A graph replays kernels, not Python: a model whose ``forward`` has Python side
    effects (counters, recording, printing) sees them only in the first few steps, and one that
    reads values back to the host cannot be captured (training then goes on eagerly).
    ``COURSE_CUDA_GRAPHS=0`` turns the graph off; runs of at most 3 full batches never use it.

    Args:
        model: A :class:`VAE`-like module, ``model(x, eps) -> (logits, mu, logvar)``.
        train_x: Images ``(N, 784)`` in ``[0, 1]`` (tensor or array).
        epochs: Passes over the data.
        batch_size: Images per step.
        lr: Adam learning rate.
        device: Where to train; the GPU when there is one if ``None``.
        seed: Seed for shuffling and noise.

    Returns:
        The mean negative ELBO of each epoch (nats per image): the batch losses weighted by
        batch size, :math:`\frac1N \sum_b |b| \, \mathcal{L}_b`.
    """
    return _train_vae(
        model,
        train_x,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
        cuda_graphs=_cuda_graphs_wanted(),
    )


def _train_vae(
    model: nn.Module,
    train_x: Any,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str | torch.device | None,
    seed: int,
    cuda_graphs: bool,
) -> list[float]:
    """:func:`train_vae` with the CUDA-graph path chosen explicitly (tests compare both)."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(
            f"epochs and batch_size must be positive, got {epochs} and {batch_size}"
        )
    target = get_device(device)
    data = torch.as_tensor(
        np.asarray(train_x) if not isinstance(train_x, Tensor) else train_x
    )
    data = data.to(device=target, dtype=torch.float32)
    if data.ndim != 2 or data.numel() == 0:
        raise ValueError(
            "train_x must be a (N, 784) array of pixel intensities in [0, 1]"
        )
    low, high = torch.aminmax(data)  # one pass, one sync
    if float(low) < 0.0 or float(high) > 1.0:
        raise ValueError(
            "train_x must be a (N, 784) array of pixel intensities in [0, 1]"
        )
    model.to(target).train()
    generator = torch.Generator(device=target).manual_seed(seed)
    with torch.no_grad():
        z_dim = cast(nn.Module, model.encoder)(data[:1])[0].shape[-1]
    graphed = (
        cuda_graphs
        and target.type == "cuda"
        and data.shape[0] // batch_size * epochs > _WARMUP_STEPS
    )
    optimizer = _adam(model, lr, target, capturable=graphed)
    loop = _epochs_cuda_graphed if graphed else _epochs_eager
    return loop(
        model,
        optimizer,
        data,
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        z_dim=z_dim,
    )


_LOG_TAU = math.log(math.tau)  # log 2 pi


def iwae_bound(model: nn.Module, x: Tensor, eps: Tensor) -> Tensor:
    r"""The importance-weighted bound of each image, shape ``(B,)``.

    .. math::
        \mathcal{L}_K(x) = \log \frac1K \sum_{k=1}^K
        \frac{p_\theta(x \mid z_k)\, p(z_k)}{q_\phi(z_k \mid x)},
        \qquad z_k = \mu_\phi(x) + e^{\frac12 \log\sigma^2_\phi(x)} \epsilon_k,

    computed as a log-sum-exp of the log-weights minus :math:`\log K`, so it stays finite
    when every weight underflows (log-weights of -500 nats are the rule on MNIST). With
    :math:`K = 1` it is the single-sample ELBO estimate
    :math:`\log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)`, whose expectation is the
    ELBO; :math:`\mathbb{E}\,\mathcal{L}_K` never decreases in :math:`K` and tends to
    :math:`\log p_\theta(x)` (Burda et al. 2016, theorem 1).

    Args:
        model: Has ``encoder(x) -> (mu, logvar)`` and ``decoder(z) -> logits``.
        x: Images ``(B, D)`` in ``[0, 1]``.
        eps: Standard normal noise ``(K, B, Z)``.

    Returns:
        :math:`\mathcal{L}_K(x_b)` for each image, shape ``(B,)``.
    """
    if eps.ndim != 3 or x.ndim != 2 or eps.shape[1] != x.shape[0]:
        raise ValueError(
            f"expected x (B, D) and eps (K, B, Z), got {tuple(x.shape)} and {tuple(eps.shape)}"
        )
    mu, logvar = cast(nn.Module, model.encoder)(x)
    num_samples, batch, z_dim = eps.shape
    z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, Z), broadcast over the K draws
    logits = cast(nn.Module, model.decoder)(z.reshape(num_samples * batch, z_dim))
    log_lik = bernoulli_log_likelihood(
        x.expand(num_samples, *x.shape).reshape(num_samples * batch, -1), logits
    ).reshape(num_samples, batch)
    log_prior = -0.5 * (z.square() + _LOG_TAU).sum(dim=-1)
    # log q(z | x) at z = mu + sigma * eps: (z - mu) / sigma is eps exactly.
    log_q = -0.5 * (eps.square() + logvar + _LOG_TAU).sum(dim=-1)
    log_weights = log_lik + log_prior - log_q  # (K, B)
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
