"""One seed schedule for the whole project.

Seeds are derived from the task's identity (e.g. ``("trial", score, policy, 3)``), never
from the order in which workers pick up tasks, so results do not depend on the number
of workers or on the executor (local, joblib, Ray).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: joblib workers that only fit sklearn models skip it
    import torch


def derive_seed(base_seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on ``base_seed`` and the keys' text."""
    text = repr((int(base_seed), *[str(k) for k in keys])).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def numpy_rng(base_seed: int, *keys: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(base_seed, *keys))


def torch_generator(
    base_seed: int, *keys: object, device: str | torch.device = "cpu"
) -> torch.Generator:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(base_seed, *keys))
    return gen
