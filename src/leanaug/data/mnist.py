"""MNIST from the official IDX files (60,000 train / 10,000 test, 28 x 28 grey).

Downloads come from the mirrors below and are checked against the official md5 of the
``.gz`` files. Local copies (``data_dir``) may be gzipped or not, and may have been
re-compressed, so for them the IDX structure is validated and the md5 of the
*decompressed* bytes is compared with the official files' (cheap: ~0.1 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanaug.data.base import ImageDataset, register_dataset
from leanaug.data.cache import cached
from leanaug.data.download import download
from leanaug.data.formats import read_idx
from leanaug.data.locate import download_dir, search, user_dir
from leanaug.errors import DataError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# name -> (md5 of the official .gz, md5 of the decompressed file, IDX dimensions)
FILES = {
    "train-images-idx3-ubyte": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
        3,
    ),
    "train-labels-idx1-ubyte": (
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
        1,
    ),
    "t10k-images-idx3-ubyte": (
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
        3,
    ),
    "t10k-labels-idx1-ubyte": (
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
        1,
    ),
}
CLASS_NAMES = tuple(str(d) for d in range(10))
SIZES = {"train": 60000, "t10k": 10000}


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain or ``.gz``), or None if any is missing."""
    found = {}
    for name in FILES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _missing_message(folder: Path) -> str:
    missing = [
        n for n in FILES if not (folder / n).is_file() and not (folder / f"{n}.gz").is_file()
    ]
    return (
        f"{folder} has no {', '.join(f'{m}[.gz]' for m in missing)} (expected the MNIST IDX files)"
    )


def _locate(data_dir: Path | None, download_ok: bool) -> dict[str, Path]:
    if data_dir is not None:
        folder = user_dir(data_dir)
        found = search(folder, ("mnist", "MNIST", "MNIST/raw"), _files_in)
        if not found:
            raise DataError(_missing_message(folder))
        return found  # type: ignore[return-value]
    root = download_dir("mnist")
    found = _files_in(root) if root.is_dir() else None
    if found:
        return found
    if not download_ok:
        raise DataError(
            f"MNIST not found in {root} and downloads are off; pass --data-dir DIR with the MNIST IDX files"
        )
    for name, (gz_md5, _, _) in FILES.items():
        if not (root / name).is_file() and not (root / f"{name}.gz").is_file():
            try:
                download([m + f"{name}.gz" for m in MIRRORS], root / f"{name}.gz", gz_md5)
            except DataError as exc:
                raise DataError(
                    f"{exc}; no local copy of MNIST in {root}: pass --data-dir DIR with the IDX files"
                ) from None
    return _files_in(root)  # type: ignore[return-value]


def _read(files: dict[str, Path]) -> ImageDataset:
    arrays = {}
    for name, path in files.items():
        _, raw_md5, ndim = FILES[name]
        arrays[name] = read_idx(path, ndim, md5=raw_md5)
    splits = {}
    for prefix, n in SIZES.items():
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.shape != (n, 28, 28) or labels.shape != (n,):
            raise DataError(
                f"{files[f'{prefix}-images-idx3-ubyte']}: expected {n} x 28 x 28 images and {n} labels, got {images.shape} and {labels.shape}"
            )
        if labels.max() > 9:
            raise DataError(
                f"{files[f'{prefix}-labels-idx1-ubyte']}: labels must be 0..9, found {labels.max()}"
            )
        splits[prefix] = (images[:, None].copy(), labels.astype(np.int64))
    return ImageDataset(
        name="mnist",
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["t10k"][0],
        test_labels=splits["t10k"][1],
        class_names=CLASS_NAMES,
        source="MNIST (official IDX files)",
        meta={"files": {k: str(v.resolve()) for k, v in files.items()}},
    )


@register_dataset(
    "mnist", "MNIST handwritten digits, 60,000/10,000, 1 x 28 x 28 (official IDX files)"
)
def load_mnist(
    data_dir: Path | None = None, download: bool = True, cache: bool = True
) -> ImageDataset:
    files = _locate(data_dir, download)
    return cached("mnist", files.values(), lambda: _read(files), enabled=cache)
