"""How many operations one matching iteration dispatches, and what each costs (issue #8).

The H200 ran the issue's GPU setting (CIFAR-10 ConvNet width 128, IPC 10, all 100 images
in every student step, DSA) at 2.3 iterations per second for N=30, far below what the
arithmetic needs on that chip (``docs/performance.md``). This benchmark tests the
explanation "the step is bound by dispatching operations, not by computing them" with
figures that do not need a GPU:

1. **Operations per iteration**, counted with a ``TorchDispatchMode`` while
   :func:`leanaug.distill.matching.match_gradients` runs the issue's GPU setting's
   network (ConvNet depth 3, instance norm, DSA, every image in every step) on the CPU.
   The sequence of operations does not depend on the width, the image size or the
   number of images, so tiny tensors (width 2, 10 images of 8x8) give the count of the
   width-128, 100-image setting (``--width 128 --size 32 --images 100`` checks it, at a
   cost). "kernels" are the operations that compute (each is at least one kernel launch
   on a GPU); "views" only change metadata (``view``, ``detach``, ``expand``...), which
   costs host time but launches nothing. The per-student-step figure is the difference
   between N=30 and N=10, divided by 20.
2. **Host time per operation** on this machine: the same tiny iteration timed without
   the counter, where the arithmetic is negligible, divided by its operation count: a
   floor for what eager PyTorch spends per operation here.
3. **The budget**: 10 iterations per second at N=30 leaves 100 ms per iteration, i.e.
   ``100 ms / operations`` per operation. Optionally (``--gpu-ms MS``, no default) a GPU's
   time per unrolled iteration divided by today's count: MS is an INPUT copied from an
   earlier GPU run (e.g. 428 ms, the H200's unrolled float32 N=30 figure of 2026-11-30,
   timed before the DSA read-back fix), not measured here, and the column says so.
4. **The arithmetic**: convolution and matrix-product FLOPs of one unrolled N=30
   iteration of the real setting (width 128, 100 images of 32x32), counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (shapes only) through
   :func:`leanaug.distill.graphs.static_match` (which reads nothing back, so it runs
   there; DSA off: its elementwise and sampling work is not counted), and the time they
   take at the H200's peak rates (NVIDIA's figures: 66.9 TFLOPS FP32, 494.7 TF32 dense):
   what no implementation can go below.
5. **Where the kernels come from**: kernel operations of one instance-norm layer's
   forward, backward (``create_graph``) and double backward, ``F.group_norm`` as the
   network uses it against a hand-written instance norm (``var_mean``, ``rsqrt``,
   ``addcmul``), and their largest relative difference in float64.

    python benchmarks/bench_step_ops.py
    python benchmarks/bench_step_ops.py --modes unrolled constant --repeats 5
"""

from __future__ import annotations

import argparse
import collections
import platform
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from leanaug.distill.dsa import DSA
from leanaug.distill.graphs import pack_plan, static_match
from leanaug.distill.matching import match_gradients, plan_student
from leanaug.distill.networks import ConvNet, FlatModel

# metadata-only operations that have no in-place ``is_view`` flag
_METADATA_INPLACE = {"unsqueeze_", "squeeze_", "t_", "transpose_", "as_strided_", "detach_"}


class CountOps(TorchDispatchMode):
    """Counts every operation that reaches a kernel (below autograd), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: collections.Counter[str] = collections.Counter()
        self.views: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        metadata = getattr(func, "is_view", False) or name in _METADATA_INPLACE
        (self.views if metadata else self.kernels)[name] += 1
        return func(*args, **(kwargs or {}))


def _problem(width: int, size: int, n_images: int):
    torch.manual_seed(0)
    model = FlatModel(ConvNet(3, 10, (size, size), width=width, depth=3))
    start = model.flat_parameters()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(n_images, 3, size, size)
    labels = torch.arange(10).repeat_interleave(n_images // 10)
    return model, (start, target, images, labels)


def _run(model, tensors, steps: int, memory: str, seed: int) -> None:  # noqa: ANN001
    start, target, images, labels = tensors
    plan = plan_student(images.shape[0], steps, None, torch.Generator().manual_seed(seed))
    match_gradients(model, start, target, images, labels, torch.tensor(0.01), plan, DSA(), memory)


def count(problem, memory: str, steps: int, seeds: int) -> tuple[float, float, CountOps]:  # noqa: ANN001
    """Mean kernel and view operations per iteration over ``seeds`` plans (DSA picks one
    op group per step at random, so counts vary a little from plan to plan)."""
    kernels, views, last = [], [], CountOps()
    for seed in range(seeds):
        with CountOps() as ops:
            _run(*problem, steps, memory, seed)
        kernels.append(sum(ops.kernels.values()))
        views.append(sum(ops.views.values()))
        last = ops
    return statistics.mean(kernels), statistics.mean(views), last


def seconds_per_iteration(problem, memory: str, steps: int, repeats: int) -> float:  # noqa: ANN001
    _run(*problem, steps, memory, 0)  # warm-up
    times = []
    for r in range(repeats):
        tic = time.perf_counter()
        _run(*problem, steps, memory, r)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _group_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.group_norm(x, x.shape[1], w, b, 1e-5)


def _hand_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return torch.addcmul(
        b.view(1, -1, 1, 1), x - mean, torch.rsqrt(var + 1e-5) * w.view(1, -1, 1, 1)
    )


def norm_layer_ops() -> dict[str, tuple[int, float]]:
    """Kernel ops of forward + backward + double backward of one norm layer, and the
    largest relative difference of all outputs from ``F.group_norm``'s (float64)."""
    torch.manual_seed(0)
    x, r = torch.randn(2, 100, 8, 16, 16, dtype=torch.float64)
    w, b = torch.rand(8, dtype=torch.float64) + 0.5, torch.randn(8, dtype=torch.float64)
    v = [torch.randn_like(t) for t in (x, w, b)]
    out, ref = {}, None
    for name, norm in (("F.group_norm", _group_norm), ("hand-written", _hand_norm)):
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
        with CountOps() as ops:
            y = norm(*leaves)
            g = torch.autograd.grad((y * r).sum(), leaves, create_graph=True)
            gg = torch.autograd.grad(
                sum((gi * vi).sum() for gi, vi in zip(g, v, strict=True)), leaves[:2]
            )
        res = [y.detach(), *[t.detach() for t in g], *gg]
        ref = res if ref is None else ref
        diff = max(float((a - c).norm() / c.norm()) for a, c in zip(res, ref, strict=True))
        out[name] = (sum(ops.kernels.values()), diff)
    return out


def unrolled_flops(steps: int) -> float:
    """Convolution and matmul FLOPs of one unrolled iteration, width 128, 100 images."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    model = FlatModel(ConvNet(3, 10, (32, 32), width=128, depth=3))
    start = model.flat_parameters().to(meta)
    images = torch.empty(100, 3, 32, 32, device=meta, requires_grad=True)
    alpha = torch.tensor(0.01, device=meta, requires_grad=True)
    labels = torch.arange(10, device=meta).repeat_interleave(10)
    plan = pack_plan(plan_student(100, steps, None, torch.Generator()), None, (3, 32, 32))
    with FlopCounterMode(display=False) as flops:
        static_match(model, start, start, images, labels, alpha, plan.to(meta))
    return float(flops.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["unrolled", "constant", "tesla"])
    ap.add_argument("--seeds", type=int, default=5, help="plans averaged per operation count")
    ap.add_argument("--repeats", type=int, default=5, help="timed CPU iterations (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--gpu-ms",
        type=float,
        default=None,
        help="INPUT, not measured here: a GPU's ms per unrolled N=30 iteration from an earlier "
        "run; adds a column dividing it by today's operation counts (omitted by default)",
    )
    ap.add_argument("--top", type=int, default=12, help="most frequent operations to list")
    ap.add_argument("--width", type=int, default=2, help="network width for the count")
    ap.add_argument("--size", type=int, default=8, help="image side for the count")
    ap.add_argument("--images", type=int, default=10, help="images (a multiple of 10)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    counted = _problem(args.width, args.size, args.images)
    tiny = _problem(2, 8, 10)
    print(
        f"machine: {platform.machine()} {platform.processor() or 'cpu'}, torch {torch.__version__}"
    )
    print(
        f"counted at width {args.width}, {args.images} images of {args.size}x{args.size}; "
        "ConvNet depth 3, instance norm, 10 classes, DSA, every image in every step"
    )
    gpu_col = (
        f" GPU us per op (input --gpu-ms {args.gpu_ms:g}, an earlier run's ms / today's ops) |"
        if args.gpu_ms is not None
        else ""
    )
    print(
        "| mode | kernel ops / iteration, N=30 | views / iteration, N=30 "
        "| kernel ops / student step | views / student step "
        "| host us per op (CPU, tiny tensors) | us per op allowed for 10 it/s |" + gpu_col
    )
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu_col else ""))
    tops = {}
    for memory in args.modes:
        k30, v30, ops30 = count(counted, memory, 30, args.seeds)
        k10, v10, _ = count(counted, memory, 10, args.seeds)
        per_step_k, per_step_v = (k30 - k10) / 20, (v30 - v10) / 20
        host_s = seconds_per_iteration(tiny, memory, 30, args.repeats)
        host_us = 1e6 * host_s / (k30 + v30)
        budget_us = 1e5 / (k30 + v30)
        gpu = ""
        if gpu_col:
            gpu = f" {1e3 * args.gpu_ms / (k30 + v30):.1f} |" if memory == "unrolled" else " - |"
        print(
            f"| {memory} | {k30:.0f} | {v30:.0f} | {per_step_k:.0f} | {per_step_v:.0f} "
            f"| {host_us:.1f} ({1e3 * host_s:.0f} ms/iteration) | {budget_us:.1f} |" + gpu
        )
        tops[memory] = ops30
    for memory, ops in tops.items():
        common = ", ".join(f"{n} {c}" for n, c in ops.kernels.most_common(args.top))
        print(f"{memory}: most frequent kernel ops in one N=30 iteration: {common}")
    norms = norm_layer_ops()
    print(
        "one instance-norm layer, forward + backward + double backward, kernel ops: "
        + ", ".join(f"{k} {n} (relative difference {d:.0e})" for k, (n, d) in norms.items())
    )
    total = unrolled_flops(30)
    print(
        f"unrolled N=30, width 128, 100 images: {total / 1e12:.2f} TFLOP of convolutions and "
        f"matrix products; at the H200's peak (inputs: NVIDIA's 66.9 TFLOPS FP32, 494.7 TF32 "
        f"dense) {1e3 * total / 66.9e12:.0f} ms in FP32, {1e3 * total / 494.7e12:.1f} ms in TF32"
    )


if __name__ == "__main__":
    main()
