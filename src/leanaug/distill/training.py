"""The SGD epoch loop shared by expert training and evaluation.

Every random choice of an epoch (batch order and DSA draws) comes from one
``torch.Generator`` the caller seeds from the task's identity (expert / run, epoch), so
an epoch is reproducible on its own and a run can resume at any epoch boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanaug.distill.dsa import DSA


def train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    dsa: DSA | None = None,
    forward: Callable[[Tensor], Tensor] | None = None,
    transform: Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor] | None = None,
) -> float:
    """One pass over ``images`` in a random order, cross-entropy loss; returns the mean loss.

    ``generator`` (a CPU generator, so results match across devices) draws the batch
    order and then, batch by batch, fresh DSA parameters. The last batch may be smaller.
    ``forward`` replaces ``module(x)`` in the loss, e.g. ``training_forward(module, True)``
    made once for all epochs; it must use ``module``'s parameters (the optimizer's).
    ``transform(x, y, index, generator) -> x'`` (e.g. a frozen phi, or one of
    :data:`leanaug.distill.transforms.TRAIN_AUGMENTATIONS`) maps each batch before DSA;
    ``index`` are the batch's rows of ``images``, ``generator`` the epoch's.
    """
    module.train()
    forward = module if forward is None else forward
    n = images.shape[0]
    order = torch.randperm(n, generator=generator).to(images.device)
    # the loss sum stays on the device (float64, the same arithmetic as Python floats): read
    # once per epoch, not once per batch, which would wait for the GPU at every step
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    count = 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x, y = images[idx], labels[idx]
        if transform is not None:
            x = transform(x, y, idx, generator)
        if dsa is not None:
            x, _ = dsa(x, generator=generator)
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(idx)
        count += len(idx)
    return float(total) / max(count, 1)


def training_forward(module: nn.Module, compile: bool) -> Callable[[Tensor], Tensor]:
    """``module`` itself, or ``torch.compile(module)`` (same parameters) to pass to
    :func:`train_epoch` as ``forward``; make it once, not per epoch.

    Compiled, a width-32 MNIST ConvNet's training step (forward and backward, batch 256,
    DSA eager) ran 1.56-1.77x faster on this project's 2-core CPU, after 16-18 s of
    compilation (``benchmarks/bench_compile.py``, ``docs/performance.md``). The results equal the eager ones to float32
    rounding, not bit for bit. Static shapes: the smaller last batch of an epoch compiles a
    second graph, once.
    """
    return torch.compile(module, dynamic=False) if compile else module


@torch.no_grad()
def accuracy(module: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``images`` classified as ``labels`` (no augmentation)."""
    module.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = module(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(images.shape[0], 1)
