"""Learned stochastic augmentation networks ``phi(x, noise)`` (issue #7).

A ``phi`` maps a batch of training images (in the experts' *preprocessed* space) and a
noise sample to augmented images of the same shape. It is trained by trajectory matching
(:mod:`leanaug.distill.augment_training`): a student trained on ``(phi(x), y)`` must follow
an expert trained on all the real data.

Families (registry :data:`PHI_FAMILIES`; all but ``courseproject`` are the **identity at
initialisation**, exactly: their last layers are zero-initialised so ``phi(x, noise) == x``
for every noise draw before training):

``free``
    ``phi_i(x_i) = x_i + r_i + sigma_i * noise``: one free residual image ``r_i`` and one
    noise amplitude ``sigma_i`` per training image (both zero at start). On an IPC-sized
    subset with ``sigma = 0`` this is exactly MTT's pixel parameterisation (the sanity
    check). Needs the images' indices (``index=``).
``residual``
    A small U-Net-like conv net on ``[x, noise]`` (+ an optional class embedding), output
    ``x + s * tanh(h)``: bounded by ``s`` (preprocessed units) per pixel.
``transform``
    Instance-wise distributions over differentiable affine + colour parameters
    (InstaAug-like): a small net predicts each image's mean ``mu`` and log-std ``l`` of
    (rotation, x/y translation, log-scale, brightness, log-contrast); a draw is
    ``d = range * tanh(mu + gamma * exp(l) * eps)`` (reparameterisation; ``gamma`` a
    zero-initialised per-parameter scale), applied with ``affine_grid``/``grid_sample``.
``hallucinator``
    HaBa-like: an encoder on ``[x, noise]`` gives per-pixel scale and shift,
    ``y = x * (1 + s * tanh(a)) + s * tanh(b)`` (scale init 1, shift init 0), followed by
    a zero-initialised residual transposed convolution.
``courseproject``
    The failed design of the course project, for the failure study: conv C->6, ReLU,
    conv 6->12, ReLU, ``Normal(h, noise_std).rsample() * 0.1``, ReLU(deconv 12->6),
    deconv 6->C, ``* 0.1``, ``+ x``. PyTorch's default (random) initialisation, so **not**
    the identity at start, and unbounded. ``identity_init=True`` and ``bounded=True`` switch
    on the fixes one at a time (the ablation of ``benchmarks/augdistill_failure.py``).

Every family takes ``forward(x, noise, labels=None, index=None)``; ``sample_noise(x,
generator)`` draws noise of the right shape and :meth:`AugNet.augment` does both.
``save_phi`` / ``load_phi`` store weights (safetensors) with the config that rebuilds them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from leanaug.errors import DataError, LeanaugError
from leanaug.registry import Registry
from leanaug.results import write_with

PHI_FORMAT = "leanaug-phi/1"


class AugNet(nn.Module):
    """Base class: ``phi(x, noise, labels, index) -> x'`` with the shape of ``x``."""

    family: str = ""
    needs_index: bool = False

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_classes = int(num_classes)
        self.num_images = None if num_images is None else int(num_images)
        self._options: dict[str, Any] = {}

    # ------------------------------------------------------------------ noise
    def noise_shape(self, batch: int) -> tuple[int, ...]:
        raise NotImplementedError

    def sample_noise(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise for a batch like ``x``, drawn from ``generator`` (on its
        device, CPU by default, then moved to ``x``'s device: same draws on CPU and CUDA)."""
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(
            self.noise_shape(x.shape[0]), generator=generator, device=device, dtype=x.dtype
        )
        return noise.to(x.device)

    def augment(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        index: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``phi(x)`` with a fresh noise draw."""
        return self(x, self.sample_noise(x, generator), labels=labels, index=index)

    def forward(
        self, x: Tensor, noise: Tensor, labels: Tensor | None = None, index: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        """Everything :func:`build_phi` needs to rebuild this network (JSON-able)."""
        return {
            "family": self.family,
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "options": dict(self._options),
        }

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise LeanaugError(
                f"{self.family} phi expects images N x {self.in_channels} x {self.image_size[0]} x "
                f"{self.image_size[1]}, got {tuple(x.shape)}"
            )


PHI_FAMILIES: Registry[type[AugNet]] = Registry("phi family")


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# --------------------------------------------------------------------------- free
@PHI_FAMILIES.register("free")
class FreePhi(AugNet):
    """One free residual (and noise amplitude) per training image; see the module docstring."""

    family = "free"
    needs_index = True

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
        *,
        learn_noise: bool = True,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, num_images)
        if num_images is None or num_images < 1:
            raise LeanaugError("the free phi needs the number of training images (num_images)")
        self._options = {"learn_noise": bool(learn_noise)}
        h, w = self.image_size
        self.residual = nn.Parameter(torch.zeros(num_images, in_channels, h, w))
        # per-image noise amplitude; its sign is irrelevant (the noise is symmetric)
        self.noise_scale = nn.Parameter(torch.zeros(num_images), requires_grad=bool(learn_noise))

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.in_channels, *self.image_size)

    def forward(self, x, noise, labels=None, index=None):
        self._check_input(x)
        if index is None:
            raise LeanaugError("the free phi needs index= (which training images x are)")
        index = index.to(self.residual.device).long()
        if index.numel() != x.shape[0] or int(index.max()) >= self.residual.shape[0]:
            raise LeanaugError(
                f"free phi: {index.numel()} indices for {x.shape[0]} images, max index must be < "
                f"{self.residual.shape[0]}"
            )
        r = self.residual[index].to(x.dtype)
        sigma = self.noise_scale[index].to(x.dtype).view(-1, 1, 1, 1)
        return x + r + sigma * noise


# --------------------------------------------------------------------------- residual
def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = math.gcd(4, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),  # the norm removes a bias
        nn.GroupNorm(groups, cout),
        nn.ReLU(),
    )


@PHI_FAMILIES.register("residual")
class ResidualPhi(AugNet):
    """U-Net-like residual net, ``x + scale * tanh(h([x, noise]))``; identity at init."""

    family = "residual"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
        *,
        width: int = 16,
        noise_channels: int = 4,
        scale: float = 1.0,
        class_embedding: bool = True,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, num_images)
        if width < 1 or noise_channels < 0 or not scale > 0:
            raise LeanaugError(
                f"residual phi: need width >= 1, noise_channels >= 0, scale > 0; got {width}, "
                f"{noise_channels}, {scale}"
            )
        self._options = dict(
            width=int(width),
            noise_channels=int(noise_channels),
            scale=float(scale),
            class_embedding=bool(class_embedding),
        )
        self.noise_channels = int(noise_channels)
        self.scale = float(scale)
        c, w = in_channels, int(width)
        self.enc = _block(c + self.noise_channels, w)
        self.down = _block(w, 2 * w, stride=2)
        self.mid = _block(2 * w, 2 * w)
        self.dec = _block(3 * w, w)
        self.out = _zero(nn.Conv2d(w, c, 3, padding=1))
        self.embed = nn.Embedding(num_classes, w) if class_embedding else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.1)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.noise_channels, *self.image_size)

    def forward(self, x, noise, labels=None, index=None):
        self._check_input(x)
        inp = torch.cat([x, noise.to(x)], 1) if self.noise_channels else x
        skip = self.enc(inp)
        if self.embed is not None and labels is not None:
            skip = skip + self.embed(labels.to(x.device).long()).to(x.dtype)[:, :, None, None]
        h = self.mid(self.down(skip))
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        h = self.dec(torch.cat([h, skip], 1))
        return x + self.scale * torch.tanh(self.out(h))


# --------------------------------------------------------------------------- transform
# (name, range): a draw d_k lies in (-range_k, range_k)
TRANSFORM_PARAMETERS: tuple[tuple[str, float], ...] = (
    ("rotation_deg", 30.0),
    ("translate_x", 0.2),  # fraction of the half-width (affine_grid units are [-1, 1])
    ("translate_y", 0.2),
    ("log_scale", 0.3),
    ("brightness", 0.5),  # preprocessed units, added
    ("log_contrast", 0.5),  # contrast factor exp(d) around the image mean
)


@PHI_FAMILIES.register("transform")
class TransformPhi(AugNet):
    """Instance-wise distributions over affine + colour parameters (InstaAug-like)."""

    family = "transform"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
        *,
        width: int = 16,
        padding: str = "border",
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, num_images)
        if padding not in ("border", "zeros", "reflection"):
            raise LeanaugError(
                f"transform phi: padding {padding!r} is not border, zeros or reflection"
            )
        self._options = dict(width=int(width), padding=padding)
        self.padding = padding
        k = len(TRANSFORM_PARAMETERS)
        self.register_buffer(
            "ranges", torch.tensor([r for _, r in TRANSFORM_PARAMETERS]), persistent=False
        )
        self.features = nn.Sequential(
            _block(in_channels, width, stride=2),
            _block(width, width, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = _zero(nn.Linear(width, 2 * k))  # mean and log-std, zero at start
        self.gamma = nn.Parameter(torch.zeros(k))  # std scale: zero at start (identity)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, len(TRANSFORM_PARAMETERS))

    def distribution(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image mean and std (before the tanh squashing), each N x K."""
        mu, log_std = self.head(self.features(x)).chunk(2, dim=1)
        return mu, self.gamma.to(x.dtype) * torch.exp(log_std.clamp(max=5.0))

    def parameters_of(self, x: Tensor, noise: Tensor) -> Tensor:
        mu, std = self.distribution(x)
        return self.ranges.to(x) * torch.tanh(mu + std * noise.to(x))

    def forward(self, x, noise, labels=None, index=None):
        self._check_input(x)
        d = self.parameters_of(x, noise)
        rot = d[:, 0] * (math.pi / 180.0)
        tx, ty, scale = d[:, 1], d[:, 2], torch.exp(d[:, 3])
        cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
        eye = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand_as(theta)
        size = list(x.shape)
        warp = F.grid_sample(
            x,
            F.affine_grid(theta, size, align_corners=False),
            padding_mode=self.padding,
            align_corners=False,
        )
        base = F.grid_sample(
            x,
            F.affine_grid(eye, size, align_corners=False),
            padding_mode=self.padding,
            align_corners=False,
        )
        # x + (warp - base): the identity draw gives x *exactly* (grid_sample at the
        # identity grid is x only up to float rounding); the gradient is that of warp.
        y = x + (warp - base)
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * torch.exp(d[:, 5]).view(-1, 1, 1, 1) + mean
        return y + d[:, 4].view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- hallucinator
@PHI_FAMILIES.register("hallucinator")
class HallucinatorPhi(AugNet):
    """HaBa-like per-pixel scale and shift from an encoder on ``[x, noise]``."""

    family = "hallucinator"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
        *,
        width: int = 16,
        noise_channels: int = 4,
        scale: float = 1.0,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, num_images)
        if not scale > 0:
            raise LeanaugError(f"hallucinator phi: scale must be > 0, got {scale}")
        self._options = dict(
            width=int(width), noise_channels=int(noise_channels), scale=float(scale)
        )
        self.noise_channels = int(noise_channels)
        self.scale = float(scale)
        c = in_channels
        self.encoder = nn.Sequential(_block(c + self.noise_channels, width), _block(width, width))
        self.to_scale = _zero(nn.Conv2d(width, c, 3, padding=1))  # scale 1 + s*tanh(0) = 1
        self.to_shift = _zero(nn.Conv2d(width, c, 3, padding=1))  # shift 0
        self.decoder = _zero(nn.ConvTranspose2d(c, c, 3, padding=1))  # residual, zero at start

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.noise_channels, *self.image_size)

    def forward(self, x, noise, labels=None, index=None):
        self._check_input(x)
        inp = torch.cat([x, noise.to(x)], 1) if self.noise_channels else x
        h = self.encoder(inp)
        s = self.scale
        y = x * (1.0 + s * torch.tanh(self.to_scale(h))) + s * torch.tanh(self.to_shift(h))
        return y + self.decoder(y)


# --------------------------------------------------------------------------- course project
@PHI_FAMILIES.register("courseproject")
class CourseProjectPhi(AugNet):
    """The course project's "DistNet2" (not identity at start, unbounded); see module docstring.

    ``identity_init``: zero-initialise the last deconvolution (phi = x at start).
    ``bounded``: ``x + bound * tanh(r)`` instead of ``x + r`` for the residual ``r``.
    ``noise_std``: the std of ``Normal(h, noise_std)`` (1 in the course project).
    """

    family = "courseproject"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        num_images: int | None = None,
        *,
        identity_init: bool = False,
        bounded: bool = False,
        bound: float = 1.0,
        noise_std: float = 1.0,
        scale: float = 0.1,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, num_images)
        self._options = dict(
            identity_init=bool(identity_init),
            bounded=bool(bounded),
            bound=float(bound),
            noise_std=float(noise_std),
            scale=float(scale),
        )
        c = in_channels
        self.conv1 = nn.Conv2d(c, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.deconv1 = nn.ConvTranspose2d(12, 6, 3, padding=1)
        self.deconv2 = nn.ConvTranspose2d(6, c, 3, padding=1)
        if identity_init:
            _zero(self.deconv2)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 12, *self.image_size)

    def forward(self, x, noise, labels=None, index=None):
        self._check_input(x)
        o = self._options
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = (h + o["noise_std"] * noise.to(x)) * o["scale"]  # Normal(h, std).rsample() * scale
        r = self.deconv2(F.relu(self.deconv1(h))) * o["scale"]
        if o["bounded"]:
            r = o["bound"] * torch.tanh(r)
        return x + r


# --------------------------------------------------------------------------- build / files
def build_phi(
    family: str,
    in_channels: int,
    image_size: tuple[int, int] | list[int],
    num_classes: int,
    num_images: int | None = None,
    options: dict[str, Any] | None = None,
) -> AugNet:
    """A ``phi`` of ``family`` (unknown names list the valid ones; bad options are named)."""
    return PHI_FAMILIES.create(  # checks the options, listing the valid ones
        family, options, in_channels, tuple(image_size), num_classes, num_images
    )


def phi_from_config(config: dict[str, Any]) -> AugNet:
    return build_phi(
        config["family"],
        config["in_channels"],
        config["image_size"],
        config["num_classes"],
        config.get("num_images"),
        config.get("options"),
    )


def save_phi(
    path: str | os.PathLike[str], phi: AugNet, metadata: dict[str, Any] | None = None
) -> Path:
    """Weights (safetensors) + ``config`` (rebuilds the net) + free-form ``metadata`` JSON."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in phi.state_dict().items()}
    meta = {
        "format": PHI_FORMAT,
        "config": json.dumps(phi.config()),
        "metadata": json.dumps(metadata or {}, default=str),
    }
    return write_with(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_phi(path: str | os.PathLike[str]) -> tuple[AugNet, dict[str, Any]]:
    """``(phi, metadata)`` from a file written by :func:`save_phi` (phi in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"phi file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no items()
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise DataError(f"{path}: not a readable phi file ({exc})") from exc
    if meta.get("format") != PHI_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r}, expected {PHI_FORMAT!r}")
    phi = phi_from_config(json.loads(meta["config"]))
    missing, unexpected = phi.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit the config (missing {missing}, extra {unexpected})"
        )
    phi.eval()
    return phi, json.loads(meta.get("metadata", "{}"))
