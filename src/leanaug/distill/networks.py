"""Networks for trajectory matching, usable with one flat parameter vector.

The ConvNet is the one of the dataset-distillation literature (Zhao & Bilen; used by
MTT, Cazenavette et al. 2022): ``depth`` x [conv3x3(width), norm, ReLU, avgpool 2x2],
then a linear head. "Instance norm" there is ``GroupNorm(width, width)`` with affine
parameters, which keeps the network free of running buffers so that a student can be
evaluated with any flat parameter vector through :func:`torch.func.functional_call`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from leanaug.errors import LeanaugError
from leanaug.registry import Registry

NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
NORMS.register("instancenorm")(lambda c: nn.GroupNorm(c, c, affine=True))
NORMS.register("groupnorm")(lambda c: nn.GroupNorm(min(4, c), c, affine=True))
NORMS.register("none")(lambda c: nn.Identity())
# running buffers: only for networks trained as plain modules (evaluation), not FlatModel
NORMS.register("batchnorm")(lambda c: nn.BatchNorm2d(c))


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


# -- other architectures, for evaluating a distilled set across networks ----------------
# Sized for 28/32 px input as in the dataset-condensation / DC-bench code (MTT Table 3);
# written here rather than taken from torchvision, whose ImageNet versions (7x7 stride-2
# stem, 224 px) do not fit 28/32 px images. ``width`` scales the channels (the defaults are
# the literature's); the head's size follows from the image size.


def _pooled(size: int, times: int) -> int:
    for _ in range(times):
        size //= 2
    return size


def _check_size(name: str, image_size: tuple[int, int], h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise LeanaugError(f"{name} needs larger images than {tuple(image_size)}")


def _check_width(name: str, width: int) -> None:
    if width < 1:
        raise LeanaugError(f"{name} width must be >= 1, got {width}")


def convnet_bn(
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    width: int = 128,
    depth: int = 3,
    first_padding: int = 1,
) -> ConvNet:
    """The ConvNet with BatchNorm instead of instance norm (DC-bench's ConvNetBN)."""
    return ConvNet(in_channels, num_classes, image_size, width, depth, "batchnorm", first_padding)


class AlexNet(nn.Module):
    """The dataset-condensation AlexNet: conv5x5(2w) pool, conv5x5(3w) pool, conv3x3(4w),
    conv3x3(3w), conv3x3(3w) pool (ReLU after each conv; w = 64 gives 128/192/256/192/192
    channels), then a linear head. The first padding is 4 for 1-channel input, else 2."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 64
    ) -> None:
        super().__init__()
        _check_width("alexnet", width)
        pad = 4 if in_channels == 1 else 2
        c1, c2, c3 = 2 * width, 3 * width, 4 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        h, w = (_pooled(s + 2 * pad - 4, 3) for s in image_size)
        _check_size("alexnet", image_size, h, w)
        self.classifier = nn.Linear(c2 * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


# VGG-11's channels as multiples of the width (64 by default), "M" a 2x2 max pool
_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(nn.Module):
    """The dataset-condensation VGG-11: [conv3x3, norm, ReLU] blocks and max pools (channels
    64-128-256-256-512-512-512-512 for width 64), then a linear head; instance norm
    (``GroupNorm(c, c)``) by default. The first padding is 3 for 1 x 28 x 28 input (the
    maps then go 32 -> 1), else 1."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 64,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        _check_width("vgg11", width)
        make_norm = NORMS.get(norm)
        pad = literature_first_padding(in_channels, image_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) * width
            padding = pad if not layers else 1
            layers += [nn.Conv2d(channels, out, 3, padding=padding), make_norm(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        h, w = (_pooled(s + 2 * pad - 2, 5) for s in image_size)
        _check_size("vgg11", image_size, h, w)
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, make_norm: Callable) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), make_norm(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """The dataset-condensation ResNet-18: a 3x3 stride-1 stem, four stages of two basic
    blocks (width, 2, 4, 8 x width channels; strides 1, 2, 2, 2), a 4x4 average pool and a
    linear head (512 inputs for width 64 on 28/32 px); instance norm or ``batchnorm``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 64,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        _check_width("resnet18", width)
        make_norm = NORMS.get(norm)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), make_norm(width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        channels, (h, w) = width, image_size
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**stage
            blocks += [
                _BasicBlock(channels, out, stride, make_norm),
                _BasicBlock(out, out, 1, make_norm),
            ]
            channels = out
            if stride == 2:
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(4)
        h, w = h // 4, w // 4
        _check_size("resnet18", image_size, h, w)
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.layers(self.stem(x))).flatten(1))


NETWORKS: Registry[Callable[..., nn.Module]] = Registry("network")
NETWORKS.register("convnet")(ConvNet)
NETWORKS.register("convnet-bn")(convnet_bn)
NETWORKS.register("alexnet")(AlexNet)
NETWORKS.register("vgg11")(VGG11)
NETWORKS.register("resnet18")(ResNet18)


def evaluation_network(
    network_config: dict[str, Any], architecture: str | None = None, width: int | None = None
) -> dict[str, Any]:
    """The ``network`` config of an evaluation network: ``architecture`` (default: the
    experts' own, ``network_config["name"]``) for the experts' input channels, image size
    and classes; the ConvNets keep the experts' depth and first padding. ``width``
    (default: the experts' for the ConvNets, else the architecture's own) sets the width."""
    own = network_config.get("name", "convnet")
    name = own if architecture is None else architecture
    NETWORKS.get(name)  # an unknown name: one line listing the valid ones
    if width is not None and width < 1:
        raise LeanaugError(f"network width must be >= 1, got {width}")
    if name == own:
        return {**network_config, **({} if width is None else {"width": width})}
    cfg: dict[str, Any] = {"name": name}
    for key in ("in_channels", "num_classes", "image_size"):
        cfg[key] = network_config[key]
    if name in ("convnet", "convnet-bn"):
        for key in ("width", "depth", "first_padding"):
            if key in network_config:
                cfg[key] = network_config[key]
        if name == "convnet":
            cfg["norm"] = "instancenorm"
    if width is not None:
        cfg["width"] = width
    return cfg
