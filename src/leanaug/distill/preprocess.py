"""The one input transform shared by experts, distillation and evaluation.

``Preprocessor(zca=...)`` maps uint8 images to floats: ``x / 255``, then per-channel
``(x - mean_c) / std_c`` with mean and std fitted on the training set, then (optionally)
ZCA whitening as in MTT: :class:`kornia.enhance.ZCAWhitening` with ``eps=0.1`` fitted on
the full normalised training set. ``inverse_transform`` undoes both steps (for display;
the result is in ``[0, 1]`` units, not clipped).

Saved as ``DIR/preprocess.json`` (settings) + ``DIR/preprocess.safetensors`` (fitted
tensors) next to the expert trajectories, so every later stage reloads the same fit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from kornia.enhance import ZCAWhitening
from safetensors.torch import load_file, save_file
from torch import Tensor

from leanaug.errors import DataError, LeanaugError
from leanaug.results import write_text, write_with

CONFIG_NAME = "preprocess.json"
TENSORS_NAME = "preprocess.safetensors"
FORMAT = "leanaug-preprocess/1"


def to_float_tensor(images: np.ndarray | Tensor) -> Tensor:
    """uint8 N x C x H x W (numpy or torch) -> float32 tensor in [0, 1]."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise LeanaugError(f"expected uint8 images N x C x H x W, got {t.dtype}")
    if t.ndim != 4:
        raise LeanaugError(f"expected images N x C x H x W, got shape {tuple(t.shape)}")
    return t.float().div_(255.0)


class Preprocessor:
    """Per-channel normalisation (+ optional ZCA), fitted on the training images."""

    def __init__(self, zca: bool = False, zca_eps: float = 0.1) -> None:
        self.zca = zca
        self.zca_eps = zca_eps
        self.mean: Tensor | None = None  # (C,)
        self.std: Tensor | None = None  # (C,)
        self._zca: ZCAWhitening | None = None

    def __repr__(self) -> str:
        return f"Preprocessor(zca={self.zca}, zca_eps={self.zca_eps}, fitted={self.fitted})"

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def config(self) -> dict[str, object]:
        return {"zca": self.zca, "zca_eps": self.zca_eps}

    def fit(self, images: np.ndarray | Tensor) -> Preprocessor:
        """Fit on uint8 training images (all of them, as the reference does)."""
        x = to_float_tensor(images)
        if x.shape[0] < 2:
            raise LeanaugError(f"Preprocessor.fit needs at least 2 images, got {x.shape[0]}")
        self.mean = x.mean(dim=(0, 2, 3))
        self.std = x.std(dim=(0, 2, 3))
        if bool((self.std <= 0).any()):
            raise LeanaugError(
                "Preprocessor.fit: a channel is constant over the training set (std 0)"
            )
        if self.zca:
            self._zca = ZCAWhitening(eps=self.zca_eps, compute_inv=True).fit(self._normalise(x))
        return self

    def _check(self) -> None:
        if not self.fitted:
            raise LeanaugError("Preprocessor is not fitted (call fit or load first)")

    def _normalise(self, x: Tensor) -> Tensor:
        assert self.mean is not None and self.std is not None
        return (x - self.mean.to(x).view(1, -1, 1, 1)) / self.std.to(x).view(1, -1, 1, 1)

    def transform(
        self, images: np.ndarray | Tensor, device: torch.device | str | None = None
    ) -> Tensor:
        """uint8 images -> preprocessed float32 tensor (on ``device`` when given)."""
        self._check()
        x = to_float_tensor(images)
        if device is not None:
            x = x.to(device)
        x = self._normalise(x)
        if self._zca is not None:
            self._zca.to(x.device)
            x = self._zca(x)
        return x

    def transform_float(self, x: Tensor) -> Tensor:
        """Like :meth:`transform` for float images already in [0, 1] (differentiable)."""
        self._check()
        x = self._normalise(x)
        if self._zca is not None:
            self._zca.to(x.device)
            x = self._zca(x)
        return x

    def inverse_transform(self, x: Tensor) -> Tensor:
        """Preprocessed floats -> float images in [0, 1] units (not clipped)."""
        self._check()
        assert self.mean is not None and self.std is not None
        if self._zca is not None:
            self._zca.to(x.device)
            x = self._zca.inverse_transform(x)
        return x * self.std.to(x).view(1, -1, 1, 1) + self.mean.to(x).view(1, -1, 1, 1)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike[str]) -> None:
        self._check()
        assert self.mean is not None and self.std is not None
        directory = Path(directory)
        tensors = {"mean": self.mean.cpu(), "std": self.std.cpu()}
        if self._zca is not None:
            tensors["zca_mean"] = self._zca.mean_vector.detach().cpu().contiguous()
            tensors["zca_matrix"] = self._zca.transform_matrix.detach().cpu().contiguous()
            tensors["zca_inverse"] = self._zca.transform_inv.detach().cpu().contiguous()
        write_with(directory / TENSORS_NAME, lambda p: save_file(tensors, str(p)))
        write_text(
            directory / CONFIG_NAME,
            json.dumps({"format": FORMAT, **self.config()}, indent=2) + "\n",
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Preprocessor:
        directory = Path(directory)
        cfg_path, t_path = directory / CONFIG_NAME, directory / TENSORS_NAME
        if not cfg_path.is_file() or not t_path.is_file():
            raise DataError(
                f"{directory}: no saved preprocessing ({CONFIG_NAME} + {TENSORS_NAME}) found"
            )
        try:
            cfg = json.loads(cfg_path.read_text())
            tensors = load_file(str(t_path))
        except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt file
            raise DataError(f"{directory}: cannot read the saved preprocessing: {exc}") from exc
        if cfg.get("format") != FORMAT:
            raise DataError(f"{cfg_path}: format {cfg.get('format')!r}, expected {FORMAT!r}")
        pre = cls(zca=bool(cfg["zca"]), zca_eps=float(cfg["zca_eps"]))
        pre.mean, pre.std = tensors["mean"], tensors["std"]
        if pre.zca:
            if "zca_matrix" not in tensors:
                raise DataError(f"{t_path}: ZCA is on but the file holds no ZCA matrix")
            # Set the fitted tensors directly (works for kornia versions that do not keep
            # them in state_dict too).
            z = ZCAWhitening(eps=pre.zca_eps, compute_inv=True)
            z.mean_vector = tensors["zca_mean"]
            z.transform_matrix = tensors["zca_matrix"]
            z.transform_inv = tensors["zca_inverse"]
            z.fitted = True
            pre._zca = z
        return pre
