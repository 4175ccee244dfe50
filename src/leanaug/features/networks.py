"""The networks behind the trained featurizers (plain PyTorch modules).

Both take float images already normalised by the featurizer and expose
``features(x)`` (the vector the featurizer returns) and ``forward(x)`` (class logits,
used only while training the featurizer).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from leanaug.errors import LeanaugError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics saved in the state dict."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.clamp_min(1e-6).reshape(self.std.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Kuchnik & Smith's MNIST featurizer.

    Conv32-Conv32-MaxPool-Dropout.25-Conv64-Conv64-MaxPool-Dropout.25-Dense512-Dropout.5-
    head. All convolutions are 3x3 with ``padding=1`` (so 8x8 ``digits`` images fit too);
    ``features`` is the 512-d dense layer after its ReLU.
    """

    feature_dim = 512

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        if h < 4 or w < 4:
            raise LeanaugError(f"smallcnn needs images of at least 4x4 pixels, got {h}x{w}")
        self.normalize = Normalize(c)
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), self.feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv twice."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """CIFAR ResNet v2 (pre-activation): depth = 6n + 2, three stages of width w, 2w, 4w.

    ``depth=20`` is ResNet-20, ``depth=56`` ResNet-56 (the paper's files name a ResNet56v2).
    ``features`` is the final BN-ReLU followed by global average pooling (4w values).
    """

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, depth: int = 20, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise LeanaugError(
                f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, ...), got {depth}"
            )
        n = (depth - 2) // 6
        c = image_shape[0]
        self.normalize = Normalize(c)
        self.stem = nn.Conv2d(c, width, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_channels)
        self.feature_dim = in_channels
        self.head = nn.Linear(in_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(self.normalize(x)))
        return F.relu(self.bn(out)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
