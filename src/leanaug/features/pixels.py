"""Raw pixels as features (the cheapest featurizer; what the ``digits`` demo uses)."""

from __future__ import annotations

from typing import Any

import numpy as np

from leanaug.features.base import FEATURIZERS, Featurizer, as_float_images, check_fit_inputs


@FEATURIZERS.register("pixels")
class PixelFeaturizer(Featurizer):
    """Pixels scaled to [0, 1] and flattened; optionally standardised per pixel.

    ``standardize=True`` subtracts the training mean and divides by the training standard
    deviation of each pixel (constant pixels are left centred, not divided).
    """

    def __init__(self, standardize: bool = False) -> None:
        self.standardize = bool(standardize)

    def fit(self, images: np.ndarray, labels: np.ndarray) -> PixelFeaturizer:
        check_fit_inputs(images, labels)
        self.image_shape_ = tuple(images.shape[1:])
        flat = as_float_images(images).reshape(images.shape[0], -1).numpy()
        self.mean_ = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.scale_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return self

    def transform(self, images: Any) -> np.ndarray:
        x = as_float_images(images)
        self._check_fitted(x)
        flat = x.reshape(x.shape[0], -1).numpy()
        if self.standardize:
            flat = (flat - self.mean_) / self.scale_
        return np.ascontiguousarray(flat, dtype=np.float32)
