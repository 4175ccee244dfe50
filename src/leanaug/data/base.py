"""The in-memory form every data set loader returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from leanaug.errors import LeanaugError
from leanaug.registry import Registry


@dataclass(frozen=True)
class ImageDataset:
    """Images as uint8 ``N x C x H x W``, labels as int64 ``N`` (0..len(class_names)-1).

    ``train_*`` and ``test_*`` are the data set's official split (``digits`` has none,
    so its loader uses a fixed seeded split). ``source`` records where the arrays came
    from, for results pages.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise LeanaugError(
                    f"{self.name}: {split} images must be uint8 N x C x H x W, got {images.dtype} {images.shape}"
                )
            if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
                raise LeanaugError(
                    f"{self.name}: {split} labels must be int64 of length {images.shape[0]}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


class DatasetLoader(Protocol):
    """A full data set (all classes, official split) from ``data_dir`` or a download."""

    def __call__(self, data_dir: Path | None, download: bool, cache: bool) -> ImageDataset: ...


#: name -> loader; :func:`leanaug.data.load_dataset` adds class and subset selection.
DATASETS: Registry[DatasetLoader] = Registry("data set")

#: name -> one-line description, for ``leanaug data list``.
DESCRIPTIONS: dict[str, str] = {}


def register_dataset(name: str, description: str) -> Callable[[DatasetLoader], DatasetLoader]:
    def decorator(loader: DatasetLoader) -> DatasetLoader:
        DESCRIPTIONS[name] = description
        return DATASETS.register(name)(loader)

    return decorator
