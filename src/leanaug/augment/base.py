"""The augmentation interface and uint8 <-> float conversions.

An :class:`Augmentation` works on float image batches ``N x C x H x W`` in [0, 1] (any
device) and offers two views of itself:

* ``copies(x)``: the fixed, deterministic copies the augmentation-subsampling paper adds
  for each image (e.g. the 4 diagonal translations), ``N x K x C x H x W``;
* ``sample(x, generator)``: one random draw per image, ``N x C x H x W``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from leanaug.errors import LeanaugError
from leanaug.registry import Registry

#: Images per kornia call inside ``copies``: bounds the memory of sampling grids.
CHUNK = 2048


def to_float(
    images: np.ndarray | torch.Tensor, device: str | torch.device | None = None
) -> torch.Tensor:
    """uint8 images (array or tensor) -> float32 tensor in [0, 1].

    Float input is returned as float32 unchanged in value (it is taken to be in [0, 1]
    already). Other dtypes raise :class:`LeanaugError`.
    """
    tensor = (
        torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    )
    if not isinstance(tensor, torch.Tensor):
        raise LeanaugError(
            f"to_float expects a numpy array or torch tensor, got {type(images).__name__}"
        )
    if device is not None:
        tensor = tensor.to(device)
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if tensor.is_floating_point():
        return tensor.float()
    raise LeanaugError(f"to_float expects uint8 or float images, got {tensor.dtype}")


def to_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Float images in [0, 1] -> uint8 (rounded, clipped); tensor in, tensor out.

    A numpy array gives a numpy array, a tensor a tensor on the same device.
    """
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            return images
        return np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if not isinstance(images, torch.Tensor):
        raise LeanaugError(
            f"to_uint8 expects a numpy array or torch tensor, got {type(images).__name__}"
        )
    if images.dtype == torch.uint8:
        return images
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def check_batch(x: object) -> torch.Tensor:
    """``x`` must be a float tensor ``N x C x H x W``; otherwise one clear error."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        desc = (
            f"{x.dtype} tensor of shape {tuple(x.shape)}"
            if isinstance(x, torch.Tensor)
            else type(x).__name__
        )
        raise LeanaugError(
            f"augmentations expect a float tensor N x C x H x W in [0, 1] (see to_float), got {desc}"
        )
    return x


class Augmentation(ABC):
    """Base class: subclasses implement :meth:`_copy` and :meth:`sample`."""

    name: str = ""

    @property
    @abstractmethod
    def n_copies(self) -> int:
        """K, the number of deterministic copies per image."""

    @abstractmethod
    def copy_labels(self) -> list[str]:
        """A short label for each of the K copies (for plots), e.g. ``"dx=+2 dy=-2"``."""

    @abstractmethod
    def _copy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Copy ``k`` (0..K-1) of every image of a float batch."""

    @abstractmethod
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random draw per image (``N x C x H x W``), reproducible with ``generator``."""

    def copies(self, x: torch.Tensor) -> torch.Tensor:
        """The K deterministic copies of each image: ``N x K x C x H x W``."""
        x = check_batch(x)
        out = x.new_empty((x.shape[0], self.n_copies, *x.shape[1:]))
        for start in range(0, x.shape[0], CHUNK):
            block = x[start : start + CHUNK]
            for k in range(self.n_copies):
                out[start : start + CHUNK, k] = self._copy(block, k)
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


#: name -> Augmentation subclass (``translate``, ``rotate``, ``crop``, ``flip``).
AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation")


def random_uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` floats uniform in [low, high], drawn on the generator's device."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, generator=generator, device=gen_device)
    return (low + (high - low) * u).to(device)


def random_int(
    n: int, low: int, high: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` integers uniform in low..high inclusive, drawn on the generator's device."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(low, high + 1, (n,), generator=generator, device=gen_device).to(device)
