"""The featurizer interface and registry.

A featurizer maps images to fixed-length vectors, scikit-learn style:
``fit(images, labels) -> self`` then ``transform(images) -> (N, d) float32``. ``fit``
takes uint8 images or float images in [0, 1] (:func:`check_fit_inputs`).
``transform`` takes uint8 images (``N x C x H x W``, 0..255) or float images in [0, 1]
(numpy or torch), so the deterministic augmented copies made by
``leanaug.augment`` (floats) go through the same frozen featurizer as the clean images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from leanaug.errors import LeanaugError
from leanaug.registry import Registry

FEATURIZERS: Registry[type[Featurizer]] = Registry("featurizer")


def as_float_images(images: Any) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images, numpy or torch -> float32 CPU tensor.

    Hand-written rather than ``leanaug.augment.to_float`` because featurizers also accept
    float tensors coming back from augmentations, and must reject anything else clearly.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise LeanaugError(
            f"featurizer input must be a numpy array or torch tensor, got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise LeanaugError(
            f"featurizer input must be N x C x H x W, got shape {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images.detach().to(device="cpu", dtype=torch.float32)
    raise LeanaugError(f"featurizer input must be uint8 or float images, got {images.dtype}")


class Featurizer:
    """Base class: subclasses implement ``fit`` and ``transform``."""

    #: set by ``fit``: the image shape (C, H, W) the featurizer was fitted on
    image_shape_: tuple[int, int, int] | None = None

    def fit(self, images: np.ndarray, labels: np.ndarray) -> Featurizer:
        raise NotImplementedError

    def transform(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self.fit(images, labels).transform(images)

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` parameters (for cache keys and the resolved run config)."""
        return {
            k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")
        }

    def _check_fitted(self, x: torch.Tensor) -> None:
        if self.image_shape_ is None:
            raise LeanaugError(f"{type(self).__name__}.transform called before fit")
        if tuple(x.shape[1:]) != tuple(self.image_shape_):
            raise LeanaugError(
                f"{type(self).__name__} was fitted on images of shape {tuple(self.image_shape_)}, "
                f"got {tuple(x.shape[1:])}"
            )


def check_fit_inputs(images: np.ndarray, labels: np.ndarray) -> None:
    """Training images ``N x C x H x W``, uint8 (0..255) or float in [0, 1] (the
    augmented copies of :mod:`leanaug.augment` are floats), and one label per image;
    else :class:`LeanaugError`.

    Examples
    --------
    >>> check_fit_inputs(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 1]))
    >>> check_fit_inputs(np.full((2, 1, 4, 4), 2.0), np.array([0, 1]))
    Traceback (most recent call last):
    ...
    leanaug.errors.LeanaugError: featurizer.fit: float images must lie in [0, 1], got values from 2 to 2
    """
    float_images = isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating)
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise LeanaugError(
            "featurizer.fit expects images N x C x H x W (uint8, or float in [0, 1])"
        )
    if images.dtype != np.uint8 and not float_images:
        raise LeanaugError(
            f"featurizer.fit expects uint8 images or float images in [0, 1], got {images.dtype}"
        )
    if float_images and images.size:
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
            raise LeanaugError(
                f"featurizer.fit: float images must lie in [0, 1], got values from {low:g} to {high:g}"
            )
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise LeanaugError(
            f"featurizer.fit: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if images.shape[0] == 0:
        raise LeanaugError("featurizer.fit: no training images")
