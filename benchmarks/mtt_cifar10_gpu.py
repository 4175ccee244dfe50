"""CIFAR-10, IPC 10, the reference's full-scale MTT recipe, for one CUDA GPU.

Not run in this repository's CI or on its 2-core CPU machine (no GPU there): this is the
recipe, ready to run. Three parts, each resumable (run the same command again after an
interruption):

``--part experts``
    ``--experts`` ConvNets (width 128, depth 3, instance norm) x 50 epochs, SGD lr 0.01,
    momentum 0, batch 256, DSA, ZCA (kornia, eps 0.1), into ``runs/cifar10-experts-w128``
    (the reference trains 100 experts; 20 are usually enough to start).
``--part distill``
    trajectory matching with ``configs/mtt/cifar10_ipc10.yaml`` (N=30, M=2, T+=20,
    lr_img=100 in ZCA space, lr_lr=1e-5, alpha_0=0.001, 5000 iterations) into
    ``runs/mtt-cifar10-ipc10``.
``--part evaluate``
    the MTT protocol on the distilled images (5 fresh ConvNets, 1000 epochs, SGD momentum
    0.9, wd 5e-4, lr = learned alpha, x0.1 at half, DSA) and on random real images.

    python benchmarks/mtt_cifar10_gpu.py --part all --device cuda

Published (Cazenavette et al. 2022, CIFAR-10 IPC 10): 65.3 +- 0.7 % (best-epoch figure);
random real images 31.0 %. Our CIFAR-10 copy is a JPEG export: expect close, not identical
figures.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CIFAR_DIR = (ROOT / ".." / "shared" / "data" / "cifar10-jpg").resolve()
# The reference's CIFAR-10 experts (also benchmarks/gpu_session.py's)
EXPERT_RECIPE = dict(
    width=128, depth=3, norm="instancenorm", lr=0.01, batch_size=256, zca=True, seed=0
)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--part", choices=["experts", "distill", "evaluate", "all"], default="all")
    ap.add_argument("--data-dir", type=Path, default=CIFAR_DIR)
    ap.add_argument("--experts-dir", type=Path, default=ROOT / "runs" / "cifar10-experts-w128")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "mtt-cifar10-ipc10")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "mtt" / "cifar10_ipc10.yaml")
    ap.add_argument("--experts", type=int, default=20)
    ap.add_argument("--expert-epochs-total", type=int, default=50)
    ap.add_argument("--eval-runs", type=int, default=5)
    ap.add_argument("--eval-epochs", type=int, default=1000)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    from leanaug.data import load_dataset
    from leanaug.device import resolve_device
    from leanaug.distill.evaluate import (
        evaluate_images,
        evaluate_random_real,
        load_image_set,
    )
    from leanaug.distill.experts import (
        load_config,
        load_dataset_for,
        load_preprocessor,
        train_experts,
    )
    from leanaug.distill.matching import IMAGES_NAME, TrajectoryMatching, read_settings_file
    from leanaug.results import write_json

    device = resolve_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(f"device: {device} ({name}), torch {torch.__version__}")
    parts = ["experts", "distill", "evaluate"] if args.part == "all" else [args.part]

    if "experts" in parts:
        tic = time.perf_counter()
        ds = load_dataset("cifar10", data_dir=args.data_dir)
        train_experts(
            ds,
            args.experts_dir,
            experts=args.experts,
            epochs=args.expert_epochs_total,
            **EXPERT_RECIPE,
            device=device,
            dataset_spec={"name": "cifar10", "data_dir": str(args.data_dir)},
            progress=True,
        )
        print(f"experts: {time.perf_counter() - tic:.0f} s")

    if "distill" in parts:
        settings = read_settings_file(args.config)
        settings["device"] = str(device)
        est = TrajectoryMatching.from_config(settings, str(args.config))
        tic = time.perf_counter()
        est.fit(args.experts_dir, args.out, data_dir=args.data_dir, progress=True)
        print(f"distillation: {time.perf_counter() - tic:.0f} s, learned alpha {est.lr_:.5g}")

    if "evaluate" in parts:
        cfg = load_config(args.experts_dir)
        pre = load_preprocessor(args.experts_dir)
        ds = load_dataset_for(cfg, args.data_dir)
        test_x = pre.transform(ds.test_images, device=device)
        test_y = torch.as_tensor(ds.test_labels)
        image_set = load_image_set(args.out / IMAGES_NAME)
        ipc = image_set.images.shape[0] // cfg["network"]["num_classes"]
        common = dict(epochs=args.eval_epochs, seed=0, device=device)
        tic = time.perf_counter()
        distilled = evaluate_images(
            image_set.images,
            image_set.labels,
            test_x,
            test_y,
            cfg["network"],
            image_set.lr,
            runs=args.eval_runs,
            progress=True,
            **common,
        )
        print(f"distilled IPC {ipc}: {distilled.summary()} [{time.perf_counter() - tic:.0f} s]")
        random_real = evaluate_random_real(
            ds.train_images,
            ds.train_labels,
            lambda x: pre.transform(x, device=device),
            ipc,
            test_x,
            test_y,
            cfg["network"],
            float(cfg["training"]["lr"]),
            runs=args.eval_runs,
            **common,
        )
        print(f"random real IPC {ipc}: {random_real.summary()}")
        write_json(
            args.out / "results.json",
            {"distilled": distilled.to_dict(), "random_real": random_real.to_dict()},
        )


if __name__ == "__main__":
    main()
