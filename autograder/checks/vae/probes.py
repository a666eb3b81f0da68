"""What runs in the student's process for ``05_vae``: the probes, their outputs, the public
models they train or score (:class:`GradingVAE`, :class:`ScoringVAE`, rebuilt from a seed on
both sides), and the problems whose methods a probe calls (:class:`PixelBatch`,
:class:`IwaeProblem`). Student code that draws its own randomness runs under
:func:`autograder.probes.seeded`; ``train_vae`` forks the CUDA generators too, since the loop
may train on a GPU."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autograder import probes
from autograder.subject import Student, StudentError

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class PixelBatch:
    """Images ``x`` in ``[0, 1]`` (grey levels, exact 0s and 1s) and ``logits``, ``(batch, pixels)``.

    With ``extreme`` the first two columns hold logits of +1e4 and -1e4 and the rest span
    magnitudes up to 1e4: a naive ``log(sigmoid(l))`` gives ``-inf`` there.
    """

    batch: int
    pixels: int
    seed: int
    dtype: str = "float64"
    extreme: bool = False

    def tensors(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.pixels)
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        snap = torch.rand(shape, generator=g, dtype=torch.float64) < 0.4
        x = torch.where(snap, x.round(), x)  # MNIST has many exact 0s (and some 1s)
        logits = 3.0 * torch.randn(shape, generator=g, dtype=torch.float64)
        if self.extreme:
            magnitude = 10.0 ** (
                4.0 * torch.rand(shape, generator=g, dtype=torch.float64)
            )
            logits = torch.sign(logits) * magnitude
            logits[:, 0], logits[:, 1] = 1e4, -1e4
        dtype = _DTYPES[self.dtype]
        return x.to(dtype), logits.to(dtype)


def _construct_probe(
    student: Student, name: str, args: Sequence[Any], kwargs: dict[str, Any], seed: int
) -> nn.Module:
    cls = getattr(student, name)
    with probes.seeded(seed):
        module = cls(*args, **kwargs)
    if not isinstance(module, nn.Module):
        raise StudentError(
            "bad_result",
            f"{name}(...) gave a {type(module).__name__}, expected a torch.nn.Module subclass",
        )
    return module


def _tensors(value: Any, count: int, what: str) -> tuple[Tensor, ...]:
    items = (value,) if count == 1 and isinstance(value, Tensor) else value
    if (
        not isinstance(items, (tuple, list))
        or len(items) != count
        or not all(isinstance(v, Tensor) for v in items)
    ):
        expected = "a tensor" if count == 1 else f"a tuple of {count} tensors"
        raise StudentError(
            "bad_result", f"{what} returned {type(value).__name__}, expected {expected}"
        )
    return tuple(items)


class ModuleOutput(TypedDict):
    """What :func:`module_probe` brings back about an ``Encoder`` or ``Decoder``."""

    #: The outputs in training mode, in eval mode, and in eval mode one row at a time.
    train: tuple[Tensor, ...]
    eval: tuple[Tensor, ...]
    rows: tuple[Tensor, ...]
    #: Trainable parameter entries, and how many parameters the outputs depend on.
    n_params: int
    reached: int


class VaeOutput(TypedDict, total=False):
    """What :func:`vae_probe` brings back: the outputs of ``forward`` (always), what the
    encoder returned and the decoder received and returned (when both hooks fired,
    ``hooked``), and with ``gradients`` how many parameters of each part the
    reconstruction reaches."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    hooked: bool
    enc_mu: Any
    enc_logvar: Any
    z: Any
    dec_logits: Any
    reached: dict[str, int]


class TrainOutput(TypedDict, total=False):
    """What :func:`train_probe` brings back (keys described there)."""

    history: list[float]
    changed: bool
    devices: list[str]
    data_unchanged: bool
    batches: list[int]
    seen: Any
    data_order: Any
    noise: Any
    audited_steps: int
    accumulation: Any
    frozen: float
    start: float
    end: float


class DevicesOutput(TypedDict):
    """:func:`devices_probe`: whether CUDA is there, and the device ``get_device(None)`` picks."""

    cuda: bool
    default: str


def module_probe(
    student: Student,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inputs: Tensor,
    seed: int,
    outputs: int,
) -> ModuleOutput:
    """Build ``name(*args, **kwargs)`` with a seeded init and describe how it maps ``inputs``.

    Returns the outputs in training mode (``"train"``), in eval mode for the whole batch
    (``"eval"``) and one row at a time (``"rows"``), the number of trainable parameters and
    how many of them the outputs depend on (non-zero gradient).
    """
    module = _construct_probe(student, name, args, kwargs, seed)
    what = f"{name}.forward"
    with probes.seeded(seed + 1):
        train_out = _tensors(module(inputs), outputs, what)
    params = [p for p in module.parameters() if p.requires_grad]
    total = sum(o.sum() for o in train_out)
    reached = 0
    if params and isinstance(total, Tensor) and total.requires_grad:
        grads = torch.autograd.grad(total, params, allow_unused=True)
        reached = sum(1 for g in grads if g is not None and bool(g.abs().sum() > 0))
    module.eval()
    with torch.no_grad(), probes.seeded(seed + 2):
        eval_out = _tensors(module(inputs), outputs, what)
        rows = [
            _tensors(module(inputs[i : i + 1]), outputs, what)
            for i in range(inputs.shape[0])
        ]
    row_out = tuple(torch.cat([r[k] for r in rows]) for k in range(outputs))
    return {
        "train": train_out,
        "eval": eval_out,
        "rows": row_out,
        "n_params": sum(p.numel() for p in params),
        "reached": reached,
    }


def _flatten_output(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def vae_probe(
    student: Student,
    args: tuple[int, ...],
    x: Tensor,
    eps: Tensor | None,
    seed: int,
    gradients: bool = False,
    noise_seed: int | None = None,
    held: Mapping[str, Any] | None = None,
) -> VaeOutput:
    """Build ``VAE(*args)`` with a seeded init and run ``forward(x, eps)`` (``forward(x)`` when eps is None).

    The forward pass runs on a private global RNG seeded by ``noise_seed`` (default ``seed + 1``).

    Forward hooks record what the VAE's own ``encoder`` returned and what its ``decoder``
    received and returned during that call. With ``gradients``, also how many encoder and
    decoder parameters the reconstruction term :math:`-\\log p(x|z)` reaches.
    """
    with probes.held_correct(student, "VAE", held or {}):
        return _unheld_vae_probe(student, args, x, eps, seed, gradients, noise_seed)


def _unheld_vae_probe(
    student: Student,
    args: tuple[int, ...],
    x: Tensor,
    eps: Tensor | None,
    seed: int,
    gradients: bool,
    noise_seed: int | None,
) -> VaeOutput:
    model = _construct_probe(student, "VAE", args, {}, seed)
    parts = {}
    for attribute in ("encoder", "decoder"):
        part = getattr(model, attribute, None)
        if not isinstance(part, nn.Module):
            raise StudentError(
                "bad_result",
                f"VAE{args} has no `{attribute}` submodule (found {type(part).__name__}): "
                f"store it as self.{attribute} = {attribute.capitalize()}(...)",
            )
        parts[attribute] = part
    seen: dict[str, list[Any]] = {"encoder": [], "decoder_in": [], "decoder_out": []}

    def on_encoder(module: nn.Module, inputs: Any, output: Any) -> None:
        seen["encoder"].append(_flatten_output(output))

    def on_decoder(module: nn.Module, inputs: Any, output: Any) -> None:
        seen["decoder_in"].append(inputs[0] if inputs else None)
        seen["decoder_out"].append(output)

    handles = [
        parts["encoder"].register_forward_hook(on_encoder),
        parts["decoder"].register_forward_hook(on_decoder),
    ]
    try:
        with probes.seeded(seed + 1 if noise_seed is None else noise_seed):
            result = model(x) if eps is None else model(x, eps)
    finally:
        for handle in handles:
            handle.remove()
    logits, mu, logvar = _tensors(result, 3, "VAE.forward")
    # A wrong order or size is the student's bug: say so here, before any check does
    # arithmetic on mismatched shapes (which would read as a grader error).
    batch, x_dim, z_dim = x.shape[0], args[0], args[-1]
    for got, want, label in (
        (logits, (batch, x_dim), "logits"),
        (mu, (batch, z_dim), "mu"),
        (logvar, (batch, z_dim), "logvar"),
    ):
        if tuple(got.shape) != want:
            raise StudentError(
                "bad_result",
                f"VAE{tuple(args)}.forward returned {label} (its "
                f"{('first', 'second', 'third')[('logits', 'mu', 'logvar').index(label)]} "
                f"output) with shape {tuple(got.shape)}, expected {want}: forward(x, eps) "
                "returns (logits, mu, logvar) in that order, with the arguments "
                "(x_dim, hidden_dim, z_dim)",
            )
    report: VaeOutput = {
        "logits": logits,
        "mu": mu,
        "logvar": logvar,
        "hooked": False,
    }
    if (
        seen["encoder"] and seen["decoder_in"]
    ):  # the first encoder call, the last decoder call
        enc = seen["encoder"][0]
        report["hooked"] = True
        report["enc_mu"] = enc[0] if len(enc) > 0 else None
        report["enc_logvar"] = enc[1] if len(enc) > 1 else None
        report["z"] = seen["decoder_in"][-1]
        report["dec_logits"] = seen["decoder_out"][-1]
    if gradients:
        target = x.to(logits.dtype)
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        counts = {}
        for attribute, part in parts.items():
            params = [p for p in part.parameters() if p.requires_grad]
            if not params or not recon.requires_grad:
                counts[attribute] = 0
                continue
            grads = torch.autograd.grad(
                recon, params, allow_unused=True, retain_graph=True
            )
            counts[attribute] = sum(
                1 for g in grads if g is not None and bool(g.abs().sum() > 0)
            )
        report["reached"] = counts
    return report


def fingerprints(images: Tensor) -> Tensor:
    """One number per image (a fixed random projection in float64): tells images and their order apart."""
    weights = torch.linspace(1.0, 2.0, images.shape[-1], dtype=torch.float64) ** 3
    return images.double() @ weights


class _RecordingEncoder(nn.Module):
    def __init__(
        self, x_dim: int, hidden_dim: int, z_dim: int, logvar_bias: float
    ) -> None:
        super().__init__()
        self.inner = nn.Linear(x_dim, hidden_dim)
        self.heads = nn.Linear(hidden_dim, 2 * z_dim)
        if (
            logvar_bias != 0.0
        ):  # a nearly deterministic encoder: sigma = exp(logvar_bias / 2)
            with torch.no_grad():
                self.heads.weight[z_dim:].zero_()
                self.heads.bias[z_dim:].fill_(logvar_bias)
        self.calls: list[tuple[Tensor, Tensor]] = []
        self.seen: list[Tensor] = []  # per training step, a fingerprint of each image

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.heads(torch.tanh(self.inner(x))).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            self.calls.append((mu.detach().cpu(), logvar.detach().cpu()))
            self.seen.append(fingerprints(x.detach().cpu()))
        return mu, logvar


class _RecordingDecoder(nn.Module):
    def __init__(
        self,
        z_dim: int,
        hidden_dim: int,
        x_dim: int,
        encoder_calls: list[tuple[Tensor, Tensor]],
    ) -> None:
        super().__init__()
        self.inner = nn.Linear(z_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim, x_dim)
        self.encoder_calls = (
            encoder_calls  # the encoder's record, to pair each z with its (mu, logvar)
        )
        self.calls: list[tuple[Tensor, Tensor | None]] = []

    def forward(self, z: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            z_cpu = z.detach().cpu()
            match = next(
                (c for c in reversed(self.encoder_calls) if c[0].shape == z_cpu.shape),
                None,
            )
            eps = None
            if match is not None:
                mu, logvar = match
                eps = (z_cpu.double() - mu.double()) / torch.exp(0.5 * logvar.double())
            self.calls.append((z_cpu, eps))
        return self.readout(torch.tanh(self.inner(z)))


class GradingVAE(nn.Module):
    """The model ``train_vae`` is graded on: ``encoder``, ``decoder``, ``forward(x, eps=None)``.

    Same contract as the assignment's ``VAE``. While gradients are enabled its encoder and
    decoder remember what they saw, so the grader can tell the batch sizes of the training
    loop and recover the noise :math:`\\epsilon = (z - \\mu) / \\sigma` behind every ``z``.
    A negative ``logvar_bias`` makes the encoder nearly deterministic (``lr = 0`` checks).
    """

    def __init__(
        self,
        x_dim: int = 784,
        hidden_dim: int = 64,
        z_dim: int = 4,
        logvar_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = _RecordingEncoder(x_dim, hidden_dim, z_dim, logvar_bias)
        self.decoder = _RecordingDecoder(z_dim, hidden_dim, x_dim, self.encoder.calls)

    def forward(
        self, x: Tensor, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(torch.addcmul(mu, torch.exp(0.5 * logvar), eps)), mu, logvar

    def noise(self) -> list[Tensor]:
        """The noise behind each decoder call made with gradients on, ``(batch, z_dim)`` each."""
        return [eps for _, eps in self.decoder.calls if eps is not None]


#: The grader's data: the embedded MNIST subset (never the instructor's full MNIST, so the
#: calibrated thresholds hold everywhere), split like ``course_lib.data.mnist_split``.
_SPLIT_SEED, _N_IMAGES, _N_TEST = 0, 5000, 1000


@functools.lru_cache(maxsize=4)
def grading_images(part: str, count: int) -> np.ndarray:
    """The first ``count`` images of the train or test part, ``(count, 784)`` float32 in [0, 1].

    Reads the subset shipped with ``course_lib`` (``course_lib.data.MNIST_SUBSET``), never
    ``COURSE_MNIST_DIR``.
    """
    from course_lib.data import load_mnist_subset

    order = np.random.default_rng(_SPLIT_SEED).permutation(_N_IMAGES)
    rows = order[:_N_TEST] if part == "test" else order[_N_TEST:]
    if count > len(rows):
        raise ValueError(f"only {len(rows)} {part} images, asked for {count}")
    images, _ = load_mnist_subset()
    return np.ascontiguousarray(images[rows[:count]], dtype=np.float32) / np.float32(
        255.0
    )


@dataclass(frozen=True)
class TrainConfig:
    """One call of ``train_vae`` on a fresh :class:`GradingVAE` (its repr is what a student reads)."""

    n_train: int = 96
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    init_seed: int = 0
    global_seed: int = 1  # the global RNG's state before the call: a correct loop does not depend on it
    hidden_dim: int = 32
    z_dim: int = 3
    logvar_bias: float = 0.0
    numpy_input: bool = False
    device: str | None = "cpu"
    n_test: int = 0
    eval_seed: int = 0


def _history(value: Any, epochs: int) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise StudentError(
            "bad_result",
            f"train_vae returned a {type(value).__name__}, expected a list with one float per epoch",
        )
    history = []
    for item in value:
        if isinstance(item, Tensor):
            raise StudentError(
                "bad_result",
                "train_vae's list holds tensors: append loss.item() (a float), which also frees the graph",
            )
        if isinstance(item, bool) or not isinstance(
            item, (int, float, np.floating, np.integer)
        ):
            raise StudentError(
                "bad_result",
                f"train_vae's list holds a {type(item).__name__}, expected floats",
            )
        history.append(float(item))
    if len(history) != epochs:
        raise StudentError(
            "bad_result",
            f"train_vae returned {len(history)} values for {epochs} epochs: one mean negative ELBO per epoch",
        )
    return history


class _GradientAudit:
    """Compares each parameter's ``.grad`` at every optimizer step with the gradient computed since the last step.

    ``.grad`` may be a positive multiple of the fresh gradient (gradient clipping) but not the
    fresh gradient plus older ones (a missing ``zero_grad``). Only ``torch.optim`` optimizers
    are seen; a hand-written update is not audited.
    """

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fresh: dict[int, Tensor] = {}
        self.steps, self.worst = 0, 0.0
        self.handles = [
            p.register_hook(self._hook(i)) for i, p in enumerate(self.params)
        ]
        self.handles.append(register_optimizer_step_pre_hook(self._on_step))

    def _hook(self, index: int) -> Any:
        def record(grad: Tensor) -> None:
            previous = self.fresh.get(index)
            self.fresh[index] = (
                grad.detach().clone() if previous is None else previous + grad.detach()
            )

        return record

    def _on_step(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> None:
        ours = {id(p) for p in self.params}
        if not any(
            id(p) in ours for group in optimizer.param_groups for p in group["params"]
        ):
            return
        stored, fresh = [], []
        for i, p in enumerate(self.params):
            if p.grad is not None and i in self.fresh:
                stored.append(p.grad.detach().double().flatten().cpu())
                fresh.append(self.fresh[i].double().flatten().cpu())
        self.fresh.clear()
        if not fresh:
            return
        self.steps += 1
        g, f = torch.cat(stored), torch.cat(fresh)
        norm = float(f.norm())
        if norm == 0.0:
            return
        scale = float(g @ f) / norm**2
        residual = float((g - scale * f).norm()) / norm
        self.worst = max(self.worst, residual, scale - 1.0)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _mean_nelbo(model: GradingVAE, x: np.ndarray, eps: Tensor | None) -> float:
    with torch.no_grad():
        data = torch.from_numpy(x)
        mu, logvar = model.encoder(data)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        logits = model.decoder(z)
        # The model's negative ELBO by torch.distributions in float64, inline: nothing here
        # takes negative_elbo's inputs (issue 19); only a trained model's progress uses it.
        mu, logvar, logits = mu.double(), logvar.double(), logits.double()
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        pixels = torch.distributions.Bernoulli(logits=logits, validate_args=False)
        return float((kl - pixels.log_prob(data.double()).sum(-1)).mean())


def train_probe(
    student: Student, config: TrainConfig, held: dict[str, Any] | None = None
) -> TrainOutput:
    """:func:`_unheld_train_probe` with ``train_vae``'s helpers held correct (``held``)."""
    with probes.held_correct(student, "train_vae", held or {}):
        return _unheld_train_probe(student, config)


def _unheld_train_probe(student: Student, config: TrainConfig) -> TrainOutput:
    """Call ``train_vae`` on a fresh :class:`GradingVAE` and report what happened.

    Keys: ``history``; ``changed`` (parameters moved); ``devices`` of the parameters after
    training; ``data_unchanged``; ``batches`` (batch size of each training step); ``noise``
    (the noise behind each step's ``z``); ``audited_steps``/``accumulation`` (see
    :class:`_GradientAudit`); ``start``/``end`` (held-out negative ELBO before and after, with
    fixed noise, when ``n_test``); ``frozen`` (mean negative ELBO on the training images at
    ``z = mu``).
    """
    c = config
    images = grading_images("train", c.n_train)
    train_x: Any = images.copy() if c.numpy_input else torch.from_numpy(images.copy())
    test = grading_images("test", c.n_test) if c.n_test else None
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(c.init_seed)
        model = GradingVAE(784, c.hidden_dim, c.z_dim, c.logvar_bias)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        eps = None
        if test is not None:
            eps = torch.randn(
                len(test), c.z_dim, generator=torch.Generator().manual_seed(c.eval_seed)
            )
            start = _mean_nelbo(model, test, eps)
        frozen = _mean_nelbo(model, images, None)
        torch.manual_seed(c.global_seed)
        audit = _GradientAudit(model)
        try:
            value = student.train_vae(
                model,
                train_x,
                epochs=c.epochs,
                batch_size=c.batch_size,
                lr=c.lr,
                device=c.device,
                seed=c.seed,
            )
        finally:
            audit.close()
    history = _history(value, c.epochs)
    param_devices = sorted({str(p.device) for p in model.parameters()})
    model.to("cpu").eval()
    after = model.state_dict()
    changed = any(not torch.equal(before[k], after[k].detach()) for k in before)
    if c.numpy_input:
        data_unchanged = isinstance(train_x, np.ndarray) and np.array_equal(
            train_x, images
        )
    else:
        data_unchanged = isinstance(train_x, Tensor) and torch.equal(
            train_x.cpu(), torch.from_numpy(images)
        )
    report: TrainOutput = {
        "history": history,
        "changed": changed,
        "devices": param_devices,
        "data_unchanged": data_unchanged,
        "batches": [int(z.shape[0]) for z, _ in model.decoder.calls],
        "seen": model.encoder.seen,
        "data_order": fingerprints(torch.from_numpy(images)),
        "noise": model.noise(),
        "audited_steps": audit.steps,
        "accumulation": audit.worst,
        "frozen": frozen,
    }
    if test is not None:
        report["start"] = start
        report["end"] = _mean_nelbo(model, test, eps)
    return report


def devices_probe(student: Student) -> DevicesOutput:
    """Whether the student's side has CUDA, and the device ``train_vae(device=None)`` should pick there."""
    from course_lib.device import get_device

    return {"cuda": bool(torch.cuda.is_available()), "default": get_device(None).type}


class _ScoringEncoder(nn.Module):
    def __init__(self, x_dim: int, hidden_dim: int, z_dim: int) -> None:
        super().__init__()
        self.inner = nn.Linear(x_dim, hidden_dim)
        self.heads = nn.Linear(hidden_dim, 2 * z_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.heads(torch.tanh(self.inner(x))).chunk(2, dim=-1)
        return mu, logvar


class _ScoringDecoder(nn.Module):
    def __init__(self, z_dim: int, hidden_dim: int, x_dim: int, gain: float) -> None:
        super().__init__()
        self.inner = nn.Linear(z_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim, x_dim)
        self.gain = gain  # larger logits: log p(x|z) of hundreds or thousands of nats

    def forward(self, z: Tensor) -> Tensor:
        return self.gain * self.readout(torch.tanh(self.inner(z)))


class ScoringVAE(nn.Module):
    """The model ``iwae_bound`` is graded on: ``encoder(x) -> (mu, logvar)``, ``decoder(z) -> logits``.

    Built from a seed, so the grader rebuilds the same weights on its side. Its decoder
    accepts ``z`` of any leading shape (``(K * B, Z)`` or ``(K, B, Z)``), as ``nn.Linear`` does.
    """

    def __init__(
        self, x_dim: int, hidden_dim: int, z_dim: int, gain: float = 1.0
    ) -> None:
        super().__init__()
        self.encoder = _ScoringEncoder(x_dim, hidden_dim, z_dim)
        self.decoder = _ScoringDecoder(z_dim, hidden_dim, x_dim, gain)

    def forward(
        self, x: Tensor, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return self.decoder(mu + torch.exp(0.5 * logvar) * eps), mu, logvar


@dataclass(frozen=True)
class IwaeProblem:
    """A :class:`ScoringVAE`, images ``x`` ``(batch, x_dim)`` and noise ``eps`` ``(samples, batch, z_dim)``.

    Images are grey levels with exact 0s and 1s; the noise is standard normal.
    """

    batch: int
    x_dim: int
    z_dim: int
    samples: int
    seed: int
    dtype: str = "float64"
    hidden_dim: int = 16
    gain: float = 1.0

    def model(self) -> ScoringVAE:
        with probes.seeded(self.seed):
            model = ScoringVAE(self.x_dim, self.hidden_dim, self.z_dim, self.gain)
        return model.to(_DTYPES[self.dtype]).eval()

    def tensors(self) -> tuple[Tensor, Tensor]:
        x, _ = PixelBatch(self.batch, self.x_dim, self.seed + 1, self.dtype).tensors()
        g = torch.Generator().manual_seed(self.seed + 2)
        eps = torch.randn(
            self.samples, self.batch, self.z_dim, generator=g, dtype=torch.float64
        )
        return x, eps.to(_DTYPES[self.dtype])


class IwaeOutput(probes.SideEffects):
    """What :func:`iwae_probe` brings back: the bound and the side effects on
    ``(model, x, eps)`` (the model counts as changed when any parameter's value changed)."""

    value: Tensor


def _parameter_values(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def iwae_probe(
    student: Student,
    problem: IwaeProblem,
    eps: Tensor | None = None,
    held: Mapping[str, Any] | None = None,
) -> IwaeOutput:
    """Call ``iwae_bound(model, x, eps)`` on the problem's model (its own noise unless ``eps``),
    with the helpers in ``held`` held correct."""
    model = problem.model()
    x, own_eps = problem.tensors()
    eps = own_eps if eps is None else eps
    before = probes.snapshot((_parameter_values(model), x, eps))
    with (
        probes.seeded(problem.seed + 3),
        probes.held_correct(student, "iwae_bound", held or {}),
    ):
        value = student.iwae_bound(model, x, eps)
    if not isinstance(value, Tensor):
        raise StudentError(
            "bad_result",
            f"iwae_bound returned a {type(value).__name__}, expected a torch.Tensor of shape (B,)",
        )
    effects = probes.side_effects(before, (_parameter_values(model), x, eps))
    return {"value": value.detach().cpu(), **effects}
