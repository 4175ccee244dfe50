"""Summary numbers of a data set (for ``leanaug data info`` and normalisation)."""

from __future__ import annotations

import numpy as np


def channel_mean_std(images: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 ``N x C x H x W`` images in [0, 1].

    Accumulated in float64 over chunks of images, so a 50,000-image set never needs a
    full floating-point copy.
    """
    channels = images.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        return np.full(channels, np.nan), np.full(channels, np.nan)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, std


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many images of each class 0..num_classes-1."""
    return np.bincount(labels, minlength=num_classes)
