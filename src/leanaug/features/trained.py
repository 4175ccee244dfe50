"""Featurizers backed by a network trained once, then frozen and cached on disk.

The network is trained on clean images (the featurizer's own training set, which for
``resnet`` can be a different data set than the subsampling task's: all 10 CIFAR-10
classes, as in Kuchnik & Smith), then frozen. The trained weights are cached under
``leanaug.paths.cache_root()/featurizers/<name>-<key>.safetensors`` where ``key`` hashes
the training images and labels, the featurizer's configuration and its seed, so a second
``fit`` with the same inputs loads the file instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from leanaug.device import resolve_device
from leanaug.errors import LeanaugError
from leanaug.features.base import FEATURIZERS, Featurizer, as_float_images, check_fit_inputs
from leanaug.features.networks import PreActResNet, SmallCNN
from leanaug.paths import cache_root
from leanaug.progress import Progress
from leanaug.results import write_with
from leanaug.seeding import derive_seed

# Parameters that change where/how a net is computed, not which net it is.
_NOT_IN_KEY = ("device", "cache", "data_dir", "progress", "transform_batch_size")


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A content hash of a training set (shape, dtype and bytes of images and labels)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (images, labels):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# Progress bars go to stderr (stdout carries results) and only to a terminal.
def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        transient=True,
        disable=not enabled,
    )


class TrainedNetFeaturizer(Featurizer):
    """Shared training, caching and batched feature extraction for network featurizers.

    Subclasses set ``name`` and implement ``_build(image_shape, num_classes)``; they may
    override ``_training_data`` (to train on another data set) and ``_augment_batch``.

    After ``fit``: ``net_`` (frozen, eval mode), ``cache_path_``, ``loaded_from_cache_``
    (True when the weights came from the cache, i.e. no training happened) and
    ``train_accuracy_`` (accuracy of the final net on its own training set's last epoch).
    """

    name = ""

    def __init__(
        self,
        epochs: int = 40,
        batch_size: int = 512,
        lr: float = 1e-3,
        seed: int = 0,
        device: str = "auto",
        cache: bool = True,
        progress: bool = True,
        transform_batch_size: int = 1024,
    ) -> None:
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.seed = int(seed)
        self.device = device
        self.cache = bool(cache)
        self.progress = bool(progress)
        self.transform_batch_size = int(transform_batch_size)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise LeanaugError(f"{self.name}: epochs and batch_size must be >= 1 and lr > 0")

    # -- hooks --------------------------------------------------------------------------
    def _build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def _training_data(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return images, np.asarray(labels, dtype=np.int64)

    def _augment_batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x

    # -- fit / transform ----------------------------------------------------------------
    def cache_key(self, train_images: np.ndarray, train_labels: np.ndarray) -> str:
        config = {k: v for k, v in self.get_params().items() if k not in _NOT_IN_KEY}
        text = json.dumps(
            {
                "featurizer": self.name,
                "config": config,
                "data": data_fingerprint(train_images, train_labels),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def fit(self, images: np.ndarray, labels: np.ndarray) -> TrainedNetFeaturizer:
        check_fit_inputs(images, labels)
        train_images, train_labels = self._training_data(images, labels)
        if tuple(train_images.shape[1:]) != tuple(images.shape[1:]):
            raise LeanaugError(
                f"{self.name}: its training images have shape {tuple(train_images.shape[1:])} but the "
                f"task's images have shape {tuple(images.shape[1:])}"
            )
        self.image_shape_ = tuple(int(s) for s in train_images.shape[1:])
        num_classes = int(train_labels.max()) + 1
        self.device_ = resolve_device(self.device)
        key = self.cache_key(train_images, train_labels)
        self.cache_path_ = cache_root() / "featurizers" / f"{self.name}-{key}.safetensors"
        if self.cache and self.cache_path_.is_file():
            self.net_ = self._load(self.cache_path_)
            self.loaded_from_cache_ = True
        else:
            self.net_ = self._train(train_images, train_labels, num_classes)
            self.loaded_from_cache_ = False
            if self.cache:
                self._save(self.cache_path_, num_classes)
        self.net_.eval()
        for p in self.net_.parameters():
            p.requires_grad_(False)
        return self

    def transform(self, images: Any) -> np.ndarray:
        x = as_float_images(images)
        self._check_fitted(x)
        out = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.transform_batch_size):
                xb = x[start : start + self.transform_batch_size].to(self.device_)
                out.append(self.net_.features(xb).float().cpu())
        if not out:
            return np.zeros((0, self.net_.feature_dim), dtype=np.float32)
        return torch.cat(out).numpy()

    # -- internals ----------------------------------------------------------------------
    def _train(self, images: np.ndarray, labels: np.ndarray, num_classes: int) -> nn.Module:
        device = self.device_
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            # Initialisation and dropout draw from the global RNG, seeded from the
            # featurizer's identity; the batch order has its own generator.
            torch.manual_seed(derive_seed(self.seed, "featurizer", self.name, "init"))
            net = self._build(self.image_shape_, num_classes).to(device)
            x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
            with torch.no_grad():
                xf = x_all.float().div_(255.0)
                net.normalize.set_stats(xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)))
                del xf
            order_gen = torch.Generator().manual_seed(
                derive_seed(self.seed, "featurizer", self.name, "order")
            )
            aug_gen = torch.Generator().manual_seed(
                derive_seed(self.seed, "featurizer", self.name, "augment")
            )
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            n = x_all.shape[0]
            n_batches = (n + self.batch_size - 1) // self.batch_size
            net.train()
            with _progress(self.progress) as bar:
                task = bar.add_task(
                    f"training {self.name} featurizer", total=self.epochs * n_batches, info=""
                )
                for epoch in range(self.epochs):
                    perm = torch.randperm(n, generator=order_gen).to(device)
                    correct = 0
                    total_loss = 0.0
                    for b in range(n_batches):
                        idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
                        xb = x_all[idx].float().div_(255.0)
                        xb = self._augment_batch(xb, aug_gen)
                        yb = y_all[idx]
                        logits = net(xb)
                        loss = F.cross_entropy(logits, yb)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total_loss += float(loss.detach()) * len(idx)
                        correct += int((logits.detach().argmax(1) == yb).sum())
                        bar.advance(task)
                    self.train_accuracy_ = correct / n
                    self.train_loss_ = total_loss / n
                    bar.update(
                        task,
                        info=f"epoch {epoch + 1} loss {self.train_loss_:.3f} acc {self.train_accuracy_:.3f}",
                    )
        return net

    def _save(self, path: Path, num_classes: int) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        metadata = {
            "featurizer": self.name,
            "config": json.dumps(
                {k: v for k, v in self.get_params().items() if k not in _NOT_IN_KEY}, sort_keys=True
            ),
            "num_classes": str(num_classes),
            "image_shape": json.dumps(list(self.image_shape_)),
            "train_accuracy": str(getattr(self, "train_accuracy_", float("nan"))),
            "train_loss": str(getattr(self, "train_loss_", float("nan"))),
        }
        write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def _load(self, path: Path) -> nn.Module:
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
            num_classes = int(metadata["num_classes"])
            image_shape = tuple(json.loads(metadata["image_shape"]))
        except Exception as exc:  # a truncated or foreign file: say which one
            raise LeanaugError(
                f"cannot read cached featurizer {path}: {exc} (delete it to retrain)"
            ) from exc
        net = self._build(image_shape, num_classes)  # type: ignore[arg-type]
        net.load_state_dict(tensors)
        self.train_accuracy_ = float(metadata.get("train_accuracy", "nan"))
        self.train_loss_ = float(metadata.get("train_loss", "nan"))
        return net.to(self.device_)


@FEATURIZERS.register("smallcnn")
class SmallCNNFeaturizer(TrainedNetFeaturizer):
    """512-d features from :class:`~leanaug.features.networks.SmallCNN` trained on the
    clean training set (Adam, batch 512; the paper trains 40 epochs on MNIST)."""

    name = "smallcnn"

    def _build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return SmallCNN(image_shape, num_classes)


@FEATURIZERS.register("resnet")
class ResNetFeaturizer(TrainedNetFeaturizer):
    """Global-average-pooled features of a CIFAR pre-activation ResNet (v2).

    ``pretrain_dataset`` (e.g. ``"cifar10"``) trains the net on that data set's full
    training split, all classes (``pretrain_n_train`` caps it), instead of on the images
    passed to ``fit``; Kuchnik & Smith featurize CIFAR-10 airplane-vs-automobile with a
    ResNet trained on all 10 classes. ``train_augment`` applies the usual CIFAR training
    augmentation (random 4-pixel-padded crop and horizontal flip) while training.
    """

    name = "resnet"

    def __init__(
        self,
        depth: int = 20,
        width: int = 16,
        pretrain_dataset: str | None = None,
        pretrain_n_train: int | None = None,
        data_dir: str | None = None,
        train_augment: bool = True,
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        device: str = "auto",
        cache: bool = True,
        progress: bool = True,
        transform_batch_size: int = 1024,
    ) -> None:
        super().__init__(
            epochs, batch_size, lr, seed, device, cache, progress, transform_batch_size
        )
        self.depth = int(depth)
        self.width = int(width)
        self.pretrain_dataset = pretrain_dataset
        self.pretrain_n_train = None if pretrain_n_train is None else int(pretrain_n_train)
        self.data_dir = None if data_dir is None else str(data_dir)
        self.train_augment = bool(train_augment)
        # Fail on a bad depth now, not after loading data.
        PreActResNet((1, 8, 8), 2, depth=self.depth, width=self.width)

    def _build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return PreActResNet(image_shape, num_classes, depth=self.depth, width=self.width)

    def _training_data(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.pretrain_dataset:
            return super()._training_data(images, labels)
        from leanaug.data import load_dataset

        ds = load_dataset(
            self.pretrain_dataset,
            data_dir=self.data_dir,
            classes=None,
            n_train=self.pretrain_n_train,
            subset="first",
            seed=self.seed,
        )
        return ds.train_images, ds.train_labels

    def _augment_batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not self.train_augment:
            return x
        n, c, h, w = x.shape
        pad = 4
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        # Per-image crops by advanced indexing: one gather, no Python loop over images.
        cropped = padded[batch, chans, rows, cols]
        return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)
