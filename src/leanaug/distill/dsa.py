"""Differentiable siamese augmentation (DSA; Zhao & Bilen 2021), as used by MTT.

``DSA("color_crop_cutout_flip_scale_rotate")`` is the strategy of Cazenavette et al.
(2022). Its op groups and their parameter ranges (the reference's defaults):

============  ==============================================================
``color``     brightness ``x + b``, ``b ~ U(-0.5, 0.5)``; then saturation
              ``(x - m_c) * s + m_c`` with ``m_c`` the per-pixel mean over
              channels and ``s ~ 2 U(0, 1)``; then contrast
              ``(x - m) * c + m`` with ``m`` the image mean and
              ``c ~ U(0, 1) + 0.5``
``crop``      integer translation by up to ``round(0.125 * size)`` pixels per
              axis, zeros shifted in
``cutout``    a ``round(0.5 * size)`` square (half the image side) set to zero,
              centred anywhere in the image (clipped at the borders)
``flip``      horizontal flip with probability 0.5
``scale``     independent x / y scale factors ``~ U(1/1.2, 1.2)``
``rotate``    rotation by ``~ U(-15, 15)`` degrees
============  ==============================================================

**One op group per call** (the reference's ``aug_mode='S'``, which MTT uses): each call
picks ONE group of the strategy uniformly at random and applies only that group; when
the pick is ``color``, all three colour ops are applied in the order above. Pass
``mode="all"`` to apply every group of the strategy in turn instead.

Parameters are drawn per sample (``per_sample=True``, what MTT's student steps use) or
once for the whole batch (``per_sample=False``: the "siamese" form of DSA gradient
matching, which can be replayed on a batch of another size). They are drawn from the
``generator`` given (on the generator's device, then moved to the images' device, so a
CPU generator gives the same draws for CPU and CUDA data) and returned as
:class:`DSAParams`; ``dsa(x2, params=params)`` applies exactly the same transformation to
another batch.

Every op is differentiable with respect to the pixels: colour ops are arithmetic,
flip/crop/cutout are indexing and masking, scale/rotate use
:func:`torch.nn.functional.affine_grid` + :func:`~torch.nn.functional.grid_sample`
(bilinear, zero padding, ``align_corners=True`` as the reference). The ops are written
here rather than taken from kornia.augmentation because the parameter distributions and
the one-group-per-call rule must match the reference exactly and be replayable from a
plain tensor dictionary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from leanaug.errors import LeanaugError, UnknownNameError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAParams:
    """The draws of one DSA call: which groups were applied and each op's parameters.

    ``values`` maps ``"<op>.<name>"`` to a tensor of length ``batch_size`` (per-sample
    draws) or of length 1 (one draw for the whole batch, broadcast to any batch size).
    """

    groups: tuple[str, ...]
    values: dict[str, Tensor]

    @property
    def batch_size(self) -> int | None:
        """Length of the per-sample draws, or ``None`` when they broadcast (or are empty)."""
        sizes = {v.shape[0] for v in self.values.values()}
        sizes.discard(1)
        return sizes.pop() if sizes else None

    def to(self, device: torch.device | str) -> DSAParams:
        return DSAParams(self.groups, {k: v.to(device) for k, v in self.values.items()})


def _uniform(
    n: int, low: float, high: float, gen: torch.Generator | None, device: torch.device
) -> Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _randint(
    n: int, low: int, high: int, gen: torch.Generator | None, device: torch.device
) -> Tensor:
    """Integers in ``[low, high)``."""
    return torch.randint(low, high, (n,), generator=gen, device=device)


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


class DSA:
    """Differentiable siamese augmentation; see the module docstring for the ops.

    >>> dsa = DSA()
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 3, 8, 8)
    >>> y, params = dsa(x, generator=g)
    >>> torch.equal(dsa(x.clone(), params=params)[0], y)
    True
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        *,
        mode: str = "single",
        per_sample: bool = True,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        crop: float = 0.125,
        cutout: float = 0.5,
        flip: float = 0.5,
        scale: float = 1.2,
        rotate: float = 15.0,
    ) -> None:
        groups = (
            tuple(g for g in strategy.split("_") if g)
            if strategy not in ("", "none", "None")
            else ()
        )
        for g in groups:
            if g not in GROUPS:
                raise UnknownNameError(
                    f"unknown DSA op group {g!r} in strategy {strategy!r}; valid names: {', '.join(GROUPS)}"
                )
        if mode not in ("single", "all"):
            raise LeanaugError(f"DSA mode must be 'single' or 'all', got {mode!r}")
        if scale < 1.0:
            raise LeanaugError(
                f"DSA scale ratio must be >= 1 (factors in [1/ratio, ratio]), got {scale}"
            )
        self.strategy = strategy
        self.groups = groups
        self.mode = mode
        self.per_sample = per_sample
        self.brightness = brightness
        self.saturation = saturation
        self.contrast = contrast
        self.crop = crop
        self.cutout = cutout
        self.flip = flip
        self.scale = scale
        self.rotate = rotate

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r}, mode={self.mode!r}, per_sample={self.per_sample})"

    def config(self) -> dict[str, object]:
        return dict(
            strategy=self.strategy,
            mode=self.mode,
            per_sample=self.per_sample,
            brightness=self.brightness,
            saturation=self.saturation,
            contrast=self.contrast,
            crop=self.crop,
            cutout=self.cutout,
            flip=self.flip,
            scale=self.scale,
            rotate=self.rotate,
        )

    # ----------------------------------------------------------------- sampling
    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> DSAParams:
        """Draw the parameters for a batch shaped like ``x`` (N x C x H x W)."""
        if x.ndim != 4:
            raise LeanaugError(f"DSA needs images N x C x H x W, got shape {tuple(x.shape)}")
        device = generator.device if generator is not None else torch.device("cpu")
        if not self.groups:
            return DSAParams((), {})
        if self.mode == "single":
            pick = int(
                torch.randint(len(self.groups), (1,), generator=generator, device=device).item()
            )
            groups: tuple[str, ...] = (self.groups[pick],)
        else:
            groups = self.groups
        n = x.shape[0] if self.per_sample else 1
        h, w = x.shape[-2:]
        values: dict[str, Tensor] = {}
        for group in groups:
            values.update(self._SAMPLERS[group](self, n, h, w, generator, device))
        return DSAParams(groups, values)

    def _sample_color(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        return {
            "brightness.shift": (torch.rand(n, generator=gen, device=device) - 0.5)
            * self.brightness,
            "saturation.factor": torch.rand(n, generator=gen, device=device) * self.saturation,
            "contrast.factor": torch.rand(n, generator=gen, device=device) + self.contrast,
        }

    def _sample_crop(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        # round half up, as the reference's int(size * ratio + 0.5)
        max_y, max_x = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
        return {
            "crop.dy": _randint(n, -max_y, max_y + 1, gen, device),
            "crop.dx": _randint(n, -max_x, max_x + 1, gen, device),
        }

    def _sample_cutout(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        size_y, size_x = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        return {
            "cutout.cy": _randint(n, 0, h + (1 - size_y % 2), gen, device),
            "cutout.cx": _randint(n, 0, w + (1 - size_x % 2), gen, device),
            # the patch size, stored (length 1) so a replay does not depend on the ratio
            "cutout.size_y": torch.tensor([size_y], device=device),
            "cutout.size_x": torch.tensor([size_x], device=device),
        }

    def _sample_flip(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        return {"flip.flip": torch.rand(n, generator=gen, device=device) < self.flip}

    def _sample_scale(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        return {
            "scale.sx": _uniform(n, 1.0 / self.scale, self.scale, gen, device),
            "scale.sy": _uniform(n, 1.0 / self.scale, self.scale, gen, device),
        }

    def _sample_rotate(
        self, n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device
    ) -> dict[str, Tensor]:
        return {"rotate.degrees": _uniform(n, -self.rotate, self.rotate, gen, device)}

    _SAMPLERS: dict[str, Callable[..., dict[str, Tensor]]] = {
        "color": _sample_color,
        "crop": _sample_crop,
        "cutout": _sample_cutout,
        "flip": _sample_flip,
        "scale": _sample_scale,
        "rotate": _sample_rotate,
    }

    # ----------------------------------------------------------------- applying
    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Apply already drawn parameters to ``x`` (differentiable in ``x``)."""
        if x.ndim != 4:
            raise LeanaugError(f"DSA needs images N x C x H x W, got shape {tuple(x.shape)}")
        size = params.batch_size
        if size is not None and size != x.shape[0]:
            raise LeanaugError(
                f"DSA parameters were drawn per sample for a batch of {size} images, cannot replay them on "
                f"{x.shape[0]} (use DSA(per_sample=False) for one draw shared by batches of any size)"
            )
        p = params.to(x.device)
        for group in p.groups:
            x = _APPLY[group](x, p.values)
        return x

    def __call__(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        params: DSAParams | None = None,
    ) -> tuple[Tensor, DSAParams]:
        """Augment ``x``; return the result and the parameters used (replayable)."""
        if params is None:
            params = self.sample(x, generator)
        elif generator is not None:
            raise LeanaugError(
                "give DSA either params (to replay) or a generator (to draw), not both"
            )
        return self.apply(x, params), params


# --------------------------------------------------------------------- the ops
def _apply_color(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    x = x + _col(v["brightness.shift"]).to(x.dtype)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * _col(v["saturation.factor"]).to(x.dtype) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _col(v["contrast.factor"]).to(x.dtype) + mean


def _apply_crop(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    """``out[n, :, i, j] = x[n, :, i - dy, j - dx]`` (content moves by +dy, +dx), zeros outside."""
    # Clamped indices and a mask rather than padding by the largest draw: the shapes do not
    # depend on the draws, so nothing is read back to the host (no GPU sync per step). A
    # gather, not advanced indexing: its backward (scatter_add) can be captured in a CUDA
    # graph, advanced indexing's (index_put_ with accumulate) could not.
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - v["crop.dy"].expand(n).view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - v["crop.dx"].expand(n).view(n, 1, 1)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    source = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)  # (n, h, w) flat pixel index
    moved = x.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w))
    return moved.view(n, c, h, w) * inside.unsqueeze(1).to(x.dtype)


def _apply_cutout(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    n, _, h, w = x.shape
    # tensor arithmetic throughout (no int() of the stored sizes): no host read-back
    size_y, size_x = v["cutout.size_y"].view(1, 1, 1), v["cutout.size_x"].view(1, 1, 1)
    top = v["cutout.cy"].expand(n).view(n, 1, 1) - torch.div(size_y, 2, rounding_mode="floor")
    left = v["cutout.cx"].expand(n).view(n, 1, 1) - torch.div(size_x, 2, rounding_mode="floor")
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def _apply_flip(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    return torch.where(v["flip.flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _apply_scale(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    sx, sy = v["scale.sx"], v["scale.sy"]
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return _affine(x, theta)


def _apply_rotate(x: Tensor, v: dict[str, Tensor]) -> Tensor:
    rad = v["rotate.degrees"].double() * (math.pi / 180.0)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    return _affine(x, theta)


_APPLY: dict[str, Callable[[Tensor, dict[str, Tensor]], Tensor]] = {
    "color": _apply_color,
    "crop": _apply_crop,
    "cutout": _apply_cutout,
    "flip": _apply_flip,
    "scale": _apply_scale,
    "rotate": _apply_rotate,
}
