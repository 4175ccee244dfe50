"""The learnable synthetic set of trajectory matching: initialisation, checkpoints, pictures.

Synthetic images live in the experts' preprocessed space (normalised, ZCA-whitened when
the experts were), as in the reference, so the students see exactly what the experts saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from leanaug.errors import DataError, LeanaugError
from leanaug.results import reading, write_with
from leanaug.seeding import torch_generator

CHECKPOINT_FORMAT = "leanaug-distill-checkpoint/1"
INITS = ("real", "noise")


def initial_images(
    train_images: Tensor,
    train_labels: Tensor,
    num_classes: int,
    ipc: int,
    init: str,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """``ipc`` images per class, class-major (labels ``0,0,..,1,1,..``).

    ``init="real"``: distinct training images of each class, the same ones as the first
    subset of ``leanaug evaluate random:IPC`` with this seed
    (:func:`leanaug.distill.evaluate.random_real_indices` with run 0), so the iteration-0
    evaluation of a distillation run is that baseline's images. ``"noise"``: standard
    normal pixels (in preprocessed units) from a seed derived from ``(seed, "init")``.
    """
    if ipc < 1:
        raise LeanaugError(f"--ipc must be at least 1, got {ipc}")
    if init not in INITS:
        raise LeanaugError(f"--init {init!r} is not one of {', '.join(INITS)}")
    labels = torch.arange(num_classes).repeat_interleave(ipc)
    shape = (num_classes * ipc, *train_images.shape[1:])
    if init == "noise":
        gen = torch_generator(seed, "init", "noise")
        return torch.randn(shape, generator=gen, dtype=train_images.dtype).to(
            train_images.device
        ), labels
    from leanaug.distill.evaluate import random_real_indices

    y = train_labels.cpu().numpy()
    present = np.unique(y)
    if not np.array_equal(present, np.arange(num_classes)):
        raise LeanaugError(
            f"training labels are {present.tolist()}, expected every class 0..{num_classes - 1}"
        )
    idx = torch.as_tensor(random_real_indices(y, ipc, seed, 0), device=train_images.device)
    return train_images[idx].clone(), labels


# What to do about a damaged checkpoint (the writes are atomic; a disk can still fail).
RESTART_HINT = "delete it to restart the run from iteration 0, or use another --out"


def read_checkpoint_file(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, Tensor]]:
    """``(metadata, tensors)`` of a run's safetensors checkpoint; a damaged file is one
    :class:`~leanaug.errors.DamagedFileError` naming it and saying how to go on."""
    with reading(path, "checkpoint", RESTART_HINT), safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@dataclass
class Checkpoint:
    """What a resumed run needs: the learnable tensors, SGD momenta and the iteration done."""

    iteration: int
    images: Tensor
    log_alpha: Tensor
    images_momentum: Tensor | None = None
    log_alpha_momentum: Tensor | None = None

    def save(self, path: str | os.PathLike[str]) -> None:
        tensors = {"images": self.images, "log_alpha": self.log_alpha.reshape(1)}
        if self.images_momentum is not None:
            tensors["images_momentum"] = self.images_momentum
        if self.log_alpha_momentum is not None:
            tensors["log_alpha_momentum"] = self.log_alpha_momentum.reshape(1)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"format": CHECKPOINT_FORMAT, "iteration": str(self.iteration)}
        write_with(path, lambda p: save_file(tensors, str(p), metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        meta, tensors = read_checkpoint_file(path)
        if meta.get("format") != CHECKPOINT_FORMAT or "images" not in tensors:
            raise DataError(
                f"{path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
            )
        mom = tensors.get("log_alpha_momentum")
        return cls(
            iteration=int(meta["iteration"]),
            images=tensors["images"],
            log_alpha=tensors["log_alpha"].reshape(()),
            images_momentum=tensors.get("images_momentum"),
            log_alpha_momentum=None if mom is None else mom.reshape(()),
        )


def image_grid(display: Tensor, labels: Tensor, num_classes: int, max_rows: int = 10) -> np.ndarray:
    """One column per class, up to ``max_rows`` images of it below one another.

    ``display``: N x C x H x W in [0, 1] units (clipped here). Returns H' x W' (grey) or
    H' x W' x 3 floats with a 1-pixel white separator.
    """
    x = display.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    per_class = [torch.nonzero(labels.cpu() == k).flatten()[:max_rows] for k in range(num_classes)]
    rows = max((len(p) for p in per_class), default=0)
    grid = torch.ones(c, rows * (h + 1) + 1, num_classes * (w + 1) + 1)
    for k, members in enumerate(per_class):
        for r, i in enumerate(members.tolist()):
            top, left = 1 + r * (h + 1), 1 + k * (w + 1)
            grid[:, top : top + h, left : left + w] = x[i]
    out = grid.numpy()
    return out[0] if c == 1 else np.transpose(out, (1, 2, 0))


def save_grid(
    path: str | os.PathLike[str],
    display: Tensor,
    labels: Tensor,
    num_classes: int,
    max_rows: int = 10,
    scale: int = 3,
) -> Path:
    """Write :func:`image_grid` as a PNG (atomically), each pixel shown as ``scale`` x ``scale``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid = image_grid(display, labels, num_classes, max_rows)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    cmap = "gray" if grid.ndim == 2 else None
    return write_with(
        path, lambda p: plt.imsave(p, grid, cmap=cmap, vmin=0.0, vmax=1.0, format="png")
    )
