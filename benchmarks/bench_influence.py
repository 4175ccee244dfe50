"""Time the closed-form influence score against exact leave-one-out refits.

    python benchmarks/bench_influence.py [--n 10000] [--d 512] [--loo-n 1000] [--loo-refits 5]

1. Influence for n x d binary logistic regression (random-ish data with a planted
   linear signal, the model fitted first; only the score is timed, best of 3).
2. At n = loo-n: influence for all points vs exact leave-one-out. Exact LOO needs n
   refits; we time ``loo-refits`` of them and EXTRAPOLATE linearly to n refits.

Both are run with BLAS limited to 1 thread and with the default thread count
(threadpoolctl): on a busy shared machine multi-threaded BLAS can be much SLOWER than
one thread (threads wait on each other), so both figures are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from leanaug.classifier import LogisticClassifier
from leanaug.scores import SCORES, loo_loss_changes


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    w = rng.normal(size=d)
    y = (X @ w + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--loo-n", type=int, default=1_000)
    ap.add_argument("--loo-refits", type=int, default=5)
    args = ap.parse_args()

    blas = ", ".join(f"{i['internal_api']}({i['num_threads']} threads)" for i in threadpool_info())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; {blas}"
    )
    for threads in (1, None):
        with threadpool_limits(limits=threads, user_api="blas"):
            label = "BLAS 1 thread" if threads == 1 else "BLAS default threads"
            run(args, label)


def run(args: argparse.Namespace, label: str) -> None:
    influence = SCORES.get("influence")()
    X, y = make_data(args.n, args.d)
    t = time.perf_counter()
    clf = LogisticClassifier().fit(X, y)
    fit_s = time.perf_counter() - t
    secs = best_of(lambda: influence.score(clf, X, y))
    print(
        f"[{label}] influence, binary, n={args.n}, d={args.d}: {secs:.3f} s "
        f"(best of 3; target < 2 s); model fit {fit_s:.2f} s"
    )

    X, y = make_data(args.loo_n, args.d, seed=1)
    clf = LogisticClassifier().fit(X, y)
    inf_s = best_of(lambda: influence.score(clf, X, y))
    k = args.loo_refits
    t = time.perf_counter()
    loo_loss_changes(clf, X, y, indices=np.arange(k))
    per_refit = (time.perf_counter() - t) / k
    loo_s = per_refit * args.loo_n
    print(
        f"[{label}] n={args.loo_n}, d={args.d}: influence for all points {inf_s:.3f} s; exact LOO "
        f"{per_refit:.3f} s per refit (mean of {k} timed) -> {loo_s:.0f} s for all {args.loo_n} "
        f"(EXTRAPOLATED); speed-up {loo_s / inf_s:,.0f}x"
    )


if __name__ == "__main__":
    main()
