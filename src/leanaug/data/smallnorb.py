"""small NORB (24,300 train / 24,300 test stereo pairs of 96 x 96 grey, 5 classes).

The official files are NORB binary matrices (see :func:`read_norb_matrix`):
``*-dat.mat`` is uint8 ``N x 2 x 96 x 96`` (a stereo pair per row) and ``*-cat.mat``
int32 ``N`` labels. As in the augmentation-subsampling paper only the first image of
each stereo pair is used, so images are ``1 x 96 x 96``. The ``-info`` files (instance,
elevation, azimuth, lighting) are not needed and not read.

Downloads are checked against the md5 of the official ``.gz`` files (values as listed
by several independent public loaders); local copies, gzipped or not, are checked by
their binary-matrix headers and exact sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanaug.data.base import ImageDataset, register_dataset
from leanaug.data.cache import cached
from leanaug.data.download import download
from leanaug.data.formats import read_norb_matrix
from leanaug.data.locate import download_dir, search, user_dir
from leanaug.errors import DataError

URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
PREFIX = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing",
}
# md5 of the official .gz files
GZ_MD5 = {
    "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat.gz": "66054832f9accfe74a0f4c36a75bc0a2",
    "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat.gz": "23c8b86101fbf0904a000b43d3ed2fd9",
    "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat.gz": "e4ad715691ed5a3a5f138751a4ceb071",
    "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat.gz": "5aa791cd7e6016cf957ce9bdb93b8603",
}
CLASS_NAMES = ("animal", "human", "airplane", "truck", "car")
SUBDIRS = ("smallnorb", "small-norb", "smallNORB", "norb-v1.0-small")


def file_names() -> list[str]:
    """The four needed files, without ``.gz``."""
    return [f"{PREFIX[split]}-{kind}.mat" for split in ("train", "test") for kind in ("dat", "cat")]


def _files_in(folder: Path) -> dict[str, Path] | None:
    found = {}
    for name in file_names():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _locate(data_dir: Path | None, download_ok: bool) -> dict[str, Path]:
    if data_dir is not None:
        folder = user_dir(data_dir)
        found = search(folder, SUBDIRS, _files_in)
        if not found:
            missing = [
                n
                for n in file_names()
                if not (folder / n).is_file() and not (folder / f"{n}.gz").is_file()
            ]
            raise DataError(
                f"{folder} has no {', '.join(m + '[.gz]' for m in missing)} (expected the small NORB files)"
            )
        return found  # type: ignore[return-value]
    root = download_dir("smallnorb")
    found = _files_in(root) if root.is_dir() else None
    if found:
        return found
    if not download_ok:
        raise DataError(
            f"small NORB not found in {root} and downloads are off; pass --data-dir DIR"
        )
    for name in file_names():
        if not (root / name).is_file() and not (root / f"{name}.gz").is_file():
            gz = f"{name}.gz"
            try:
                download([URL + gz], root / gz, GZ_MD5[gz])
            except DataError as exc:
                raise DataError(
                    f"{exc}; no local copy of small NORB in {root}: pass --data-dir DIR"
                ) from None
    return _files_in(root)  # type: ignore[return-value]


def _read(files: dict[str, Path]) -> ImageDataset:
    splits = {}
    for split, prefix in PREFIX.items():
        dat_path, cat_path = files[f"{prefix}-dat.mat"], files[f"{prefix}-cat.mat"]
        images = read_norb_matrix(dat_path, first_of_axis1=True)
        labels = read_norb_matrix(cat_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(
                f"{dat_path}: expected uint8 N x 2 x H x W stereo pairs, got {images.dtype} with {images.ndim + 1} dimensions"
            )
        if labels.dtype != np.int32 or labels.shape != (images.shape[0],):
            raise DataError(
                f"{cat_path}: expected {images.shape[0]} int32 labels to match {dat_path.name}, got {labels.dtype} {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
            raise DataError(
                f"{cat_path}: labels must be 0..{len(CLASS_NAMES) - 1}, found {labels.min()}..{labels.max()}"
            )
        splits[split] = (images[:, None], labels.astype(np.int64))
    return ImageDataset(
        name="smallnorb",
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        class_names=CLASS_NAMES,
        source="small NORB (official binary matrices, first image of each stereo pair)",
        meta={"files": {k: str(v.resolve()) for k, v in files.items()}},
    )


@register_dataset(
    "smallnorb", "small NORB toys, 24,300/24,300, 1 x 96 x 96 (first camera), 5 classes"
)
def load_smallnorb(
    data_dir: Path | None = None, download: bool = True, cache: bool = True
) -> ImageDataset:
    files = _locate(data_dir, download)
    return cached("smallnorb", files.values(), lambda: _read(files), enabled=cache)
