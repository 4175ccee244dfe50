"""Where ``torch.compile`` pays off on a CPU (issue #8, item 2), measured side by side.

MNIST ConvNet width 32 (depth 3, instance norm), ``--threads`` threads, inductor with
static shapes. Three measurements, each eager against compiled in one process:

1. ``plain gradient``: ``torch.func.grad`` of the cross-entropy on 100 images, what
   constant mode's first pass computes N times per iteration (median of 20 calls after 3
   warm-ups), and its relative difference from eager;
2. ``constant iteration``: one whole constant-mode matching iteration (N=20, student
   batch 50, DSA) with that first pass compiled, against eager (3 rounds after a
   warm-up; the reverse pass needs a double backward, which ``torch.compile`` refuses,
   so it stays eager);
3. ``training step``: an expert's training step (batch 256, DSA eager, SGD), what
   ``leanaug distill experts --compile`` compiles (median of 20 steps after the first).

4. ``evaluation``: the evaluation protocol's training, ``--eval-runs`` fresh networks each
   trained ``--eval-epochs`` steps on 100 images (one batch per epoch, DSA, SGD momentum
   0.9), total seconds eager against compiled (each fresh network compiled anew).

The first compiled call's time (compilation included) is printed too. Whole expert runs
are timed with the CLI instead (``docs/performance.md``).

    python benchmarks/bench_compile.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import grad

import leanaug.distill.matching as matching
from leanaug.distill.dsa import DSA
from leanaug.distill.networks import ConvNet, FlatModel


def _seconds(fn, repeats: int, warmup: int) -> tuple[float, float]:  # noqa: ANN001
    """(first call's seconds, median of ``repeats`` calls after ``warmup`` more)."""
    tic = time.perf_counter()
    fn()
    first = time.perf_counter() - tic
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return first, statistics.median(times)


def plain_gradient(model: FlatModel, theta, x, y) -> dict:  # noqa: ANN001
    def eager() -> torch.Tensor:
        t = theta.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(t, x), y), t)[0]

    compiled = torch.compile(grad(lambda t, a, b: F.cross_entropy(model(t, a), b)), dynamic=False)
    first, fast = _seconds(lambda: compiled(theta, x, y), 20, 3)
    _, slow = _seconds(eager, 20, 3)
    ref = eager()
    rel = float((compiled(theta, x, y) - ref).norm() / ref.norm())
    return dict(eager_ms=1e3 * slow, compiled_ms=1e3 * fast, first_s=first, rel_diff=rel)


def constant_iteration(model: FlatModel, theta, x, y, rounds: int) -> dict:  # noqa: ANN001
    target = theta + 0.01 * torch.randn_like(theta)
    alpha = torch.tensor(0.01)
    compiled = torch.compile(grad(lambda t, a, b: F.cross_entropy(model(t, a), b)), dynamic=False)
    eager_step = matching._step_gradient

    def compiled_step(model_, theta_, x_, y_, create_graph):  # noqa: ANN001, ANN202
        if create_graph:  # the reverse pass: a double backward, eager
            return eager_step(model_, theta_, x_, y_, create_graph)
        return compiled(theta_.detach(), x_, y_)

    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    first = 0.0
    try:
        for r in range(rounds + 1):
            plan = matching.plan_student(100, 20, 50, torch.Generator().manual_seed(r))
            for name, step in (("eager", eager_step), ("compiled", compiled_step)):
                matching._step_gradient = step
                tic = time.perf_counter()
                matching.match_gradients(model, theta, target, x, y, alpha, plan, DSA(), "constant")
                if r > 0:
                    times[name].append(time.perf_counter() - tic)
                elif name == "compiled":
                    first = time.perf_counter() - tic
    finally:
        matching._step_gradient = eager_step
    return dict(eager_s=times["eager"], compiled_s=times["compiled"], first_s=first)


def _training_step_times(x, y, compile: bool) -> tuple[float, float]:  # noqa: ANN001
    """(first step's seconds, median of 20 more) for a fresh width-32 ConvNet."""
    torch.manual_seed(0)
    module = ConvNet(1, 10, (28, 28), width=32)
    forward = torch.compile(module, dynamic=False) if compile else module
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    dsa, gen, batch = DSA(), torch.Generator().manual_seed(0), iter(range(10**6))

    def step() -> None:
        i = next(batch) % 20
        xb, _ = dsa(x[i * 256 : (i + 1) * 256], generator=gen)
        loss = F.cross_entropy(forward(xb), y[i * 256 : (i + 1) * 256])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _seconds(step, 20, 0)


def training_step(x, y) -> dict:  # noqa: ANN001
    out = {}
    for name in ("eager", "compiled"):
        first, median = _training_step_times(x, y, name == "compiled")
        out[f"{name}_ms"], out[f"{name}_first_s"] = 1e3 * median, first
    return out


def evaluation(x, y, runs: int, epochs: int) -> dict:  # noqa: ANN001
    out = {}
    for name in ("eager", "compiled"):
        tic = time.perf_counter()
        for r in range(runs):
            torch.manual_seed(r)
            module = ConvNet(1, 10, (28, 28), width=32)
            forward = torch.compile(module, dynamic=False) if name == "compiled" else module
            opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            gen = torch.Generator().manual_seed(r)
            dsa = DSA()
            for _ in range(epochs):
                xb, _ = dsa(x, generator=gen)
                loss = F.cross_entropy(forward(xb), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        out[f"{name}_s"] = time.perf_counter() - tic
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eval-runs", type=int, default=3)
    ap.add_argument("--eval-epochs", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FlatModel(ConvNet(1, 10, (28, 28), width=32))
    theta = model.flat_parameters()
    x100, y100 = torch.randn(100, 1, 28, 28), torch.arange(10).repeat_interleave(10)
    print(f"torch {torch.__version__}, {args.threads} threads, MNIST ConvNet width 32")
    r = plain_gradient(model, theta, x100, y100)
    print(
        f"1) plain gradient, 100 images: eager {r['eager_ms']:.1f} ms, compiled "
        f"{r['compiled_ms']:.1f} ms ({r['eager_ms'] / r['compiled_ms']:.2f}x; first compiled "
        f"call {r['first_s']:.1f} s); relative difference {r['rel_diff']:.1e}"
    )
    r = constant_iteration(model, theta, x100, y100, args.rounds)
    fmt = " ".join(f"{t:.2f}" for t in r["eager_s"])
    fmc = " ".join(f"{t:.2f}" for t in r["compiled_s"])
    speed = statistics.median(r["eager_s"]) / statistics.median(r["compiled_s"])
    print(
        f"2) constant iteration N=20, batch 50, DSA: eager {fmt} s, first pass compiled {fmc} s "
        f"(median {speed:.2f}x; first compiled round {r['first_s']:.1f} s)"
    )
    x, y = torch.randn(256 * 20, 1, 28, 28), torch.randint(0, 10, (256 * 20,))
    r = training_step(x, y)
    print(
        f"3) training step, batch 256, DSA: eager {r['eager_ms']:.1f} ms, compiled "
        f"{r['compiled_ms']:.1f} ms ({r['eager_ms'] / r['compiled_ms']:.2f}x; first compiled "
        f"step {r['compiled_first_s']:.1f} s)"
    )
    r = evaluation(x100, y100, args.eval_runs, args.eval_epochs)
    print(
        f"4) evaluation, {args.eval_runs} runs x {args.eval_epochs} epochs on 100 images: eager "
        f"{r['eager_s']:.1f} s, compiled {r['compiled_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
