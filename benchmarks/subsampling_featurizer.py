"""Fit (train once, or load from the cache) the featurizer of a subsampling config.

    python benchmarks/subsampling_featurizer.py --config configs/paper/cifar10_0v1_translate.yaml \
        --data-dir ../shared/data [--json runs/paper/featurizer_cifar10.json]

The featurizer is built exactly as ``leanaug subsample run --config FILE`` builds it
(:func:`leanaug.experiments.runner.make_featurizer` on the resolved config) and fitted on
the task's training images, so the trained weights land in the cache file that the
config's runs then load (``$LEANAUG_CACHE/featurizers/<name>-<key>.safetensors``: the key
hashes the featurizer's parameters, its seed and its training data; ``device``,
``data_dir`` and batch sizes for inference are not part of it). Use it to train the
CIFAR-10 ResNet once, in the background, before the configs that need it.

Prints (and writes to ``--json``) the cache path, whether it was trained or loaded, the
training wall time, the last epoch's training accuracy, and the test accuracy of the
network's own classification head on the test split of the data it was trained on: the
task's test split for ``smallcnn``; for ``resnet`` with ``pretrain_dataset`` the whole
test split of that data set (all 10 CIFAR-10 classes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from leanaug.data import load_dataset
from leanaug.experiments import resolve_config
from leanaug.experiments.runner import make_featurizer
from leanaug.features.base import as_float_images


def head_accuracy(featurizer, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Accuracy of the trained network's own softmax head (not the logistic classifier)."""
    net = featurizer.net_
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch):
            x = as_float_images(images[start : start + batch]).to(featurizer.device_)
            pred = net(x).argmax(1).cpu().numpy()
            correct += int((pred == labels[start : start + batch]).sum())
    return correct / len(labels)


def featurizer_figures(cfg, label: str = "") -> dict:
    """Fit ``cfg``'s featurizer (from the cache when it is there) and measure it."""
    ds = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        classes=cfg.classes,
        n_train=cfg.n_train,
        subset=cfg.subset,
        seed=cfg.seed,
    )
    featurizer = make_featurizer(cfg)
    t0 = time.perf_counter()
    featurizer.fit(ds.train_images, ds.train_labels)
    fit_seconds = time.perf_counter() - t0
    if not hasattr(featurizer, "net_"):  # pixels: nothing trained, nothing to measure
        return {"config": label, "featurizer": cfg.featurizer_spec, "trained": False}

    pretrain = getattr(featurizer, "pretrain_dataset", None)
    if pretrain:
        eval_ds = load_dataset(pretrain, data_dir=cfg.data_dir, classes=None, subset="first")
        eval_what = f"{pretrain} test split, all {eval_ds.num_classes} classes"
    else:
        eval_ds = ds
        which = f"classes {cfg.classes}" if cfg.classes else f"all {ds.num_classes} classes"
        eval_what = f"{cfg.dataset} test split, {which}"
    t1 = time.perf_counter()
    test_acc = head_accuracy(featurizer, eval_ds.test_images, eval_ds.test_labels)
    eval_seconds = time.perf_counter() - t1
    return {
        "config": label,
        "featurizer": cfg.featurizer_spec,
        "trained": True,
        "cache_path": str(featurizer.cache_path_),
        "loaded_from_cache": bool(featurizer.loaded_from_cache_),
        "fit_seconds": round(fit_seconds, 1),
        "train_accuracy_last_epoch": float(featurizer.train_accuracy_),
        "test_accuracy": test_acc,
        "test_n": int(len(eval_ds.test_labels)),
        "test_set": eval_what,
        "test_source": eval_ds.source,
        "eval_seconds": round(eval_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {featurizer.device_}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--featurizer", default=None, help="override the config's featurizer spec")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()

    cfg = resolve_config(args.config, data_dir=args.data_dir, featurizer=args.featurizer)
    figures = featurizer_figures(cfg, str(args.config))
    for k, v in figures.items():
        print(f"{k}: {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
