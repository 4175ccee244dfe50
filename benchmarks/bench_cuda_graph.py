"""Eager vs CUDA-graphed matching iterations on issue #8's GPU setting (needs a GPU).

Setting: CIFAR-10 ConvNet width 128, depth 3, instance norm, IPC 10 (all 100 images in
every student step), DSA, unrolled gradient, strict float32 (TF32 off, so that the
gradients can be compared; ``--tf32`` turns it on for convolutions and matrix products,
which the graphed iteration may need: its 2.7 TFLOP per N=30 iteration take 40 ms at the
H200's FP32 peak, 5 ms at its TF32 peak, ``benchmarks/bench_step_ops.py``). For each N, median seconds per iteration over ``--repeats``
iterations after a warm-up, each including what a real run would do per iteration on the
host (drawing the plan and, for the static forms, packing it):

* ``eager``: :func:`leanaug.distill.matching.match_gradients` (what ``leanaug distill``
  runs);
* ``static``: :func:`leanaug.distill.graphs.static_match` run eagerly (every DSA group at
  every step, masked: the price of a fixed sequence of operations without the graph);
* ``graphed``: :class:`leanaug.distill.graphs.GraphedMatch`, captured once per N (its
  capture time is printed), then replayed with a new plan and new images each iteration.

It also prints the relative difference of the graphed image gradient (and alpha gradient)
from the eager one for the same plan, and the peak CUDA memory. Target (issue #8): at
least 10 iterations per second at N=30. On a CPU (``--device cpu``, a smoke test with
``--width 8``) only ``eager`` and ``static`` run.

    python benchmarks/bench_cuda_graph.py --device cuda --out OUT/graphs.json
    python benchmarks/bench_cuda_graph.py --device cpu --width 8 --steps 2 4 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from leanaug.device import resolve_device
from leanaug.distill.dsa import DSA
from leanaug.distill.graphs import GraphedMatch, pack_plan, static_match
from leanaug.distill.matching import match_gradients, plan_student
from leanaug.distill.networks import ConvNet, FlatModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(device: torch.device, repeats: int, run: Callable[[int], object]) -> float:
    times = []
    for r in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        tic = time.perf_counter()
        run(r)
        _sync(device)
        if r > 0:
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def measure(
    device: torch.device,
    width: int = 128,
    steps: tuple[int, ...] = (10, 30),
    repeats: int = 5,
    say: Callable[[str], None] = print,
    tf32: bool = False,
) -> list[dict]:
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    model = FlatModel(ConvNet(3, 10, (32, 32), width=width, depth=3).to(device))
    start = model.flat_parameters()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(100, 3, 32, 32, device=device)
    labels = torch.arange(10, device=device).repeat_interleave(10)
    alpha = torch.tensor(0.01, device=device)
    dsa = DSA()
    shape = tuple(images.shape[1:])

    def plan(seed: int):  # noqa: ANN202
        return plan_student(images.shape[0], n, None, torch.Generator().manual_seed(seed))

    def run_static(seed: int):  # noqa: ANN202
        x, a = images.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
        static = pack_plan(plan(seed), dsa, shape).to(device)
        return static_match(model, start, target, x, labels, a, static)

    rows = []
    for n in steps:
        row: dict = dict(steps=n, width=width, device=str(device), tf32=tf32)
        row["eager_s"] = _median_seconds(
            device,
            repeats,
            lambda r: match_gradients(
                model, start, target, images, labels, alpha, plan(r), dsa, "unrolled"
            ),
        )
        row["static_s"] = _median_seconds(device, repeats, run_static)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            tic = time.perf_counter()
            graphed = GraphedMatch(
                model, images, labels, alpha, start, target, pack_plan(plan(0), dsa, shape)
            )
            _sync(device)
            row["capture_s"] = time.perf_counter() - tic
            row["graphed_s"] = _median_seconds(
                device,
                repeats,
                lambda r: graphed(  # noqa: B023 (called before the loop moves on)
                    images + 0.01 * r, alpha, start, target, pack_plan(plan(r), dsa, shape)
                ),
            )
            row["graphed_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            check = plan(1000)
            ref = match_gradients(
                model, start, target, images, labels, alpha, check, dsa, "unrolled"
            )
            loss, gx, ga = graphed(images, alpha, start, target, pack_plan(check, dsa, shape))
            row["graphed_grad_images_rel_err"] = _rel(gx, ref.grad_images)
            row["graphed_grad_alpha_rel_err"] = _rel(ga.reshape(()), ref.grad_alpha.reshape(()))
            row["graphed_loss_rel_err"] = _rel(loss, ref.loss)
            del graphed
        else:
            ref = match_gradients(
                model, start, target, images, labels, alpha, plan(1000), dsa, "unrolled"
            )
            _, gx, _ = run_static(1000)
            row["static_grad_images_rel_err"] = _rel(gx, ref.grad_images)
        say(
            "  "
            + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tf32", action="store_true", help="TF32 convolutions and matmuls")
    ap.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, TF32 {'on' if args.tf32 else 'off'}")
    rows = measure(device, args.width, tuple(args.steps), args.repeats, tf32=args.tf32)
    print(
        "| N | eager ms (it/s) | static eager ms | graphed ms (it/s) | capture s | graphed/eager |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        g = r.get("graphed_s")
        graphed = f"{1e3 * g:.1f} ({1 / g:.2f})" if g else "-"
        ratio = f"{r['eager_s'] / g:.2f}x faster" if g else "-"
        print(
            f"| {r['steps']} | {1e3 * r['eager_s']:.1f} ({1 / r['eager_s']:.2f}) "
            f"| {1e3 * r['static_s']:.1f} | {graphed} | {r.get('capture_s', float('nan')):.1f} "
            f"| {ratio} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
