"""``--device auto|cpu|cuda[:i]``: CUDA when present, never a silent fallback."""

from __future__ import annotations

import torch

from leanaug.errors import LeanaugError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LeanaugError(
            f"--device {name}: CUDA is not available on this machine (use cpu or auto)"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise LeanaugError(
            f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)"
        ) from exc
