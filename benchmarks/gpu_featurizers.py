"""One GPU lease: the trained featurizers (and MNIST experts) that CPU benchmarks reuse.

Trains, on a GPU, the networks that cost hours on the 2-core CPU box, and writes them as
float16 files for ``benchmarks/artifacts/`` (each with its sha256, command and figures in
``results.json``):

1. ``cifar``: the CIFAR-10 featurizer of the subsampling paper settings (issue 20.4): a
   pre-activation ResNet-20 of width 64 (256-d features, as the paper's ResNet56v2) on
   all 50,000 CIFAR-10 training images, SGD + Nesterov, one-cycle lr, label smoothing,
   random crop + flip, bf16 autocast. Its head's test accuracy is measured on the 10,000
   test images twice: in float32 on the device, and with the saved float16 weights on
   the CPU (what a config that names the file gets).
2. ``mnist``: the paper's small CNN on all 60,000 MNIST training images, all ten classes
   (the featurizer of the 60,000-image scale benchmark, issue 20.5).
3. ``experts``: MNIST expert trajectories (issue 18.2: ConvNet width 32, padding 3,
   SGD lr 0.01, batch 256, DSA, stored as float16), ``--expert-workers`` processes sharing
   the GPU, inside a wall-clock limit; whatever is done by then comes back (expert files
   resume), as two tar files.

    python benchmarks/gpu_featurizers.py --out OUT --data-dir DATA --device cuda
    # CPU smoke test at tiny size (about a minute):
    python benchmarks/gpu_featurizers.py --out /tmp/gf --data-dir ../shared/data --device cpu --tiny

``DATA`` holds ``cifar10-jpg/`` and ``mnist/`` (as ``../shared/data`` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def head_accuracy(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, device) -> float:
    """Accuracy of the featurizer network's own softmax head."""
    from leanaug.features.base import as_float_images

    net.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(labels), 1000):
            x = as_float_images(images[s : s + 1000]).to(device)
            correct += int((net(x).argmax(1).cpu().numpy() == labels[s : s + 1000]).sum())
    return correct / len(labels)


def train_featurizer(cls, params: dict, ds, out: Path, name: str, device: str) -> dict:
    """Fit, measure, save as float16, reload on the CPU and measure again."""
    t = time.perf_counter()
    f = cls(**params, cache=False, progress=False, device=device).fit(
        ds.train_images, ds.train_labels
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t
    acc_device = head_accuracy(f.net_, ds.test_images, ds.test_labels, f.device_)
    path = out / f"{name}.safetensors"
    digest = f.save_weights(path, dtype="float16")
    g = cls(**params, weights=str(path), weights_sha256=digest, device="cpu").fit(
        ds.train_images[:2], ds.train_labels[:2]
    )
    acc_cpu = head_accuracy(g.net_, ds.test_images, ds.test_labels, torch.device("cpu"))
    row = {
        "file": path.name,
        "sha256": digest,
        "bytes": path.stat().st_size,
        "params": params,
        "train_seconds": round(train_s, 1),
        "train_accuracy_last_epoch": f.train_accuracy_,
        "test_accuracy_float32_device": acc_device,
        "test_accuracy_float16_cpu": acc_cpu,
        "n_train": len(ds.train_labels),
        "n_test": len(ds.test_labels),
    }
    say(f"{name}: {train_s:.0f} s, test accuracy {100 * acc_device:.2f} % "
        f"(float16 weights on the CPU: {100 * acc_cpu:.2f} %), {path.stat().st_size} B")  # fmt: skip
    return row


def phase_cifar(args, out: Path) -> dict:
    from leanaug.data import load_dataset
    from leanaug.features import ResNetFeaturizer

    n = 2000 if args.tiny else None
    ds = load_dataset("cifar10", data_dir=str(args.data_dir / "cifar10-jpg"), n_train=n,
                      subset="random", seed=0)  # fmt: skip
    if args.tiny:
        pick = np.random.default_rng(0).permutation(len(ds.test_labels))[:1000]  # all classes
        ds = dataclasses.replace(ds, test_images=ds.test_images[pick],
                                 test_labels=ds.test_labels[pick])  # fmt: skip
    params = {
        "depth": 20,
        "width": 8 if args.tiny else args.cifar_width,
        "train_augment": not args.cifar_no_train_augment,
        "epochs": 1 if args.tiny else args.cifar_epochs,
        "batch_size": 512,
        "lr": args.cifar_lr,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "precision": "bfloat16",
    }
    name = "cifar10-resnet20" + ("-noaug" if args.cifar_no_train_augment else "")
    return train_featurizer(ResNetFeaturizer, params, ds, out, name, args.device)


def phase_mnist(args, out: Path) -> dict:
    from leanaug.data import load_dataset
    from leanaug.features import SmallCNNFeaturizer

    ds = load_dataset("mnist", data_dir=str(args.data_dir / "mnist"), classes=None,
                      n_train=2000 if args.tiny else None)  # fmt: skip
    params = {"epochs": 1 if args.tiny else args.mnist_epochs, "batch_size": 512, "lr": 1e-3}
    return train_featurizer(SmallCNNFeaturizer, params, ds, out, "mnist-smallcnn", args.device)


def experts_worker(args) -> None:
    """Runs in a child process (killed at the phase's limit; expert files resume)."""
    from leanaug.data import load_dataset
    from leanaug.distill.experts import train_experts
    from leanaug.executors import LocalExecutor

    ds = load_dataset("mnist", data_dir=str(args.data_dir / "mnist"),
                      n_train=600 if args.tiny else None)  # fmt: skip
    train_experts(
        ds,
        args.work / "mnist-experts-w32",
        experts=2 if args.tiny else args.experts,
        epochs=1 if args.tiny else args.expert_epochs,
        width=32,
        depth=3,
        norm="instancenorm",
        lr=0.01,
        batch_size=256,
        zca=False,
        seed=0,
        device=args.device,
        dataset_spec={"name": "mnist", "data_dir": "../shared/data/mnist"},
        progress=False,
        executor=LocalExecutor(n_jobs=args.expert_workers),
        dtype="float16",
    )


def phase_experts(args, out: Path, limit: float) -> dict:
    folder = args.work / "mnist-experts-w32"
    cmd = [sys.executable, __file__, "--part", "experts-worker", *sys.argv[1:]]
    t = time.perf_counter()
    try:
        subprocess.run(cmd, timeout=limit, check=True)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    seconds = time.perf_counter() - t
    summary: dict = {"finished": finished, "seconds": round(seconds, 1), "limit": limit}
    if folder.is_dir():
        done = []
        for path in sorted(folder.glob("expert_*.safetensors")):
            meta = json.loads(_metadata(path).get("test_accuracy", "[]"))
            done.append({"file": path.name, "epochs": len(meta), "test_accuracy": meta})
        summary["experts"] = done
        # Two tar files, each under the lease's 16 MiB per returned file.
        files = sorted(p for p in folder.iterdir() if p.is_file())
        experts = [p for p in files if p.name.startswith("expert_")]
        shared = [p for p in files if not p.name.startswith("expert_")]
        summary["tar_bytes"] = []
        for part, chunk in (("a", experts[0::2]), ("b", experts[1::2])):
            path = out / f"mnist-experts-w32-{part}.tar"
            with tarfile.open(path, "w") as tar:
                for p in shared + chunk:
                    tar.add(p, arcname=f"mnist-experts-w32/{p.name}")
            summary["tar_bytes"].append(path.stat().st_size)
    say(f"experts: {'finished' if finished else 'stopped at the limit'} after {seconds:.0f} s")
    return summary


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-featurizers"))
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parts", default="cifar,mnist,experts")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all parts")
    ap.add_argument("--cifar-epochs", type=int, default=30)
    ap.add_argument("--cifar-width", type=int, default=64)
    ap.add_argument("--cifar-lr", type=float, default=0.3)
    ap.add_argument(
        "--cifar-no-train-augment",
        action="store_true",
        help="train the CIFAR-10 ResNet without random crops and flips (features that are "
        "not already invariant to the paper's translations)",
    )
    ap.add_argument("--mnist-epochs", type=int, default=15)
    ap.add_argument("--experts", type=int, default=20)
    ap.add_argument("--expert-epochs", type=int, default=15)
    ap.add_argument("--expert-workers", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test at tiny size")
    args = ap.parse_args()
    if args.part == "experts-worker":
        experts_worker(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpus": __import__("os").cpu_count(),
        },
    }
    for part in args.parts.split(","):
        t = time.perf_counter()
        try:
            if part == "cifar":
                results[part] = phase_cifar(args, args.out)
            elif part == "mnist":
                results[part] = phase_mnist(args, args.out)
            elif part == "experts":
                left = args.budget - (time.perf_counter() - T0)
                results[part] = phase_experts(args, args.out, max(30.0, left))
            else:
                raise SystemExit(f"unknown part {part!r}")
        except Exception as exc:  # record and go on: the lease is short
            results[part] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"{part} failed: {exc!r}")
        results[part]["wall_seconds"] = round(time.perf_counter() - t, 1)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    say("done")


if __name__ == "__main__":
    main()
