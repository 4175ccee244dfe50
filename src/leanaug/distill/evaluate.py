"""Evaluate a (distilled) training set: train fresh ConvNets on it, test on real data.

The protocol of MTT (Cazenavette et al. 2022): a freshly initialised network per run,
SGD with momentum 0.9, weight decay 5e-4, batch 256, DSA on, 1000 epochs, the learning
rate multiplied by 0.1 after half of the epochs; 5 runs. Two figures come out:

* **final** test accuracy: after the last epoch (what a user of the images would get);
* **best-epoch** test accuracy: the maximum over the test evaluations made every
  ``eval_every`` epochs (and at the end). Papers quote this kind of figure; it selects
  on the test set and is therefore optimistic. Always report it labelled as such.

Means and standard deviations are over runs (``numpy.std``, ddof 0, as the reference).

Image files (``save_image_set`` / ``load_image_set``) are safetensors with tensors
``images`` (N x C x H x W float32, in the experts' *preprocessed* space: normalised, and
ZCA-whitened when the experts were), ``labels`` (N int64, or N x K float soft labels) and
optionally ``lr`` (a scalar: the learned student step size), plus a ``metadata`` JSON
string.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from leanaug.device import resolve_device
from leanaug.distill.dsa import DEFAULT_STRATEGY, DSA
from leanaug.distill.experts import build_network
from leanaug.distill.networks import NETWORKS, evaluation_network
from leanaug.distill.training import accuracy, train_epoch
from leanaug.errors import DataError, LeanaugError
from leanaug.results import write_with
from leanaug.seeding import derive_seed, numpy_rng, torch_generator

IMAGES_FORMAT = "leanaug-images/1"


# --------------------------------------------------------------------------- image files
@dataclass
class ImageSet:
    """A training set to evaluate: images in preprocessed space, labels, optional lr."""

    images: Tensor
    labels: Tensor
    lr: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def save_image_set(
    path: str | os.PathLike[str],
    images: Tensor,
    labels: Tensor,
    lr: float | Tensor | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an image set atomically (see the module docstring for the format)."""
    images = images.detach().to("cpu", torch.float32).contiguous()
    labels = labels.detach().cpu().contiguous()
    _check_images_labels(images, labels, str(path))
    tensors = {"images": images, "labels": labels if labels.is_floating_point() else labels.long()}
    if lr is not None:
        tensors["lr"] = torch.as_tensor(lr).detach().to("cpu", torch.float32).reshape(())
    meta = {"format": IMAGES_FORMAT, "metadata": json.dumps(metadata or {}, default=str)}
    return write_with(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_image_set(path: str | os.PathLike[str]) -> ImageSet:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise DataError(f"{path}: not a readable safetensors image file ({exc})") from exc
    if meta.get("format", IMAGES_FORMAT) != IMAGES_FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r}, expected {IMAGES_FORMAT!r}")
    for key in ("images", "labels"):
        if key not in tensors:
            raise DataError(f"{path}: no tensor {key!r} (has {sorted(tensors)})")
    images, labels = tensors["images"].float(), tensors["labels"]
    _check_images_labels(images, labels, str(path))
    lr = float(tensors["lr"].reshape(-1)[0]) if "lr" in tensors else None
    try:
        extra = json.loads(meta.get("metadata", "{}"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: metadata is not JSON ({exc})") from exc
    return ImageSet(images, labels if labels.is_floating_point() else labels.long(), lr, extra)


def _check_images_labels(images: Tensor, labels: Tensor, where: str) -> None:
    if images.ndim != 4:
        raise DataError(f"{where}: images must be N x C x H x W, got {tuple(images.shape)}")
    ok = labels.shape[:1] == images.shape[:1] and (
        (labels.ndim == 1 and not labels.is_floating_point())
        or (labels.ndim == 2 and labels.is_floating_point())
    )
    if not ok:
        raise DataError(
            f"{where}: labels must be {images.shape[0]} integers (or {images.shape[0]} x K floats), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if not torch.isfinite(images).all():
        raise DataError(f"{where}: images contain NaN or infinite values")


def random_real_indices(
    labels: np.ndarray | Tensor, per_class: int, seed: int, *keys: object
) -> np.ndarray:
    """``per_class`` random training indices of every class (sorted by class), seeded.

    The same helper serves the ``random:N`` baseline and can initialise synthetic images.
    """
    y = np.asarray(labels)
    rng = numpy_rng(seed, "random-real", per_class, *keys)
    out = []
    for c in np.unique(y):
        pool = np.flatnonzero(y == c)
        if len(pool) < per_class:
            raise LeanaugError(
                f"class {int(c)} has {len(pool)} training images, fewer than {per_class} asked for"
            )
        out.append(np.sort(rng.choice(pool, size=per_class, replace=False)))
    return np.concatenate(out)


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    """Per-run figures of :func:`evaluate_images` (accuracies as fractions in [0, 1])."""

    final_accuracy: list[float]
    best_accuracy: list[float]
    best_epoch: list[int]
    curves: list[list[tuple[int, float]]]  # per run: (epoch, test accuracy) pairs
    config: dict[str, Any]
    wall_seconds: float = 0.0

    @property
    def runs(self) -> int:
        return len(self.final_accuracy)

    @property
    def final_mean(self) -> float:
        return float(np.mean(self.final_accuracy))

    @property
    def final_std(self) -> float:
        return float(np.std(self.final_accuracy))

    @property
    def best_mean(self) -> float:
        return float(np.mean(self.best_accuracy))

    @property
    def best_std(self) -> float:
        return float(np.std(self.best_accuracy))

    def summary(self) -> str:
        return (
            f"final test accuracy {100 * self.final_mean:.2f} +- {100 * self.final_std:.2f} % "
            f"(best-epoch, selected on the test set: {100 * self.best_mean:.2f} +- {100 * self.best_std:.2f} %) "
            f"over {self.runs} runs"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "final_accuracy": self.final_accuracy,
            "final_mean": self.final_mean,
            "final_std": self.final_std,
            "best_epoch_accuracy": self.best_accuracy,
            "best_epoch_mean": self.best_mean,
            "best_epoch_std": self.best_std,
            "best_epoch": self.best_epoch,
            "curves": [[list(p) for p in c] for c in self.curves],
            "runs": self.runs,
            "wall_seconds": self.wall_seconds,
            "config": self.config,
        }

    @classmethod
    def merge(cls, results: list[EvalResult], config: dict[str, Any] | None = None) -> EvalResult:
        """Concatenate the runs of several results (e.g. one per random subset)."""
        if not results:
            raise LeanaugError("nothing to merge")
        return cls(
            [a for r in results for a in r.final_accuracy],
            [a for r in results for a in r.best_accuracy],
            [e for r in results for e in r.best_epoch],
            [c for r in results for c in r.curves],
            config if config is not None else results[0].config,
            sum(r.wall_seconds for r in results),
        )


def _describe(transform: Any) -> Any:
    """A transform's ``config()`` (JSON-able) when it has one, else its class name."""
    if transform is None:
        return None
    return transform.config() if hasattr(transform, "config") else type(transform).__name__


def evaluate_images(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    network_config: dict[str, Any],
    lr: float,
    epochs: int = 1000,
    runs: int = 5,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    dsa: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    *,
    eval_every: int | None = None,
    dsa_strategy: str = DEFAULT_STRATEGY,
    transform: Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor] | None = None,
    run_offset: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Train ``runs`` fresh networks on the (preprocessed, float) training set; test each.

    ``network_config`` is the ``network`` entry of an experts config.json (``name`` +
    constructor arguments). ``eval_every`` (default ``max(1, epochs // 20)``) sets how
    often the test accuracy is measured for the best-epoch figure; the final epoch is
    always measured. Run ``r`` is seeded from ``(seed, r + run_offset)``. ``transform``
    (``transform(x, y, index, generator) -> x'``, see :func:`train_epoch`) maps every
    training batch before DSA, e.g. phi or a train-time augmentation
    (:func:`leanaug.distill.transforms.train_transform`).
    """
    lr = float(lr)
    if not np.isfinite(lr) or lr <= 0:
        raise LeanaugError(f"evaluation learning rate must be a positive number, got {lr}")
    if epochs < 1 or runs < 1 or batch_size < 1:
        raise LeanaugError(
            f"need epochs, runs and batch size >= 1, got {epochs}, {runs}, {batch_size}"
        )
    eval_every = max(1, epochs // 20) if eval_every is None else int(eval_every)
    if eval_every < 1:
        raise LeanaugError(f"eval_every must be >= 1, got {eval_every}")
    _check_images_labels(train_images, train_labels, "training set")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    train_x = train_images.detach().to(dev, torch.float32)
    train_y = train_labels.detach().to(dev)
    test_x = test_images.detach().to(dev, torch.float32)
    test_y = test_labels.detach().to(dev).long()
    augment = DSA(dsa_strategy) if dsa and dsa_strategy else None
    decay_at = epochs // 2 if epochs > 1 else epochs  # lr x 0.1 from this epoch (0-based) on
    config = {
        "network": dict(network_config),
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "lr_decay": {"factor": 0.1, "at_epoch": decay_at},
        "dsa": augment.config() if augment is not None else None,
        "transform": _describe(transform),
        "eval_every": eval_every,
        "seed": seed,
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_x.shape[0]),
    }

    from leanaug.progress import Progress

    start = time.perf_counter()
    finals, bests, best_epochs, curves = [], [], [], []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("evaluating", total=runs * epochs)
        for r in range(runs):
            run = r + run_offset
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "eval", run, "init"))
                module = build_network(network_config)
            module.to(dev)
            optimizer = torch.optim.SGD(
                module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
            )
            curve: list[tuple[int, float]] = []
            for epoch in range(epochs):
                bar.update(task, description=f"run {r + 1}/{runs}")
                if epoch == decay_at:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * 0.1
                gen = torch_generator(seed, "eval", run, "epoch", epoch)
                loss = train_epoch(
                    module,
                    optimizer,
                    train_x,
                    train_y,
                    batch_size=batch_size,
                    generator=gen,
                    dsa=augment,
                    transform=transform,
                )
                if not np.isfinite(loss):
                    raise LeanaugError(
                        f"evaluation run {r}: training loss became {loss} at epoch {epoch + 1} (lr {lr} too large?)"
                    )
                if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                    curve.append((epoch + 1, accuracy(module, test_x, test_y)))
                bar.advance(task)
            accs = [a for _, a in curve]
            best = int(np.argmax(accs))
            finals.append(curve[-1][1])
            bests.append(accs[best])
            best_epochs.append(curve[best][0])
            curves.append(curve)
    return EvalResult(finals, bests, best_epochs, curves, config, time.perf_counter() - start)


def evaluate_random_real(
    train_images: np.ndarray | Tensor,
    train_labels: np.ndarray | Tensor,
    preprocess: Callable[[np.ndarray | Tensor], Tensor],
    per_class: int,
    test_images: Tensor,
    test_labels: Tensor,
    network_config: dict[str, Any],
    lr: float,
    *,
    runs: int = 5,
    run_offset: int = 0,
    seed: int = 0,
    **kwargs: Any,
) -> EvalResult:
    """The random-real baseline: run ``r`` (``run_offset .. run_offset + runs - 1``) trains
    a fresh network on its own seeded draw of ``per_class`` real images per class
    (``random_real_indices(labels, per_class, seed, r)``), preprocessed by ``preprocess``;
    ``kwargs`` go to :func:`evaluate_images`."""
    labels = np.asarray(train_labels)
    parts = []
    for r in range(run_offset, run_offset + runs):
        idx = random_real_indices(labels, per_class, seed, r)
        parts.append(
            evaluate_images(
                preprocess(train_images[idx]),
                torch.as_tensor(labels[idx]),
                test_images,
                test_labels,
                network_config,
                lr,
                runs=1,
                run_offset=r,
                seed=seed,
                **kwargs,
            )
        )
    result = EvalResult.merge(parts)
    result.config["subsets"] = (
        "a fresh random subset per run (random_real_indices(labels, N, seed, run))"
    )
    return result


# --------------------------------------------------------------------------- phi(subset)
def phi_run_dir(path: str | os.PathLike[str]) -> Path | None:
    """The ``distill augment`` run folder ``path`` names (the folder itself, or its
    ``phi.safetensors``), or ``None`` when ``path`` is not one."""
    from leanaug.distill.augment_training import PHI_NAME, SETTINGS_NAME
    from leanaug.distill.augnet import PHI_FORMAT

    path = Path(path)
    if path.is_dir():
        return path if (path / SETTINGS_NAME).is_file() or (path / PHI_NAME).is_file() else None
    if path.is_file() and path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                fmt = (f.metadata() or {}).get("format")
        except Exception:  # noqa: BLE001 - not a safetensors file: not a phi file either
            return None
        return path.parent if fmt == PHI_FORMAT else None
    return None


def _subset_digest(indices: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def evaluate_subset(
    phi_dir: str | os.PathLike[str] | None = None,
    *,
    experts: str | os.PathLike[str] | None = None,
    subset: float | None = None,
    subset_seed: int | None = None,
    augment: str = "dsa",
    data_dir: str | os.PathLike[str] | None = None,
    lr: float | None = None,
    epochs: int = 1000,
    runs: int = 5,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    eval_every: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    network: str | None = None,
    network_width: int | None = None,
) -> EvalResult:
    """Train fresh networks on ``phi(x)`` (or ``x``) for ``x`` in a subset of the real data.

    The protocol of :func:`evaluate_images` (fresh ConvNets of the experts' architecture,
    SGD, ``lr`` x0.1 after half the epochs, final and best-epoch test accuracy over
    ``runs``) on a class-stratified subset drawn by
    :func:`leanaug.distill.augment_training.subset_indices`, the function
    ``distill augment`` draws its subset with. Each training batch goes through the frozen
    phi (a fresh noise draw per batch) and then the train-time augmentation ``augment``
    (:data:`leanaug.distill.transforms.TRAIN_AUGMENTATIONS`).

    Parameters
    ----------
    phi_dir : path, optional
        A ``leanaug distill augment`` run folder (or its ``phi.safetensors``). Without
        it, the networks train on the real subset itself (the hand-made baselines).
    experts : path, optional
        The experts folder: data set, preprocessing, network and default learning rate.
        Default: the folder the phi run was learned from (recorded in its phi file).
        Required without ``phi_dir``.
    subset : float, optional
        Fraction of the training set in (0, 1]. Default: the phi run's own fraction.
        Required without ``phi_dir``.
    subset_seed : int, optional
        Seed of the subset. Default: the phi run's own, else 0 (``distill augment``'s
        default). Subsets of one seed are nested, so a larger fraction holds phi's subset.
    augment : str
        ``none``, ``dsa``, ``dsa-noflip``, ``trivialaugment`` or ``randaugment``, applied
        after phi. ``"dsa"`` with a phi is the "phi + DSA" condition of the benchmark.
    data_dir : path, optional
        Folder with the data set's files (overrides the experts').
    lr : float, optional
        Learning rate. Default: the experts' (phi's learned alpha is the step size of an
        N-step matching unroll, not a training learning rate; it is recorded only).
    epochs, runs, batch_size, momentum, weight_decay, eval_every, seed, device, progress
        As for :func:`evaluate_images`.
    network, network_width : optional
        Train this architecture (:data:`leanaug.distill.networks.NETWORKS`) of this width
        instead of the experts' network (:func:`leanaug.distill.networks.evaluation_network`).

    Returns
    -------
    EvalResult
        Its ``config`` also holds ``subset`` (fraction, seed, size and the SHA-256 of the
        int64 indices), ``augment``, ``phi`` (run folder, family, iterations, alpha, the
        subset it was learned on; ``None`` without phi) and ``lr_source``.

    Raises
    ------
    LeanaugError
        An unknown ``augment`` (the message lists the valid names), a missing or unfinished
        phi run, experts other than phi's, a subset that differs from the run's for a phi
        that is tied to its training images (``free``).

    Examples
    --------
    Train three networks for 300 epochs on phi(x), then DSA, for x in the subset phi was
    learned on, and on the same subset without phi:

    >>> from leanaug.distill.evaluate import evaluate_subset
    >>> phi = evaluate_subset("runs/phi-residual-p0.1", runs=3, epochs=300)  # doctest: +SKIP
    >>> dsa = evaluate_subset(experts="runs/experts-mnist", subset=0.1, runs=3,
    ...                       epochs=300, augment="dsa")  # doctest: +SKIP
    >>> print(phi.summary(), dsa.summary(), sep="\\n")  # doctest: +SKIP
    """
    from leanaug.distill.augment_training import subset_indices
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor
    from leanaug.distill.transforms import TRAIN_AUGMENTATIONS, train_transform

    TRAIN_AUGMENTATIONS.get(augment)  # an unknown name fails before any file is read
    if network is not None:
        NETWORKS.get(network)
    run = _load_phi_run(phi_dir, experts) if phi_dir is not None else None
    if run is not None:
        experts = run.experts
        subset = run.subset if subset is None else subset
        subset_seed = run.subset_seed if subset_seed is None else subset_seed
    if experts is None:
        raise LeanaugError("give a phi run folder or --experts DIR (the data set and network)")
    if subset is None:
        raise LeanaugError("give --subset P (a fraction of the training set in (0, 1])")
    subset_seed = 0 if subset_seed is None else int(subset_seed)
    subset_indices(np.zeros(1), subset)  # the (0, 1] check, before the data is read

    cfg = load_config(experts)
    if run is not None:
        _check_phi_experts(run.settings, cfg, Path(experts), run.dir)
    pre = load_preprocessor(experts)
    ds = load_dataset_for(cfg, data_dir)
    idx = _draw_subset(ds.train_labels, subset, subset_seed, run)
    transform = train_transform(
        augment,
        phi=None if run is None else run.phi,
        dsa_config=cfg.get("training", {}).get("dsa"),
        preprocessor=pre,
    )
    lr, lr_source = (float(cfg["training"]["lr"]), "experts") if lr is None else (lr, "lr")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    result = evaluate_images(
        pre.transform(ds.train_images[idx], device=dev),
        torch.as_tensor(ds.train_labels[idx]),
        pre.transform(ds.test_images, device=dev),
        torch.as_tensor(ds.test_labels),
        evaluation_network(cfg["network"], network, network_width),
        lr,
        epochs=epochs,
        runs=runs,
        batch_size=batch_size,
        momentum=momentum,
        weight_decay=weight_decay,
        dsa=False,  # DSA, when asked for, is part of ``transform`` (after phi)
        seed=seed,
        device=dev,
        eval_every=eval_every,
        transform=transform,
        progress=progress,
    )
    result.config.update(
        subset=_subset_record(idx, subset, subset_seed),
        augment=augment,
        phi=None if run is None else run.info,
        experts=str(experts),
        lr_source=lr_source,
        device=str(dev),
    )
    return result


def _subset_record(idx: np.ndarray, subset: float, subset_seed: int) -> dict[str, Any]:
    """The ``subset`` entry of the result's config: fraction, seed, size, index digest."""
    return {
        "fraction": float(subset),
        "seed": subset_seed,
        "size": int(len(idx)),
        "sha256": _subset_digest(idx),
    }


@dataclass
class _PhiRun:
    """A finished ``distill augment`` run, as :func:`evaluate_subset` uses it."""

    dir: Path
    settings: dict[str, Any]
    phi: Any
    experts: str | os.PathLike[str]  # the caller's, else the folder phi was learned from
    subset: float  # the run's own subset fraction and seed
    subset_seed: int
    info: dict[str, Any]  # the ``phi`` entry of the result's config


def _load_phi_run(
    phi_dir: str | os.PathLike[str], experts: str | os.PathLike[str] | None
) -> _PhiRun:
    """Find and check the phi run of ``phi_dir``, read its settings and phi, and resolve
    the experts (default: those phi was learned from, which must be found here)."""
    from leanaug.distill.augment_training import PHI_NAME, SETTINGS_NAME
    from leanaug.distill.augnet import load_phi
    from leanaug.results import read_json

    run_dir = phi_run_dir(phi_dir)
    if run_dir is None:
        raise DataError(f"{phi_dir} is not a 'distill augment' run folder (no {SETTINGS_NAME})")
    if not (run_dir / PHI_NAME).is_file():
        raise DataError(
            f"{run_dir} holds no {PHI_NAME}: the phi run has not finished (run the same "
            "'leanaug distill augment' command again to finish it)"
        )
    if not (run_dir / SETTINGS_NAME).is_file():
        raise DataError(f"{run_dir} holds {PHI_NAME} but no {SETTINGS_NAME}")
    settings = read_json(run_dir / SETTINGS_NAME)
    phi, meta = load_phi(run_dir / PHI_NAME)
    if experts is None:
        experts = meta.get("experts")
        if experts is None or not Path(experts).is_dir():
            raise LeanaugError(
                f"{run_dir}: phi was learned from experts {experts!r}, which are not found "
                "here; give --experts DIR"
            )
    run_subset, run_seed = float(settings["subset"]), int(settings["subset_seed"])
    info = {
        "dir": str(run_dir),
        "family": phi.family,
        "iterations": meta.get("iterations"),
        "alpha": meta.get("alpha"),
        "subset": run_subset,
        "subset_seed": run_seed,
        "subset_size": settings.get("subset_size"),
    }
    return _PhiRun(run_dir, settings, phi, experts, run_subset, run_seed, info)


def _draw_subset(
    labels: np.ndarray, subset: float, subset_seed: int, run: _PhiRun | None
) -> np.ndarray:
    """The subset's indices, drawn as ``distill augment`` draws them; with a phi run, the
    run's own subset must have its recorded size, and a phi tied to its training images
    (``needs_index``) takes no other subset."""
    from leanaug.distill.augment_training import subset_indices

    idx = subset_indices(labels, subset, subset_seed)  # as distill augment draws it
    if run is None:
        return idx
    own = (subset, subset_seed) == (run.subset, run.subset_seed)
    if own and len(idx) != run.info["subset_size"]:
        raise DataError(
            f"{run.dir}: phi was learned on {run.info['subset_size']} images, the subset drawn "
            f"now has {len(idx)}"
        )
    if run.phi.needs_index and not own:
        raise LeanaugError(
            f"the {run.phi.family} phi of {run.dir} holds one entry per image of its subset "
            f"({run.subset:g}, seed {run.subset_seed}); it cannot be applied to subset {subset:g}, "
            f"seed {subset_seed}"
        )
    return idx


def _check_phi_experts(settings: dict[str, Any], cfg: dict[str, Any], experts: Path, run: Path):
    """The experts must be those phi was learned from (data set, preprocessing, network)."""
    learned = settings.get("experts", {})
    now = json.loads(json.dumps(cfg))
    now["dataset"] = {k: v for k, v in now.get("dataset", {}).items() if k != "data_dir"}
    diffs = [
        key
        for key in ("dataset", "preprocessing", "network")
        if key in learned and learned[key] != now.get(key)
    ]
    if diffs:
        raise LeanaugError(
            f"{experts} are not the experts phi of {run} was learned from (other "
            f"{', '.join(diffs)}); give the experts folder of that run"
        )
