"""Peak memory and time per matching iteration vs N: unrolled vs constant-memory (issue #8).

Each (mode, N) runs in a fresh Python process (peak RSS, ``ru_maxrss``, only grows, so
one process per configuration; tracemalloc does not see torch's allocations). The
worker builds the MNIST ConvNet (width 32, depth 3, 28x28x1, 10 classes), 10 synthetic
images per class, and random expert start/target parameters, then runs one warm-up
iteration and ``--repeats`` timed ones of :func:`leanaug.distill.matching.match_gradients`
with DSA on. Reported: peak RSS of the process, peak RSS above the set-up baseline
(imports + data, measured before the first iteration), and the median wall and CPU
(``time.process_time``: user + system of the process) seconds per iteration. On a shared
machine the CPU seconds are the steadier speed figure; the wall seconds are what a user
waits on an idle one.

    python benchmarks/bench_matching_memory.py                 # N in 10 20 40 80, both modes
    python benchmarks/bench_matching_memory.py --steps 10 20 --modes unrolled constant tesla

Targets (issue #8): constant-mode peak flat within 10% from N=10 to N=80; constant mode
at least 0.6x the unrolled speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _problem(ipc: int, width: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    from leanaug.distill.dsa import DSA
    from leanaug.distill.networks import ConvNet, FlatModel

    torch.manual_seed(0)
    model = FlatModel(ConvNet(1, 10, (28, 28), width=width, depth=3))
    start = model.flat_parameters()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(10 * ipc, 1, 28, 28)
    labels = torch.arange(10).repeat_interleave(ipc)
    return model, start, target, images, labels, torch.tensor(0.01), DSA()


def worker(
    mode: str, steps: int, ipc: int, batch_syn: int, width: int, repeats: int, threads: int
) -> dict:
    import torch

    from leanaug.distill.matching import match_gradients, plan_student

    model, start, target, images, labels, alpha, dsa = _problem(ipc, width, threads)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    for r in range(repeats + 1):
        plan = plan_student(images.shape[0], steps, batch_syn, torch.Generator().manual_seed(r))
        tic, cpu_tic = time.perf_counter(), time.process_time()
        match_gradients(model, start, target, images, labels, alpha, plan, dsa, mode)
        if r > 0:  # the first iteration is a warm-up
            times.append(time.perf_counter() - tic)
            cpu_times.append(time.process_time() - cpu_tic)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "steps": steps,
        "params": model.size,
        "peak_mb": peak_kb / 1024,
        "base_mb": base_kb / 1024,
        "above_base_mb": (peak_kb - base_kb) / 1024,
        "seconds_per_iteration": sorted(times)[len(times) // 2],
        "cpu_seconds_per_iteration": sorted(cpu_times)[len(cpu_times) // 2],
    }


def interleaved(
    modes: list[str],
    steps_list: list[int],
    ipc: int,
    batch_syn: int,
    width: int,
    rounds: int,
    threads: int,
) -> list[dict]:
    """Time the modes alternately in one process (round r: every mode once, same plan), so a
    varying load on a shared machine slows all modes alike; per-round ratios, median."""
    import torch

    from leanaug.distill.matching import match_gradients, plan_student

    model, start, target, images, labels, alpha, dsa = _problem(ipc, width, threads)
    rows = []
    for steps in steps_list:
        times: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(rounds + 1):
            plan = plan_student(images.shape[0], steps, batch_syn, torch.Generator().manual_seed(r))
            for mode in modes if r % 2 == 0 else modes[::-1]:
                tic = time.perf_counter()
                match_gradients(model, start, target, images, labels, alpha, plan, dsa, mode)
                if r > 0:  # round 0 is a warm-up
                    times[mode].append(time.perf_counter() - tic)
        for mode in modes:
            ratios = sorted(u / t for u, t in zip(times[modes[0]], times[mode], strict=True))
            rows.append(
                {
                    "mode": mode,
                    "steps": steps,
                    "median_seconds": sorted(times[mode])[len(times[mode]) // 2],
                    "speed_vs_first_mode_median": ratios[len(ratios) // 2],
                    "speed_vs_first_mode_rounds": ratios,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--modes", nargs="+", default=["unrolled", "constant"])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument(
        "--batch-syn", type=int, default=50, help="student minibatch (of 10*ipc images)"
    )
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed iterations after one warm-up (median reported)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved timing rounds (after 1 warm-up)"
    )
    ap.add_argument("--skip-memory", action="store_true", help="only the interleaved timing")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    ap.add_argument("--interleaved-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.interleaved_worker:
        rows = interleaved(
            args.modes, args.steps, args.ipc, args.batch_syn, args.width, args.rounds, args.threads
        )
        print(json.dumps(rows))
        return
    if args.worker:
        row = worker(
            args.worker[0],
            int(args.worker[1]),
            args.ipc,
            args.batch_syn,
            args.width,
            args.repeats,
            args.threads,
        )
        print(json.dumps(row))
        return

    tic = time.perf_counter()
    common = [
        "--ipc",
        str(args.ipc),
        "--batch-syn",
        str(args.batch_syn),
        "--width",
        str(args.width),
        "--threads",
        str(args.threads),
    ]
    print(
        f"MNIST ConvNet width {args.width}, {10 * args.ipc} synthetic images, student batch "
        f"{args.batch_syn}, DSA on, {args.threads} threads"
    )
    rows: list[dict] = []
    if not args.skip_memory:
        print(
            f"\n1) one fresh process per (mode, N): peak RSS; {args.repeats} timed iterations after 1 warm-up"
        )
        print(
            f"{'mode':>9} {'N':>4} {'peak MB':>9} {'above base MB':>14} {'s/iter':>8} {'cpu s/iter':>11}"
        )
        for steps in args.steps:  # side by side: every mode at each N before the next N
            for mode in args.modes:
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    mode,
                    str(steps),
                    "--repeats",
                    str(args.repeats),
                    *common,
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{mode:>9} {steps:>4} {row['peak_mb']:9.0f} {row['above_base_mb']:14.0f} "
                    f"{row['seconds_per_iteration']:8.2f} {row['cpu_seconds_per_iteration']:11.2f}",
                    flush=True,
                )

        def get(mode, steps):
            return next(r for r in rows if r["mode"] == mode and r["steps"] == steps)

        lo, hi = min(args.steps), max(args.steps)
        for mode in args.modes:
            a, b = get(mode, lo), get(mode, hi)
            print(
                f"  {mode}: peak N={hi} / N={lo} = {b['peak_mb'] / a['peak_mb']:.3f} (total RSS), "
                f"{b['above_base_mb'] / max(a['above_base_mb'], 1e-9):.3f} (above base)"
            )
        for mode in args.modes[1:]:
            for steps in args.steps:
                u, c = get(args.modes[0], steps), get(mode, steps)
                print(
                    f"  N={steps:>3} {mode}/{args.modes[0]}: peak {c['peak_mb'] / u['peak_mb']:.2f}x (total), "
                    f"{c['above_base_mb'] / max(u['above_base_mb'], 1e-9):.2f}x (above base)"
                )

    print(
        f"\n2) speed, modes interleaved in one process ({args.rounds} rounds after 1 warm-up): "
        f"median per-round speed relative to {args.modes[0]}"
    )
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--interleaved-worker",
        "--modes",
        *args.modes,
        "--steps",
        *map(str, args.steps),
        "--rounds",
        str(args.rounds),
        *common,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    timing = json.loads(out.strip().splitlines()[-1])
    print(f"{'mode':>9} {'N':>4} {'median s/iter':>14} {'speed':>7}  rounds")
    for row in timing:
        rounds = " ".join(f"{x:.2f}" for x in row["speed_vs_first_mode_rounds"])
        print(
            f"{row['mode']:>9} {row['steps']:>4} {row['median_seconds']:14.2f} "
            f"{row['speed_vs_first_mode_median']:6.2f}x  {rounds}"
        )
    print(f"\nwall time {time.perf_counter() - tic:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"memory": rows, "timing": timing}, f, indent=2)


if __name__ == "__main__":
    main()
