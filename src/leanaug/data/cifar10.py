"""CIFAR-10 (50,000 train / 10,000 test, 3 x 32 x 32, 10 classes).

Three layouts are read:

* the official python tarball ``cifar-10-python.tar.gz`` (what a download fetches;
  md5-checked, its pickled batches are read straight out of the archive, so nothing is
  unpacked beside it);
* its extracted folder ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``);
* an image folder ``{train,test}/<class>/*.{png,jpg}``, decoded with PIL in sorted file
  order. Class folders named like CIFAR-10's classes are put in CIFAR-10's official
  label order, any others in sorted order. A JPEG export is lossy, so its ``source``
  says "CIFAR-10 (JPEG export)" for results pages.

Decoded arrays are cached (see :mod:`leanaug.data.cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leanaug.data.base import ImageDataset, register_dataset
from leanaug.data.cache import cached
from leanaug.data.download import download
from leanaug.data.formats import (
    CIFAR_TRAIN_BATCHES,
    decode_images,
    list_image_folder,
    read_cifar_batches_dir,
    read_cifar_tarball,
)
from leanaug.data.locate import download_dir, search, user_dir
from leanaug.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SUBDIRS = ("cifar10", "cifar-10", "cifar10-jpg", "cifar10-png", "CIFAR10", "cifar-10-batches-py")


def _layout(folder: Path) -> tuple[str, Path] | None:
    """Which CIFAR-10 layout ``folder`` holds: image folder, batches folder or tarball."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return "image-folder", folder
    if (folder / CIFAR_TRAIN_BATCHES[0]).is_file():
        return "batches", folder
    if (folder / "cifar-10-batches-py" / CIFAR_TRAIN_BATCHES[0]).is_file():
        return "batches", folder / "cifar-10-batches-py"
    if (folder / TARBALL).is_file():
        return "tarball", folder / TARBALL
    return None


def _locate(data_dir: Path | None, download_ok: bool) -> tuple[str, Path]:
    if data_dir is not None:
        folder = user_dir(data_dir)
        found = search(folder, SUBDIRS, _layout)
        if not found:
            raise DataError(
                f"{folder} does not hold CIFAR-10 (expected train/ and test/ image folders, "
                f"cifar-10-batches-py/ with data_batch_1..5 and test_batch, or {TARBALL})"
            )
        return found  # type: ignore[return-value]
    root = download_dir("cifar10")
    found = _layout(root) if root.is_dir() else None
    if found:
        return found
    if not download_ok:
        raise DataError(f"CIFAR-10 not found in {root} and downloads are off; pass --data-dir DIR")
    try:
        download([URL], root / TARBALL, TARBALL_MD5)
    except DataError as exc:
        raise DataError(
            f"{exc}; no local copy of CIFAR-10 in {root}: pass --data-dir DIR"
        ) from None
    return "tarball", root / TARBALL


def class_order(names: list[str]) -> list[str]:
    """CIFAR-10's official label order when the folders are its classes, else sorted."""
    if sorted(names) == sorted(CLASS_NAMES):
        return list(CLASS_NAMES)
    return sorted(names)


def _image_folder_files(
    root: Path,
) -> tuple[list[str], dict[str, list[str]], dict[str, np.ndarray]]:
    splits = {split: list_image_folder(root / split) for split in ("train", "test")}
    if sorted(splits["train"]) != sorted(splits["test"]):
        raise DataError(
            f"{root}: train/ and test/ have different class folders "
            f"({', '.join(sorted(splits['train']))} vs {', '.join(sorted(splits['test']))})"
        )
    names = class_order(list(splits["train"]))
    files: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, by_class in splits.items():
        files[split] = [f for name in names for f in by_class[name]]
        labels[split] = np.concatenate(
            [np.full(len(by_class[name]), i, dtype=np.int64) for i, name in enumerate(names)]
        )
    return names, files, labels


def _read_image_folder(root: Path, names, files, labels) -> ImageDataset:
    images = {
        s: decode_images(files[s], "RGB", f"decoding CIFAR-10 {s} images")
        for s in ("train", "test")
    }
    suffixes = {os.path.splitext(f)[1].lower() for s in files for f in files[s]}
    kind = "JPEG export" if suffixes <= {".jpg", ".jpeg"} else "image folder"
    return ImageDataset(
        name="cifar10",
        train_images=images["train"],
        train_labels=labels["train"],
        test_images=images["test"],
        test_labels=labels["test"],
        class_names=tuple(names),
        source=f"CIFAR-10 ({kind})",
        meta={"layout": "image-folder", "root": str(root.resolve())},
    )


def _read_python(kind: str, path: Path) -> ImageDataset:
    (x_train, y_train), (x_test, y_test) = (
        read_cifar_tarball if kind == "tarball" else read_cifar_batches_dir
    )(path)
    return ImageDataset(
        name="cifar10",
        train_images=x_train,
        train_labels=y_train,
        test_images=x_test,
        test_labels=y_test,
        class_names=CLASS_NAMES,
        source="CIFAR-10 (official python version)",
        meta={"layout": kind, "root": str(path.resolve())},
    )


@register_dataset(
    "cifar10", "CIFAR-10, 50,000/10,000, 3 x 32 x 32, 10 classes (python tarball or image folder)"
)
def load_cifar10(
    data_dir: Path | None = None, download: bool = True, cache: bool = True
) -> ImageDataset:
    kind, path = _locate(data_dir, download)
    if kind == "image-folder":
        names, files, labels = _image_folder_files(path)
        sources = [f for s in ("train", "test") for f in files[s]]
        return cached(
            "cifar10",
            sources,
            lambda: _read_image_folder(path, names, files, labels),
            enabled=cache,
        )
    sources = (
        [path] if kind == "tarball" else [path / n for n in (*CIFAR_TRAIN_BATCHES, "test_batch")]
    )
    return cached("cifar10", sources, lambda: _read_python(kind, path), enabled=cache)
