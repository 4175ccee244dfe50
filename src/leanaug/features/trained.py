"""Featurizers backed by a network trained once, then frozen and cached on disk.

The network is trained on clean images (the featurizer's own training set, which for
``resnet`` can be a different data set than the subsampling task's: all 10 CIFAR-10
classes, as in Kuchnik & Smith), then frozen. The trained weights are cached under
``leanaug.paths.cache_root()/featurizers/<name>-<key>.safetensors`` where ``key`` hashes
the training images and labels, the featurizer's configuration and its seed, so a second
``fit`` with the same inputs loads the file instead of retraining.

``fit`` also takes float images in [0, 1] (augmented copies) and per-row sample weights,
which weight the training cross-entropy; ``leanaug subsample run --featurizer-refit``
trains a fresh net this way on every fit's rows (originals plus the selected points'
copies, with the selection's weights), as the reference does with its MNIST CNN.
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
# Training options added after the first cached nets: left out of the cache key at their
# defaults, so a net trained before they existed keeps its key.
_KEY_DEFAULTS = {
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "constant",
    "label_smoothing": 0.0,
    "precision": "float32",
    "weights": None,
    "weights_sha256": None,
}
OPTIMIZERS = ("adam", "sgd")
#: ``constant`` lr; ``onecycle``: linear warm-up over the first 20 % of the steps to
#: ``lr``, then linear decay to 0 (the short-schedule recipe of fast CIFAR training).
SCHEDULES = ("constant", "onecycle")
#: ``bfloat16``: autocast the training steps on CUDA (features are always float32).
PRECISIONS = ("float32", "bfloat16")


def data_fingerprint(
    images: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
) -> str:
    """A content hash of a training set (shape, dtype and bytes of images and labels, and
    of the sample weights when given: without them the hash is what it always was)."""
    h = hashlib.blake2b(digest_size=16)
    arrays = (images, labels) if sample_weight is None else (images, labels, sample_weight)
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float images (already in [0, 1]) as they are."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 ``(n,)``, finite, >= 0 with a positive sum; ``None``
    when not given **or when every weight is the same**: a weighted mean with equal
    weights is the plain mean, so constant weights take exactly the unweighted path (the
    same net bit for bit, the same cache key).

    Examples
    --------
    >>> check_sample_weight(np.ones(3), 3) is None
    True
    >>> check_sample_weight([1, 0.5, 0.5], 3).tolist()
    [1.0, 0.5, 0.5]
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise LeanaugError(f"featurizer.fit: sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise LeanaugError("featurizer.fit: sample_weight must be finite, >= 0 and not all 0")
    return None if np.all(w == w[0]) else w


def batch_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The training loss of one minibatch: the mean cross-entropy, or with ``weights`` the
    weighted mean ``sum_i w_i ce_i / sum_i w_i`` (a batch whose weights are all 0 gives 0,
    no gradient).

    Examples
    --------
    A row of weight 2 counts as that row twice:

    >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    >>> twice = batch_loss(logits[[0, 0, 1]], labels[[0, 0, 1]])
    >>> weighted = batch_loss(logits, labels, torch.tensor([2.0, 1.0]))
    >>> bool(torch.allclose(twice, weighted))
    True
    """
    if weights is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    return (ce * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


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
    override ``_training_data`` (to train on another data set), ``_augment_batch`` and
    ``architecture``.

    Parameters
    ----------
    epochs, batch_size, lr, seed :
        Training length, minibatch size, (peak) learning rate and the seed of the
        initialisation, batch order and training augmentation.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``.
    cache : bool
        Keep the trained weights under ``$LEANAUG_CACHE/featurizers`` and reuse them.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with (Nesterov) ``momentum``; both with ``weight_decay``.
    schedule : {"constant", "onecycle"}
        Constant lr, or a linear warm-up over the first 20 % of the steps and a linear
        decay to 0.
    label_smoothing : float
        Of the training cross-entropy.
    precision : {"float32", "bfloat16"}
        ``bfloat16`` autocasts the training steps on CUDA (ignored on the CPU).
    weights : str, optional
        A file written by :meth:`save_weights`: load that net instead of training (the
        training data is then never loaded); ``weights_sha256`` checks the file.

    After ``fit``: ``net_`` (frozen, eval mode), ``cache_path_``, ``loaded_from_cache_``
    (True when no training happened: the weights came from the cache or the ``weights``
    file) and ``train_accuracy_`` (accuracy of the final net on its own training set's
    last epoch).

    Examples
    --------
    >>> import tempfile
    >>> from leanaug.data import load_dataset
    >>> ds = load_dataset("digits", classes=[3, 8])
    >>> f = SmallCNNFeaturizer(epochs=1, batch_size=64, cache=False, progress=False,
    ...                        device="cpu").fit(ds.train_images, ds.train_labels)
    >>> f.transform(ds.train_images[:5]).shape
    (5, 512)
    >>> path = tempfile.mkdtemp() + "/smallcnn.safetensors"
    >>> digest = f.save_weights(path, dtype="float32")
    >>> g = SmallCNNFeaturizer(weights=path, weights_sha256=digest, device="cpu")
    >>> g = g.fit(ds.train_images, ds.train_labels)  # loads, does not train
    >>> bool(np.array_equal(g.transform(ds.train_images[:5]), f.transform(ds.train_images[:5])))
    True
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
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        label_smoothing: float = 0.0,
        precision: str = "float32",
        weights: str | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.seed = int(seed)
        self.device = device
        self.cache = bool(cache)
        self.progress = bool(progress)
        self.transform_batch_size = int(transform_batch_size)
        self.optimizer = optimizer
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.label_smoothing = float(label_smoothing)
        self.precision = precision
        self.weights = None if weights is None else str(weights)
        self.weights_sha256 = weights_sha256
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise LeanaugError(f"{self.name}: epochs and batch_size must be >= 1 and lr > 0")
        for what, value, valid in (
            ("optimizer", optimizer, OPTIMIZERS),
            ("schedule", schedule, SCHEDULES),
            ("precision", precision, PRECISIONS),
        ):
            if value not in valid:
                raise LeanaugError(
                    f"{self.name}: unknown {what} {value!r}; valid: {', '.join(valid)}"
                )
        if not 0.0 <= self.label_smoothing < 1.0 or self.weight_decay < 0 or self.momentum < 0:
            raise LeanaugError(
                f"{self.name}: label_smoothing must be in [0, 1), weight_decay and momentum >= 0"
            )

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
    def key_params(self) -> dict[str, Any]:
        """The parameters that say which net is trained (the cache key's and the saved
        file's ``config``)."""
        return {
            k: v
            for k, v in self.get_params().items()
            if k not in _NOT_IN_KEY and not (k in _KEY_DEFAULTS and v == _KEY_DEFAULTS[k])
        }

    def cache_key(
        self,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> str:
        config = self.key_params()
        text = json.dumps(
            {
                "featurizer": self.name,
                "config": config,
                "data": data_fingerprint(train_images, train_labels, sample_weight),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def refit_obstacle(self) -> str | None:
        """Why this featurizer cannot be trained on the (weighted) rows given to ``fit``,
        e.g. for ``--featurizer-refit``; ``None`` when it can."""
        if self.weights is not None:
            return f"{self.name} with weights= loads a fixed net and trains nothing"
        return None

    def fit(
        self, images: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> TrainedNetFeaturizer:
        """Train the net on ``images`` (or load it from the cache, or from the ``weights``
        file, in which case nothing is trained and the training data is not loaded), then
        freeze it.

        Parameters
        ----------
        images : ndarray
            ``N x C x H x W``, uint8 (0..255) or float in [0, 1] (e.g. augmented copies
            next to their originals).
        labels : ndarray
            ``(N,)`` integer class indices.
        sample_weight : ndarray, optional
            ``(N,)`` weights >= 0 of the training cross-entropy: each minibatch's loss is
            the weighted mean ``sum w_i ce_i / sum w_i`` (:func:`batch_loss`). ``None`` or
            equal weights: the plain mean, the unweighted net bit for bit. The input
            normalisation statistics are the unweighted per-channel mean and standard
            deviation of ``images``. Not allowed when :meth:`refit_obstacle` says the net
            is not trained on ``images``.

        Returns
        -------
        TrainedNetFeaturizer
            ``self``, fitted and frozen.
        """
        check_fit_inputs(images, labels)
        weights = check_sample_weight(sample_weight, images.shape[0])
        if sample_weight is not None and self.refit_obstacle() is not None:
            raise LeanaugError(
                f"featurizer.fit: sample_weight is for a net trained on the given images, but "
                f"{self.refit_obstacle()}"
            )
        if images.dtype != np.uint8:
            images = images.astype(np.float32, copy=False)  # what training scales them to
        self.device_ = resolve_device(self.device)
        if self.weights is not None:
            self.image_shape_ = tuple(int(s) for s in images.shape[1:])
            self.net_ = self._load_weights(images)
            self.cache_path_ = Path(self.weights)
            self.loaded_from_cache_ = True
            return self._freeze()
        train_images, train_labels = self._training_data(images, labels)
        if tuple(train_images.shape[1:]) != tuple(images.shape[1:]):
            raise LeanaugError(
                f"{self.name}: its training images have shape {tuple(train_images.shape[1:])} but the "
                f"task's images have shape {tuple(images.shape[1:])}"
            )
        self.image_shape_ = tuple(int(s) for s in train_images.shape[1:])
        num_classes = int(train_labels.max()) + 1
        key = self.cache_key(train_images, train_labels, weights)
        self.cache_path_ = cache_root() / "featurizers" / f"{self.name}-{key}.safetensors"
        if self.cache and self.cache_path_.is_file():
            self.net_ = self._load(self.cache_path_)
            self.loaded_from_cache_ = True
        else:
            self.net_ = self._train(train_images, train_labels, num_classes, weights)
            self.loaded_from_cache_ = False
            if self.cache:
                self._save(self.cache_path_, num_classes)
        return self._freeze()

    def _freeze(self) -> TrainedNetFeaturizer:
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
    def _optimizer(self, net: nn.Module, total_steps: int) -> tuple[Any, Any]:
        """The optimizer and its per-step lr schedule (``None``: constant)."""
        if self.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                net.parameters(),
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        else:
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "constant":
            return opt, None
        warm = max(1, round(0.2 * total_steps))

        def factor(step: int) -> float:  # step counts from 0; lr reaches 0 after the last
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total_steps - step - 1) / max(1, total_steps - warm))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def _train(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        sample_weight: np.ndarray | None = None,
    ) -> nn.Module:
        device = self.device_
        fork_devices = [device] if device.type == "cuda" else []
        autocast = self.precision == "bfloat16" and device.type == "cuda"
        with torch.random.fork_rng(devices=fork_devices):
            # Initialisation and dropout draw from the global RNG, seeded from the
            # featurizer's identity; the batch order has its own generator.
            torch.manual_seed(derive_seed(self.seed, "featurizer", self.name, "init"))
            net = self._build(self.image_shape_, num_classes).to(device)
            if device.type == "cuda":
                net = net.to(memory_format=torch.channels_last)  # faster cuDNN convolutions
            x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
            w_all = (
                None
                if sample_weight is None
                else torch.from_numpy(sample_weight.astype(np.float32)).to(device)
            )
            with torch.no_grad():
                xf = _scaled(x_all)
                net.normalize.set_stats(xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)))
                del xf
            order_gen = torch.Generator().manual_seed(
                derive_seed(self.seed, "featurizer", self.name, "order")
            )
            aug_gen = torch.Generator().manual_seed(
                derive_seed(self.seed, "featurizer", self.name, "augment")
            )
            n = x_all.shape[0]
            n_batches = (n + self.batch_size - 1) // self.batch_size
            opt, schedule = self._optimizer(net, self.epochs * n_batches)
            net.train()
            with _progress(self.progress) as bar:
                task = bar.add_task(
                    f"training {self.name} featurizer", total=self.epochs * n_batches, info=""
                )
                for epoch in range(self.epochs):
                    perm = torch.randperm(n, generator=order_gen).to(device)
                    # Summed on the device: no host sync per batch on a GPU.
                    correct = torch.zeros((), dtype=torch.int64, device=device)
                    total_loss = torch.zeros((), dtype=torch.float64, device=device)
                    for b in range(n_batches):
                        idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
                        xb = self._augment_batch(_scaled(x_all[idx]), aug_gen)
                        yb = y_all[idx]
                        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                            logits = net(xb)
                        wb = None if w_all is None else w_all[idx]
                        loss = batch_loss(logits.float(), yb, wb, self.label_smoothing)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        if schedule is not None:
                            schedule.step()
                        total_loss += loss.detach().double() * len(idx)
                        correct += (logits.detach().argmax(1) == yb).sum()
                        bar.advance(task)
                    self.train_accuracy_ = int(correct) / n
                    self.train_loss_ = float(total_loss) / n
                    bar.update(
                        task,
                        info=f"epoch {epoch + 1} loss {self.train_loss_:.3f} acc {self.train_accuracy_:.3f}",
                    )
        return net

    def architecture(self) -> dict[str, Any]:
        """The parameters that shape the network (a weights file must have been written
        with the same ones)."""
        return {}

    def save_weights(self, path: str | Path, dtype: str = "float16") -> str:
        """Write the fitted net to ``path`` (safetensors; parameters in ``dtype``, buffers
        such as the input and batch-norm statistics in float32) for the ``weights``
        parameter of another featurizer; returns the file's sha256.

        float16 halves the file (an artifact kept in a repository) and changes the
        features by float16 rounding of the weights only.
        """
        if not hasattr(self, "net_"):
            raise LeanaugError(f"{type(self).__name__}.save_weights called before fit")
        if dtype not in ("float16", "float32"):
            raise LeanaugError(f"save_weights: dtype must be float16 or float32, got {dtype!r}")
        path = Path(path)
        self._save(path, int(self.net_.head.out_features), getattr(torch, dtype))
        return file_sha256(path)

    def _save(self, path: Path, num_classes: int, dtype: torch.dtype = torch.float32) -> None:
        params = {name for name, _ in self.net_.named_parameters()}
        tensors = {
            k: v.detach().to("cpu", dtype if k in params else v.dtype).contiguous()
            for k, v in self.net_.state_dict().items()
        }
        config = {k: v for k, v in self.key_params().items() if not k.startswith("weights")}
        metadata = {
            "featurizer": self.name,
            "config": json.dumps(config, sort_keys=True),
            "architecture": json.dumps(self.architecture(), sort_keys=True),
            "num_classes": str(num_classes),
            "image_shape": json.dumps(list(self.image_shape_)),
            "train_accuracy": str(getattr(self, "train_accuracy_", float("nan"))),
            "train_loss": str(getattr(self, "train_loss_", float("nan"))),
        }
        write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def _read(self, path: Path, hint: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
            int(metadata["num_classes"])
            json.loads(metadata["image_shape"])
        except Exception as exc:  # a truncated or foreign file: say which one
            raise LeanaugError(f"cannot read featurizer weights {path}: {exc} ({hint})") from exc
        return metadata, tensors

    def _load(self, path: Path, hint: str = "delete it to retrain") -> nn.Module:
        metadata, tensors = self._read(path, hint)
        num_classes = int(metadata["num_classes"])
        image_shape = tuple(json.loads(metadata["image_shape"]))
        net = self._build(image_shape, num_classes)  # type: ignore[arg-type]
        net.load_state_dict(tensors)  # copy_ casts float16 weights into the float32 net
        self.train_accuracy_ = float(metadata.get("train_accuracy", "nan"))
        self.train_loss_ = float(metadata.get("train_loss", "nan"))
        return net.to(self.device_)

    def _load_weights(self, images: np.ndarray) -> nn.Module:
        """The net of the ``weights`` file, checked: hash, featurizer, architecture and
        image shape must all agree with this featurizer and the task's images."""
        path = Path(self.weights)  # type: ignore[arg-type]
        if not path.is_file():
            raise LeanaugError(f"{self.name}: weights file {path} does not exist")
        if self.weights_sha256 is not None:
            digest = file_sha256(path)
            if digest != self.weights_sha256:
                raise LeanaugError(
                    f"{self.name}: weights file {path} has sha256 {digest}, expected "
                    f"{self.weights_sha256} (a different or damaged file)"
                )
        metadata, _ = self._read(path, "not a featurizer weights file")
        stored = (metadata.get("featurizer"), json.loads(metadata.get("architecture", "{}")))
        if stored != (self.name, self.architecture()):
            raise LeanaugError(
                f"{self.name}: weights file {path} holds featurizer {stored[0]!r} with "
                f"{stored[1]}, but this featurizer is {self.name!r} with {self.architecture()}"
            )
        shape = tuple(json.loads(metadata["image_shape"]))
        if shape != tuple(images.shape[1:]):
            raise LeanaugError(
                f"{self.name}: weights file {path} was trained on images of shape {shape}, "
                f"the task's images have shape {tuple(images.shape[1:])}"
            )
        return self._load(path, "not a featurizer weights file")


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        label_smoothing: float = 0.0,
        precision: str = "float32",
        weights: str | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            cache=cache,
            progress=progress,
            transform_batch_size=transform_batch_size,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=schedule,
            label_smoothing=label_smoothing,
            precision=precision,
            weights=weights,
            weights_sha256=weights_sha256,
        )
        self.depth = int(depth)
        self.width = int(width)
        self.pretrain_dataset = pretrain_dataset
        self.pretrain_n_train = None if pretrain_n_train is None else int(pretrain_n_train)
        self.data_dir = None if data_dir is None else str(data_dir)
        self.train_augment = bool(train_augment)
        # Fail on a bad depth now, not after loading data.
        PreActResNet((1, 8, 8), 2, depth=self.depth, width=self.width)

    def architecture(self) -> dict[str, Any]:
        return {"depth": self.depth, "width": self.width}

    def refit_obstacle(self) -> str | None:
        if self.pretrain_dataset:
            return (
                f"resnet with pretrain_dataset={self.pretrain_dataset} trains on that data set, "
                "not on the images given to fit"
            )
        return super().refit_obstacle()

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
