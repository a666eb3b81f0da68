"""``train_vae``'s two execution paths: the eager loop (CPU, MPS, CUDA without graphs) and the
CUDA-graph replay (CUDA).

CPU: the loop is the one the course shipped before the CUDA-graph path existed (the original
loop is restated below as the oracle, and its losses on a fixed problem are pinned). CUDA
(``gpu``-marked, auto-skipped without CUDA): the graph path against the eager path on the
same noise, the partial last batch, the fallback when capture fails, and silence on stderr.
"""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch

from course_lib.data import mnist_split
from course_lib.reference import vae
from course_lib.reference.vae import VAE, negative_elbo, train_vae


@functools.lru_cache(maxsize=1)
def _images() -> np.ndarray:
    return mnist_split().train_x[:1000]


def _model(seed: int, hidden_dim: int = 32, z_dim: int = 3) -> VAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(784, hidden_dim, z_dim)


def _original_loop(
    model: torch.nn.Module,
    train_x: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
) -> list[float]:
    """The training loop as shipped before this change, restated as the oracle."""
    data = torch.as_tensor(train_x).to(device=device, dtype=torch.float32)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    z_dim = model.encoder(data[:1])[0].shape[-1]
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            eps = torch.randn(batch.shape[0], z_dim, generator=generator, device=device)
            logits, mu, logvar = model(batch, eps)
            loss = negative_elbo(batch, logits, mu, logvar)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * batch.shape[0]
        history.append(float(total) / len(data))
    return history


def _parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


# ---------------------------------------------------------------------------------- CPU


@pytest.mark.parametrize(("n", "batch_size"), [(300, 64), (256, 128), (50, 128)])
def test_cpu_path_equals_the_original_loop(n: int, batch_size: int) -> None:
    """Same losses and same weights, to the bit, as the loop before the CUDA-graph path.

    Covers a partial last batch (300 = 4 x 64 + 44), none (256 = 2 x 128), and a single
    batch smaller than ``batch_size``.
    """
    x = _images()[:n]
    ours, theirs = _model(0), _model(0)
    history = train_vae(ours, x, epochs=2, batch_size=batch_size, device="cpu", seed=3)
    expected = _original_loop(theirs, x, epochs=2, batch_size=batch_size, seed=3)
    assert history == expected
    assert torch.equal(_parameters(ours), _parameters(theirs))


def test_cpu_losses_are_pinned() -> None:
    """The losses recorded from the shipped loop on this problem (seed semantics unchanged).

    Tolerance 1e-5 relative: float32 matrix products may round differently on another CPU
    (vector width, thread count), by about 1e-7 per product, and ten Adam steps amplify that
    by far less than 100x on losses of about 540 nats; a change to the shuffling, the noise
    or the weighting moves the losses by more than 0.1 nats.
    """
    history = train_vae(
        _model(0), _images()[:300], epochs=2, batch_size=64, device="cpu", seed=3
    )
    assert history == pytest.approx([544.8455208333334, 531.186875], rel=1e-5)


def test_cuda_graph_switch_changes_nothing_off_cuda() -> None:
    x = _images()[:200]
    runs = [
        vae._train_vae(
            _model(1),
            x,
            epochs=2,
            batch_size=64,
            lr=1e-3,
            device="cpu",
            seed=9,
            cuda_graphs=flag,
        )
        for flag in (True, False)
    ]
    assert runs[0] == runs[1]


def test_cuda_graph_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COURSE_CUDA_GRAPHS", raising=False)
    assert vae._cuda_graphs_wanted()
    monkeypatch.setenv("COURSE_CUDA_GRAPHS", "0")
    assert not vae._cuda_graphs_wanted()
    monkeypatch.setenv("COURSE_CUDA_GRAPHS", "1")
    assert vae._cuda_graphs_wanted()


def test_empty_training_set_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pixel intensities"):
        train_vae(_model(0), np.zeros((0, 784)), epochs=1, device="cpu")


class _EagerStandIn(vae._GraphedStep):
    """The graphed step with its capture replaced by an eager step: runs on any device.

    Everything around the graph (static buffers, gather and noise draw into them, the partial
    batch, the loss accounting) is the CUDA path's own code, so on the CPU it must give the
    eager loop's results to the bit.
    """

    def __init__(  # type: ignore[no-untyped-def]
        self, model, optimizer, data, batch_size, z_dim
    ) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        self.x = torch.empty(batch_size, data.shape[1])
        self.eps = torch.empty(batch_size, z_dim)
        self.total = torch.zeros(())
        self.graph, self.warm, self.failed = None, 0, False
        self.steps = 0

    def run(self) -> None:
        vae._step(self.model, self.optimizer, self.x, self.eps, self.total)
        self.steps += 1


@pytest.mark.parametrize(("n", "batch_size"), [(300, 64), (256, 128)])
def test_graph_path_bookkeeping_equals_the_eager_loop(
    monkeypatch: pytest.MonkeyPatch, n: int, batch_size: int
) -> None:
    """The CUDA path's loop on the CPU, capture aside: same batches, noise, losses, weights."""
    made: list[_EagerStandIn] = []

    def build(*args):  # type: ignore[no-untyped-def]
        made.append(_EagerStandIn(*args))
        return made[-1]

    monkeypatch.setattr(vae, "_GraphedStep", build)
    data = torch.from_numpy(_images()[:n]).float()
    results = []
    for loop in (vae._epochs_cuda_graphed, vae._epochs_eager):
        model = _model(4)
        optimizer = vae._adam(model, 1e-3, torch.device("cpu"))
        generator = torch.Generator().manual_seed(6)
        history = loop(
            model,
            optimizer,
            data,
            epochs=2,
            batch_size=batch_size,
            generator=generator,
            z_dim=3,
        )
        results.append((history, _parameters(model)))
    assert made[0].steps == 2 * (n // batch_size)
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


# ---------------------------------------------------------------------------------- CUDA


class _RecordingStep(vae._GraphedStep):
    """Remembers every graphed step built, to prove the graph was captured and replayed."""

    built: ClassVar[list[vae._GraphedStep]] = []
    replays = 0

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        _RecordingStep.built.append(self)

    def run(self) -> None:
        if self.graph is not None:
            _RecordingStep.replays += 1
        super().run()


def _both_paths(
    model_seed: int,
    n: int,
    batch_size: int,
    epochs: int,
    *,
    hidden_dim: int = 400,
    z_dim: int = 20,
    model_class: type[VAE] = VAE,
) -> tuple[list[float], list[float], VAE, VAE]:
    x = _images()[:n]
    results = []
    for graphs in (True, False):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = model_class(784, hidden_dim, z_dim)
        history = vae._train_vae(
            model,
            x,
            epochs=epochs,
            batch_size=batch_size,
            lr=1e-3,
            device="cuda",
            seed=11,
            cuda_graphs=graphs,
        )
        results.append((history, model))
    (graphed, graphed_model), (eager, eager_model) = results
    return graphed, eager, graphed_model, eager_model


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "batch_size"), [(1000, 128), (1024, 128), (1000, 100)])
def test_cuda_graph_path_matches_the_eager_path(
    monkeypatch: pytest.MonkeyPatch, n: int, batch_size: int
) -> None:
    """Same noise, same order, same fused Adam arithmetic: the same losses and weights.

    Tolerances: each epoch's loss to 1e-5 relative and each weight to 1e-5 absolute. The
    two paths launch the same kernels on the same inputs; what may differ is the cuBLAS
    algorithm picked inside and outside a capture, a float32 rounding of about 1e-7 per
    product that 3 epochs of about 8 Adam steps (each moving a weight by at most lr = 1e-3)
    cannot grow past 1e-5. A wrong batch, noise draw, or skipped step moves losses by more
    than 0.1 nats and weights by about 1e-3.
    """
    monkeypatch.setattr(vae, "_GraphedStep", _RecordingStep)
    _RecordingStep.built, _RecordingStep.replays = [], 0
    graphed, eager, graphed_model, eager_model = _both_paths(0, n, batch_size, 3)
    (step,) = _RecordingStep.built
    full = n // batch_size
    assert step.graph is not None and not step.failed
    assert _RecordingStep.replays == 3 * full - vae._WARMUP_STEPS - 1
    assert graphed == pytest.approx(eager, rel=1e-5)
    torch.testing.assert_close(
        _parameters(graphed_model), _parameters(eager_model), rtol=0, atol=1e-5
    )


@pytest.mark.gpu
def test_cuda_graph_path_equals_the_original_loop_on_cuda() -> None:
    """The eager CUDA path is the loop as shipped (same CUDA random stream)."""
    x = _images()[:1000]
    ours, theirs = _model(2, 400, 20), _model(2, 400, 20)
    history = train_vae(ours, x, epochs=2, batch_size=128, device="cuda", seed=4)
    expected = _original_loop(
        theirs, x, epochs=2, batch_size=128, seed=4, device="cuda"
    )
    # Tolerance as in test_cuda_graph_path_matches_the_eager_path.
    assert history == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(
        _parameters(ours), _parameters(theirs), rtol=0, atol=1e-5
    )


class _SyncingVAE(VAE):
    """Reads a value back to the host in ``forward``: legal eagerly, impossible to capture."""

    def forward(self, x, eps=None):  # type: ignore[no-untyped-def]
        logits, mu, logvar = super().forward(x, eps)
        if float(mu.abs().max()) > 1e6:  # a host sync, as a debugging print would do
            raise AssertionError("diverged")
        return logits, mu, logvar


@pytest.mark.gpu
def test_failed_capture_falls_back_to_the_eager_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model that cannot be captured still trains, with the eager path's results."""
    monkeypatch.setattr(vae, "_GraphedStep", _RecordingStep)
    _RecordingStep.built, _RecordingStep.replays = [], 0
    graphed, eager, graphed_model, eager_model = _both_paths(
        0, 1000, 128, 2, model_class=_SyncingVAE
    )
    (step,) = _RecordingStep.built
    assert step.failed and step.graph is None and _RecordingStep.replays == 0
    assert graphed == pytest.approx(eager, rel=1e-5)
    torch.testing.assert_close(
        _parameters(graphed_model), _parameters(eager_model), rtol=0, atol=1e-5
    )


@pytest.mark.gpu
def test_cuda_graph_path_is_silent(capfd: pytest.CaptureFixture[str]) -> None:
    """No warning (capturable Adam stepped eagerly warns) and nothing on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_vae(_model(0, 400, 20), _images()[:1000], epochs=2, device="cuda")
    assert not caught, [str(w.message) for w in caught]
    assert capfd.readouterr().err == ""
