"""Networks for trajectory matching, usable with one flat parameter vector.

The ConvNet is the one of the dataset-distillation literature (Zhao & Bilen; used by
MTT, Cazenavette et al. 2022): ``depth`` x [conv3x3(width), norm, ReLU, avgpool 2x2],
then a linear head. "Instance norm" there is ``GroupNorm(width, width)`` with affine
parameters, which keeps the network free of running buffers so that a student can be
evaluated with any flat parameter vector through :func:`torch.func.functional_call`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from leanaug.errors import LeanaugError
from leanaug.registry import Registry

NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
NORMS.register("instancenorm")(lambda c: nn.GroupNorm(c, c, affine=True))
NORMS.register("groupnorm")(lambda c: nn.GroupNorm(min(4, c), c, affine=True))
NORMS.register("none")(lambda c: nn.Identity())


def literature_first_padding(in_channels: int, image_size: tuple[int, int]) -> int:
    """The first convolution's padding of the literature's ConvNet: 3 for MNIST-like input
    (1 channel, 28x28: the maps go 32 -> 16 -> 8 -> 4, as in the dataset-condensation code
    that MNIST results use), else 1."""
    return 3 if in_channels == 1 and tuple(image_size) == (28, 28) else 1


class ConvNet(nn.Module):
    """``first_padding``: the padding of the first convolution (1 keeps the size; 3 on
    28x28 MNIST makes the maps 32 -> 16 -> 8 -> 4 instead of 28 -> 14 -> 7 -> 3, where the
    last pooling drops a row and a column); config.json files without it mean 1."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        first_padding: int = 1,
    ) -> None:
        super().__init__()
        make_norm = NORMS.get(norm)
        if first_padding < 0:
            raise LeanaugError(f"ConvNet first_padding must be >= 0, got {first_padding}")
        layers: list[nn.Module] = []
        channels, (h, w) = in_channels, image_size
        h, w = h + 2 * (first_padding - 1), w + 2 * (first_padding - 1)
        for d in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=first_padding if d == 0 else 1),
                make_norm(width),
                nn.ReLU(inplace=False),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise LeanaugError(f"ConvNet depth {depth} is too deep for {image_size} images")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * w, num_classes)
        self.config = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=tuple(image_size),
            width=width,
            depth=depth,
            norm=norm,
            first_padding=first_padding,
        )

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


# autocast dtype of each FlatModel precision (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


class FlatModel:
    """Call a module with its parameters given as one flat vector.

    ``flat`` may require grad (the student's unrolled parameters); the module's own
    parameters are only used for their shapes and as the default initial vector.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        precision: str = "float32",
        channels_last: bool = False,
    ) -> None:
        if any(True for _ in module.buffers()):
            raise LeanaugError(
                "FlatModel needs a module without buffers (use instancenorm, not batchnorm)"
            )
        if precision not in PRECISIONS:
            raise LeanaugError(
                f"precision {precision!r} is not one of {', '.join(sorted(PRECISIONS))}"
            )
        self.module = module
        # GPU fast paths (issue #8), off by default: bf16 autocast of the forward pass (the
        # logits come back in float32, so losses and the flat parameters stay float32) and
        # channels-last activations and conv weights (a copy per call: the flat vector's
        # views are NCHW).
        self.precision = precision
        self.channels_last = channels_last
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.size = sum(self.numels)

    def flat_parameters(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        if flat.numel() != self.size:
            raise LeanaugError(
                f"flat parameter vector has {flat.numel()} values, the network needs {self.size}"
            )
        chunks = torch.split(flat, self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def load_into_module(self, flat: Tensor) -> None:
        with torch.no_grad():
            for p, v in zip(self.module.parameters(), self.unflatten(flat).values(), strict=True):
                p.copy_(v)

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        params = self.unflatten(flat)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            params = {
                n: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                for n, v in params.items()
            }
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return functional_call(self.module, params, (x,))
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            out = functional_call(self.module, params, (x,))
        return out.float()


NETWORKS: Registry[type[nn.Module]] = Registry("network")
NETWORKS.register("convnet")(ConvNet)
