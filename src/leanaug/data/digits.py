"""scikit-learn's bundled ``load_digits`` (1,797 8 x 8 grey digits; no files needed).

Pixel values 0..16 are scaled to uint8 with ``round(v * 255 / 16)``. The data set has no
official split, so a fixed stratified 75/25 split is used
(``train_test_split(test_size=0.25, stratify=y, random_state=0)``: 1,347 train / 450
test), with each split kept in the original file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits as sklearn_load_digits
from sklearn.model_selection import train_test_split

from leanaug.data.base import ImageDataset, register_dataset

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@register_dataset(
    "digits", "scikit-learn digits, 1,347/450 (fixed stratified split), 1 x 8 x 8, bundled"
)
def load_digits(
    data_dir: Path | None = None, download: bool = True, cache: bool = True
) -> ImageDataset:
    del data_dir, download, cache  # bundled with scikit-learn; fast enough not to cache
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    train, test = np.sort(train), np.sort(test)
    return ImageDataset(
        name="digits",
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        class_names=tuple(str(d) for d in range(10)),
        source="scikit-learn load_digits (UCI optical digits), stratified 75/25 split, seed 0",
        meta={"split_seed": SPLIT_SEED, "test_fraction": TEST_FRACTION},
    )
