"""The SGD epoch loop shared by expert training and evaluation.

Every random choice of an epoch (batch order and DSA draws) comes from one
``torch.Generator`` the caller seeds from the task's identity (expert / run, epoch), so
an epoch is reproducible on its own and a run can resume at any epoch boundary.
"""

from __future__ import annotations

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
) -> float:
    """One pass over ``images`` in a random order, cross-entropy loss; returns the mean loss.

    ``generator`` (a CPU generator, so results match across devices) draws the batch
    order and then, batch by batch, fresh DSA parameters. The last batch may be smaller.
    """
    module.train()
    n = images.shape[0]
    order = torch.randperm(n, generator=generator).to(images.device)
    total, count = 0.0, 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x, y = images[idx], labels[idx]
        if dsa is not None:
            x, _ = dsa(x, generator=generator)
        loss = F.cross_entropy(module(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


@torch.no_grad()
def accuracy(module: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``images`` classified as ``labels`` (no augmentation)."""
    module.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = module(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(images.shape[0], 1)
