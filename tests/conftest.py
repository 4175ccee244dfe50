"""Shared fixtures.

Data files come through one path:

* ``official_files``: small synthetic files in each loader's official on-disk format
  (MNIST IDX, CIFAR-10 python batches / tarball / image folder, smallNORB binary
  matrices), written inside the test by writers independent of the readers under test.
  Tests of the loaders' file formats use these, so they run on any machine.
* ``real_data``: the real data sets, for tests whose figures need them (MNIST's pixel
  mean, CIFAR-10's 50,000 images, the paper configs). They come from
  ``$LEANAUG_TEST_DATA`` (a folder holding ``mnist/`` and ``cifar10-jpg/``) or, when it
  is unset, ``../shared/data`` beside the repository; without either those tests are
  skipped with the reason. ``.ci/run`` sets ``LEANAUG_TEST_DATA``, so CI skips none.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
TEST_DATA_ENV = "LEANAUG_TEST_DATA"

# CI has 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(2)


# --- real data ----------------------------------------------------------------------


def real_data_root() -> Path | None:
    """``$LEANAUG_TEST_DATA`` when set (it must be a folder), else ``../shared/data`` if
    it exists, else None."""
    env = os.environ.get(TEST_DATA_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            pytest.fail(f"{TEST_DATA_ENV}={env} is not a folder (expected mnist/, cifar10-jpg/)")
        return path
    return SHARED_DATA if SHARED_DATA.is_dir() else None


REAL_DATA_SKIP = "needs the real data sets"


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """``real_data("mnist")`` -> the folder of the real data set; skips when absent."""

    def locate(name: str = "") -> Path:
        root = real_data_root()
        if root is None:
            pytest.skip(
                f"{REAL_DATA_SKIP}: set {TEST_DATA_ENV}=DIR (a folder with mnist/ "
                "and cifar10-jpg/) or put them in ../shared/data"
            )
        folder = root / name
        if not folder.is_dir():
            pytest.skip(f"needs the real data set {name}/, which {root} lacks")
        return folder

    return locate


@pytest.fixture(scope="session")
def shared_data(real_data: Callable[[str], Path]) -> Path:
    """The real data root (the older name of ``real_data()``); skips when absent."""
    return real_data("")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # -ra lists skips by test location; add one line with the total for missing data.
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if REAL_DATA_SKIP in str(r.longrepr)
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped: they need the real MNIST / CIFAR-10 files, which "
            f"are not here (set {TEST_DATA_ENV}=DIR or put them in ../shared/data)"
        )


# --- synthetic files in the official formats ----------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format): magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def cifar_batch_bytes(images: np.ndarray, labels: Iterable[int]) -> bytes:
    """One pickled batch of the CIFAR-10 python version (``N x 3072`` uint8, list labels)."""
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), 3072)
    return pickle.dumps({b"data": data, b"labels": list(labels), b"batch_label": b"synthetic"})


def norb_bytes(array: np.ndarray) -> bytes:
    """A NORB binary matrix: little-endian magic, ndim, max(3, ndim) dims, then the data."""
    magic = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54}[array.dtype]
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    return (
        struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims)
        + array.astype(array.dtype.newbyteorder("<")).tobytes()
    )


def write_maybe_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


class OfficialFiles:
    """Writers of tiny data sets in the loaders' official formats, under ``tmp_path``.

    Each method returns the folder to pass as ``data_dir`` and the arrays written.
    """

    idx_bytes = staticmethod(idx_bytes)
    cifar_batch_bytes = staticmethod(cifar_batch_bytes)
    norb_bytes = staticmethod(norb_bytes)

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.rng = np.random.default_rng(0)

    @staticmethod
    def write_norb(path: Path, array: np.ndarray) -> Path:
        """A NORB matrix file, gzipped when ``path`` ends in ``.gz``."""
        return write_maybe_gz(path, norb_bytes(array))

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True)
        return folder

    def mnist(
        self, n_train: int = 40, n_test: int = 20, gz: bool = True, name: str = "mnist"
    ) -> tuple[Path, dict[str, np.ndarray]]:
        """The four IDX files (``.gz`` when ``gz``), labels cycling 0..9.

        The loader checks the official sizes (60,000 / 10,000) and the md5 of each
        decompressed file; both are patched to the synthetic files' for this test.
        """
        import leanaug.data.mnist as mnist_module

        folder = self._folder(name)
        arrays = {
            "train-images-idx3-ubyte": self.rng.integers(0, 256, (n_train, 28, 28), np.uint8),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": self.rng.integers(0, 256, (n_test, 28, 28), np.uint8),
            "t10k-labels-idx1-ubyte": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
        }
        files = dict(mnist_module.FILES)
        for key, array in arrays.items():
            raw = idx_bytes(array)
            write_maybe_gz(folder / (f"{key}.gz" if gz else key), raw)
            gz_md5, _, ndim = files[key]
            files[key] = (gz_md5, hashlib.md5(raw).hexdigest(), ndim)
        self.monkeypatch.setattr(mnist_module, "FILES", files)
        self.monkeypatch.setattr(mnist_module, "SIZES", {"train": n_train, "t10k": n_test})
        return folder, arrays

    def cifar_batches(
        self, per_batch: int = 3, n_test: int = 4, name: str = "cifar-10-batches-py"
    ) -> tuple[Path, dict[str, np.ndarray]]:
        """An extracted ``cifar-10-batches-py``: ``data_batch_1..5`` and ``test_batch``."""
        folder = self._folder(name)
        parts = []
        for i in range(1, 6):
            images = self.rng.integers(0, 256, (per_batch, 3, 32, 32), np.uint8)
            labels = self.rng.integers(0, 10, per_batch)
            (folder / f"data_batch_{i}").write_bytes(cifar_batch_bytes(images, labels.tolist()))
            parts.append((images, labels))
        test_images = self.rng.integers(0, 256, (n_test, 3, 32, 32), np.uint8)
        test_labels = self.rng.integers(0, 10, n_test)
        (folder / "test_batch").write_bytes(cifar_batch_bytes(test_images, test_labels.tolist()))
        arrays = {
            "train_images": np.concatenate([p[0] for p in parts]),
            "train_labels": np.concatenate([p[1] for p in parts]),
            "test_images": test_images,
            "test_labels": test_labels,
        }
        return folder, arrays

    def cifar_tarball(self, batches: Path, name: str = "cifar-tar") -> Path:
        """``cifar-10-python.tar.gz`` holding an extracted batches folder."""
        folder = self._folder(name)
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(batches, arcname="cifar-10-batches-py")
        return folder

    def image_folder(
        self,
        classes: dict[str, int],
        size: int = 6,
        suffix: str = ".png",
        name: str = "images",
    ) -> Path:
        """``{train,test}/<class>/NNN<suffix>`` with ``classes[c]`` random RGB images each."""
        from PIL import Image

        folder = self._folder(name)
        for split in ("train", "test"):
            for class_name, count in classes.items():
                (folder / split / class_name).mkdir(parents=True)
                for i in range(count):
                    pixels = self.rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / split / class_name / f"{i:03d}{suffix}")
        return folder

    def smallnorb(self, name: str = "norb") -> tuple[Path, dict[str, np.ndarray]]:
        """The four smallNORB ``-dat``/``-cat`` matrices (training gzipped, testing plain)."""
        arrays = {
            "train_pairs": self.rng.integers(0, 256, (6, 2, 96, 96), dtype=np.uint8),
            "train_labels": np.array([0, 1, 2, 3, 4, 4], dtype=np.int32),
            "test_pairs": self.rng.integers(0, 256, (4, 2, 96, 96), dtype=np.uint8),
            "test_labels": np.array([4, 3, 0, 1], dtype=np.int32),
        }
        folder = self._folder(name)
        train, test = (
            "smallnorb-5x46789x9x18x6x2x96x96-training",
            "smallnorb-5x01235x9x18x6x2x96x96-testing",
        )
        write_maybe_gz(folder / f"{train}-dat.mat.gz", norb_bytes(arrays["train_pairs"]))
        write_maybe_gz(folder / f"{train}-cat.mat.gz", norb_bytes(arrays["train_labels"]))
        write_maybe_gz(folder / f"{test}-dat.mat", norb_bytes(arrays["test_pairs"]))
        write_maybe_gz(folder / f"{test}-cat.mat", norb_bytes(arrays["test_labels"]))
        return folder, arrays


@pytest.fixture
def official_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OfficialFiles:
    return OfficialFiles(tmp_path / "official-files", monkeypatch)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Caches and downloads of one test never leak into another or into ~/.cache.
    root = tmp_path_factory.getbasetemp() / "leanaug-cache"
    monkeypatch.setenv("LEANAUG_CACHE", str(root))
    monkeypatch.setenv("LEANAUG_DATA", str(root / "data"))
