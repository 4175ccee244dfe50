"""Translate, rotate, crop and flip, built on ``kornia.geometry.transform``.

Conventions (checked by the tests):

* translate ``(dx, dy)`` moves the content ``dx`` pixels right and ``dy`` down; pixels
  that enter from outside copy the nearest edge pixel (``padding_mode="border"``).
  Offsets are whole pixels and sampled with nearest-neighbour interpolation, so a
  translation equals an edge-padded shift exactly.
* rotate by ``a`` degrees turns the content counter-clockwise (kornia's convention;
  +90 on a square image is ``np.rot90(k=1)``), about the image centre, bilinear, edge
  padding.
* crop ``c`` removes ``c`` pixels from every side and resizes back to ``H x W``
  (bilinear, box corners on pixel centres), so the shape is kept.
* flip mirrors left-right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from kornia.geometry.transform import crop_and_resize, rotate, translate

from leanaug.augment.base import (
    AUGMENTATIONS,
    Augmentation,
    check_batch,
    random_int,
    random_uniform,
)
from leanaug.errors import LeanaugError


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        raise LeanaugError(f"{what} must be a whole number of pixels, got {value!r}")
    return int(value)


@AUGMENTATIONS.register("translate")
class Translate(Augmentation):
    """Whole-pixel translations with edge padding.

    ``offsets``: the deterministic copies as ``(dx, dy)`` pairs; by default the four
    diagonals ``(+-max_shift, +-max_shift)`` as in the paper. ``sample`` draws ``dx`` and
    ``dy`` independently and uniformly from ``-max_shift..max_shift``.
    """

    name = "translate"

    def __init__(
        self, max_shift: int = 2, offsets: Sequence[tuple[int, int]] | None = None
    ) -> None:
        self.max_shift = _int(max_shift, "translate max_shift")
        if self.max_shift < 0:
            raise LeanaugError(f"translate max_shift must be >= 0, got {max_shift}")
        if offsets is None:
            s = self.max_shift
            offsets = [(s, s), (s, -s), (-s, s), (-s, -s)]
        self.offsets = tuple(
            (_int(dx, "translate offset"), _int(dy, "translate offset")) for dx, dy in offsets
        )

    @property
    def n_copies(self) -> int:
        return len(self.offsets)

    def copy_labels(self) -> list[str]:
        return [f"dx={dx:+d} dy={dy:+d}" for dx, dy in self.offsets]

    @staticmethod
    def shift(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Translate each image by its row of ``shifts`` (``N x 2`` pixels, dx then dy)."""
        return translate(x, shifts.to(x), mode="nearest", padding_mode="border", align_corners=True)

    def _copy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        shifts = torch.tensor(self.offsets[k], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)
        return self.shift(x, shifts)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = check_batch(x)
        n = x.shape[0]
        dx = random_int(n, -self.max_shift, self.max_shift, generator, x.device)
        dy = random_int(n, -self.max_shift, self.max_shift, generator, x.device)
        return self.shift(x, torch.stack([dx, dy], dim=1))


@AUGMENTATIONS.register("rotate")
class Rotate(Augmentation):
    """Rotations about the centre in degrees (positive = counter-clockwise), edge padding.

    ``angles``: the deterministic copies; by default ``linspace(-max_angle, max_angle,
    n_angles)`` without 0 (the paper's MNIST set is ``max_angle=30, n_angles=15``: 14
    copies). ``sample`` draws an angle uniformly from ``[-max_angle, max_angle]``.
    """

    name = "rotate"

    def __init__(
        self, max_angle: float = 30.0, n_angles: int = 15, angles: Sequence[float] | None = None
    ) -> None:
        self.max_angle = float(max_angle)
        if self.max_angle < 0:
            raise LeanaugError(f"rotate max_angle must be >= 0, got {max_angle}")
        if angles is None:
            grid = np.linspace(-self.max_angle, self.max_angle, int(n_angles))
            angles = [float(a) for a in grid if not np.isclose(a, 0.0)]
        self.angles = tuple(float(a) for a in angles)

    @property
    def n_copies(self) -> int:
        return len(self.angles)

    def copy_labels(self) -> list[str]:
        return [f"{a:+.3g} deg" for a in self.angles]

    @staticmethod
    def turn(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
        """Rotate each image by its entry of ``degrees`` (``N``), counter-clockwise."""
        return rotate(x, degrees.to(x), mode="bilinear", padding_mode="border", align_corners=True)

    def _copy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.turn(
            x, torch.full((x.shape[0],), self.angles[k], dtype=x.dtype, device=x.device)
        )

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = check_batch(x)
        return self.turn(
            x, random_uniform(x.shape[0], -self.max_angle, self.max_angle, generator, x.device)
        )


@AUGMENTATIONS.register("crop")
class Crop(Augmentation):
    """Remove ``c`` pixels from every side, then resize back to the original size.

    ``sizes``: the deterministic copies; by default ``1..max_crop`` (the paper's MNIST
    set: 6 copies). ``sample`` draws ``c`` uniformly from ``0..max_crop``.
    """

    name = "crop"

    def __init__(self, max_crop: int = 6, sizes: Sequence[int] | None = None) -> None:
        self.max_crop = _int(max_crop, "crop max_crop")
        if self.max_crop < 0:
            raise LeanaugError(f"crop max_crop must be >= 0, got {max_crop}")
        if sizes is None:
            sizes = range(1, self.max_crop + 1)
        self.sizes = tuple(_int(c, "crop size") for c in sizes)
        if any(c < 0 for c in self.sizes):
            raise LeanaugError(f"crop sizes must be >= 0, got {self.sizes}")

    @property
    def n_copies(self) -> int:
        return len(self.sizes)

    def copy_labels(self) -> list[str]:
        return [f"crop {c} px" for c in self.sizes]

    @staticmethod
    def crop(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Crop ``pixels[i]`` from every side of image ``i`` and resize back."""
        h, w = x.shape[-2:]
        largest = int(pixels.max()) if pixels.numel() else 0
        if h - 2 * largest < 2 or w - 2 * largest < 2:
            raise LeanaugError(
                f"cropping {largest} px from every side of a {h} x {w} image leaves less than 2 x 2 pixels"
            )
        c = pixels.to(x)
        right, bottom = (w - 1) - c, (h - 1) - c
        # Box corners (x, y) clockwise from top-left, on pixel centres.
        boxes = torch.stack(
            [
                torch.stack([c, c], 1),
                torch.stack([right, c], 1),
                torch.stack([right, bottom], 1),
                torch.stack([c, bottom], 1),
            ],
            dim=1,
        )
        return crop_and_resize(
            x, boxes, (h, w), mode="bilinear", padding_mode="border", align_corners=True
        )

    def _copy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.crop(x, torch.full((x.shape[0],), self.sizes[k], device=x.device))

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = check_batch(x)
        return self.crop(x, random_int(x.shape[0], 0, self.max_crop, generator, x.device))


@AUGMENTATIONS.register("flip")
class Flip(Augmentation):
    """Left-right mirror: one deterministic copy; ``sample`` flips with probability ``p``."""

    name = "flip"

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)
        if not 0.0 <= self.p <= 1.0:
            raise LeanaugError(f"flip p must be in [0, 1], got {p}")

    @property
    def n_copies(self) -> int:
        return 1

    def copy_labels(self) -> list[str]:
        return ["flipped"]

    def _copy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.flip(x, dims=[-1])

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = check_batch(x)
        flip = random_uniform(x.shape[0], 0.0, 1.0, generator, x.device) < self.p
        return torch.where(flip[:, None, None, None], torch.flip(x, dims=[-1]), x)
