"""Data sets: ``load_dataset(name, ...)`` -> :class:`ImageDataset` (uint8 N x C x H x W).

Names (registry :data:`DATASETS`): ``digits``, ``mnist``, ``cifar10``, ``smallnorb``.
Files are read from ``data_dir`` when given, else from ``leanaug.paths.data_root()/<name>``
(downloaded there when missing and ``download=True``). Decoded arrays are cached under
``leanaug.paths.cache_root()/datasets``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from leanaug.data import cifar10, digits, mnist, smallnorb  # noqa: F401 - register loaders
from leanaug.data.base import DATASETS, DESCRIPTIONS, ImageDataset
from leanaug.data.select import SUBSETS, resolve_classes, select_classes, subset_train
from leanaug.data.stats import channel_mean_std, class_counts
from leanaug.errors import DataError

__all__ = [
    "DATASETS",
    "DESCRIPTIONS",
    "SUBSETS",
    "ImageDataset",
    "channel_mean_std",
    "class_counts",
    "load_dataset",
    "resolve_classes",
    "select_classes",
    "subset_train",
]


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str | int] | str | None = None,
    n_train: int | None = None,
    subset: str = "random",
    seed: int = 0,
    download: bool = True,
    cache: bool = True,
) -> ImageDataset:
    """Load data set ``name``, optionally keeping some classes and ``n_train`` train images.

    ``classes``: names or indices (or ``"3,8"``); labels become 0..k-1 in that order and
    ``class_names`` follow it. ``n_train`` with ``subset="random"`` (seeded by ``seed``)
    or ``"first"`` (file order) applies to the training split only, after the class
    selection. ``meta["train_indices"]`` records which original training images were
    kept. Bad input raises :class:`leanaug.errors.DataError` (a ``LeanaugError``).
    """
    loader = DATASETS.get(name)
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; valid: {', '.join(SUBSETS)}")
    ds = loader(
        data_dir=Path(data_dir) if data_dir is not None else None, download=download, cache=cache
    )
    if classes is not None:
        ds = select_classes(ds, classes)
    if n_train is not None:
        ds = subset_train(ds, n_train, subset=subset, seed=seed)
    return ds
