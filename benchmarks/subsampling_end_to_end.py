"""End-to-end augmentation subsampling: retrain the network on each selected set.

    OMP_NUM_THREADS=1 python benchmarks/subsampling_end_to_end.py \
        --config configs/beyond/mnist_3v8_translate_end_to_end.yaml --data-dir ../shared/data \
        --out runs/beyond/mnist_3v8_translate_end_to_end [--trials 1 --steps 20 ...]

Runs :func:`leanaug.experiments.end_to_end.run_end_to_end` (see its module doc: the
frozen pipeline's selections, a network trained from scratch on originals + copies of
the selected points for a fixed number of steps, both test sets, and the frozen
logistic regression's accuracies on the same selections for comparison), prints a
table of mean accuracies, and records the command and wall time in ``OUT/run_info.json``
like ``benchmarks/subsampling_run.py`` does, so ``benchmarks/subsampling_report.py``
can put the folder on the results page. Re-running resumes.

One torch thread (``OMP_NUM_THREADS=1``) is much faster than two on a busy 2-core
machine: idle threads spin waiting for each other (measured: 0.13 s vs 0.71 s of CPU
per SmallCNN step at batch 64).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from leanaug.experiments.end_to_end import load_end_to_end_config, run_end_to_end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--budgets", default=None, help="comma-separated, e.g. 50,100,250")
    ap.add_argument("--pairs", default=None, help="';'-separated score/policy pairs")
    ap.add_argument("--n-train", default=None)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    cfg = load_end_to_end_config(
        args.config,
        data_dir=args.data_dir,
        out=args.out,
        trials=args.trials,
        steps=args.steps,
        budgets=args.budgets,
        pairs=args.pairs,
        n_train=args.n_train,
    )
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = run_end_to_end(cfg, overwrite=args.overwrite)
    wall = time.perf_counter() - t0

    out = Path(args.out)
    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"invocations": []}
    info["invocations"].append(
        {
            "command": shlex.join(["python", *sys.argv]),
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 1),
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.node()}",
            "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "trainings": summary["trainings"],
            "exit_code": 0,
        }
    )
    info_path.write_text(json.dumps(info, indent=2) + "\n")

    res = summary["results"]
    base = summary["baselines"]
    cols = ["accuracy", "accuracy_augmented_test", "frozen_accuracy_augmented_test"]
    table = res.groupby(["score", "policy", "budget"])[cols].agg(["mean", "std"]).round(4)
    print(table.to_string())
    for key in ("no_augmentation", "full_augmentation"):
        b = base[key]
        print(
            f"{key}: clean {b['accuracy']:.4f} ± {b['std_accuracy']:.4f}, augmented test "
            f"{b['accuracy_augmented_test']:.4f} ± {b['std_accuracy_augmented_test']:.4f}"
        )
    print(f"{summary['trainings']} networks trained, {wall:.0f} s")


if __name__ == "__main__":
    main()
