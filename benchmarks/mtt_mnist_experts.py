"""MNIST expert trajectories for the MNIST distillation benchmark, at reduced CPU scale.

Experts (``--part experts``): 5 ConvNets (width 32, depth 3, instance norm) x 10 epochs,
SGD lr 0.01, momentum 0, batch 256, DSA on, no ZCA, into ``runs/mnist-experts-w32``
(resumable: run it again after an interruption). Prints each expert's final test accuracy
and wall time.

Baselines (``--part baselines``): the MTT evaluation protocol (SGD momentum 0.9, wd 5e-4,
batch 256, DSA, lr x0.1 at half, 5 runs) with the experts' preprocessing and network, on
``full`` MNIST and ``random:1`` / ``random:10`` real images per class, at reduced epochs
(``--epochs-full``, ``--epochs-random``; the paper uses 1000). Results as JSON in the
experts folder.

    python benchmarks/mtt_mnist_experts.py --part all
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from leanaug.data import load_dataset
from leanaug.distill.evaluate import evaluate_images, evaluate_random_real
from leanaug.distill.experts import load_config, load_preprocessor, train_experts
from leanaug.results import write_json

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = (ROOT / ".." / "shared" / "data" / "mnist").resolve()


def run_experts(out: Path, experts: int, epochs: int, width: int, device: str) -> None:
    ds = load_dataset("mnist", data_dir=MNIST_DIR)
    spec = {"name": "mnist", "data_dir": str(MNIST_DIR)}
    total = time.perf_counter()
    for i in range(experts):
        start = time.perf_counter()
        # asking for i + 1 experts trains (or resumes) expert i only: the others are done
        result = train_experts(
            ds,
            out,
            experts=i + 1,
            epochs=epochs,
            width=width,
            depth=3,
            norm="instancenorm",
            lr=0.01,
            batch_size=256,
            zca=False,
            seed=0,
            device=device,
            dataset_spec=spec,
            progress=False,
        )[i]
        accs = " ".join(f"{100 * a:.2f}" for a in result.test_accuracy)
        print(
            f"expert {i}: final test accuracy {100 * result.test_accuracy[-1]:.2f} % "
            f"after {result.epochs_done} epochs ({time.perf_counter() - start:.0f} s this call); per epoch: {accs}",
            flush=True,
        )
    print(
        f"experts: {experts} x {epochs} epochs, wall {time.perf_counter() - total:.0f} s",
        flush=True,
    )


def run_baselines(out: Path, epochs_full: int, epochs_random: int, runs: int, device: str) -> None:
    cfg = load_config(out)
    pre = load_preprocessor(out)
    ds = load_dataset("mnist", data_dir=MNIST_DIR)
    network = cfg["network"]
    test_x, test_y = pre.transform(ds.test_images), torch.as_tensor(ds.test_labels)
    train_y = torch.as_tensor(ds.train_labels)
    lr = 0.01
    for spec, epochs in (
        ("random:1", epochs_random),
        ("random:10", epochs_random),
        ("full", epochs_full),
    ):
        start = time.perf_counter()
        if spec == "full":
            result = evaluate_images(
                pre.transform(ds.train_images),
                train_y,
                test_x,
                test_y,
                network,
                lr,
                epochs=epochs,
                runs=runs,
                device=device,
            )
        else:
            per_class = int(spec.split(":")[1])
            result = evaluate_random_real(
                ds.train_images,
                ds.train_labels,
                pre.transform,
                per_class,
                test_x,
                test_y,
                network,
                lr,
                runs=runs,
                epochs=epochs,
                device=device,
            )
        wall = time.perf_counter() - start
        write_json(
            out / f"eval-{spec.replace(':', '-')}.json",
            {"images": spec, "wall_seconds_total": wall, **result.to_dict()},
        )
        print(
            f"{spec}: final {100 * result.final_mean:.2f} +- {100 * result.final_std:.2f} %, "
            f"best-epoch {100 * result.best_mean:.2f} +- {100 * result.best_std:.2f} % "
            f"({runs} runs x {epochs} epochs, lr {lr}, wall {wall:.0f} s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("experts", "baselines", "all"), default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "mnist-experts-w32")
    parser.add_argument("--experts", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs-full", type=int, default=5)
    parser.add_argument("--epochs-random", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}",
        flush=True,
    )
    if args.part in ("experts", "all"):
        run_experts(args.out, args.experts, args.epochs, args.width, args.device)
    if args.part in ("baselines", "all"):
        run_baselines(args.out, args.epochs_full, args.epochs_random, args.runs, args.device)


if __name__ == "__main__":
    main()
