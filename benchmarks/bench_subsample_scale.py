"""Old path vs new path for 10-class subsampling fits, timed side by side (issue 20.5).

On the features of a finished (or features-only) run folder, e.g. the 10-class MNIST
n = 5000 run of ``configs/beyond/mnist_10class_translate.yaml``:

* **influence**: the dense self-influence (``influence``, numpy, the scores' default)
  against the batched one (``influence:method=batched``, torch), on the clean fit; time
  and the largest relative difference between the two;
* **fits**: the selections of one ``random`` unit at the folder's budgets (plus the
  full-augmentation fit), each fitted by the old path (scikit-learn lbfgs, tol 1e-7,
  max_iter 1000, from zero: what the runs before 2026-12-04 did) and by the new one
  (``--classifier`` of this script: by default the torch solver with float32 products,
  tol 1e-4, warm-started from the clean fit), alternated fit by fit so that both see the
  same machine load; time, iterations and augmented-test accuracy of each.

    python benchmarks/bench_subsample_scale.py runs/beyond/mnist_10class_translate

Prints a table per part and the ratios (old / new), and writes them as JSON beside
(``OUT/scale_bench.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning

from leanaug.classifier import LogisticClassifier
from leanaug.experiments.config import parse_spec
from leanaug.experiments.runner import _fit_selection, _problem, read_features
from leanaug.policies import POLICIES
from leanaug.scores import SCORES


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a subsample run folder with features.npz")
    ap.add_argument("--classifier", default="solver=torch,precision=float32,tol=1e-4")
    ap.add_argument("--old-classifier", default="solver=lbfgs,tol=1e-7,max_iter=1000")
    ap.add_argument("--budgets", default=None, help="default: the folder's config")
    ap.add_argument("--parts", default="influence,fits", help="influence, fits or both")
    args = ap.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)  # the old path hits max_iter: counted

    cfg = yaml.safe_load((args.folder / "config.yaml").read_text())
    _, fs = read_features(args.folder / "features.npz")
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else list(cfg["budgets"])
    C = float(cfg["C"])
    new = partial(LogisticClassifier, C=C, **parse_spec(f"c:{args.classifier}")[1])
    old = partial(LogisticClassifier, C=C, **parse_spec(f"c:{args.old_classifier}")[1])
    n, d = fs.train.shape
    report: dict = {
        "folder": str(args.folder),
        "n": n,
        "d": d,
        "classes": int(np.unique(fs.train_labels).size),
        "copies": int(fs.train_copies.shape[1]),
        "old": args.old_classifier,
        "new": args.classifier,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
    }
    print(f"{args.folder}: n={n}, d={d}, {report['classes']} classes, {report['copies']} copies")

    parts = args.parts.split(",")
    t_new_clean, clean_new = timed(new().fit, fs.train, fs.train_labels)
    if "influence" in parts:
        influence_part(report, fs, clean_new)
    if "fits" in parts:
        fits_part(report, fs, old, new, clean_new, t_new_clean, budgets)
    (args.folder / "scale_bench.json").write_text(json.dumps(report, indent=2) + "\n")


def influence_part(report: dict, fs, clf) -> None:  # noqa: ANN001
    """Dense vs batched self-influence on the clean fit (the scores' classifier)."""
    t_dense, dense = timed(SCORES.get("influence")().score, clf, fs.train, fs.train_labels)
    batched_score = SCORES.get("influence")(method="batched", device="cpu")
    t_batched, batched = timed(batched_score.score, clf, fs.train, fs.train_labels)
    rel = float(np.max(np.abs(batched - dense) / np.abs(dense).clip(1e-300)))
    report["influence"] = {
        "dense_seconds": t_dense,
        "batched_seconds": t_batched,
        "ratio": t_dense / t_batched,
        "max_relative_difference": rel,
        "spearman": float(spearmanr(dense, batched).statistic),
    }
    print(f"influence: dense {t_dense:.1f} s, batched {t_batched:.1f} s "
          f"(x{t_dense / t_batched:.1f}), max relative difference {rel:.1e}")  # fmt: skip


def fits_part(report: dict, fs, old, new, clean_new, t_new_clean: float, budgets) -> None:  # noqa: ANN001
    """One random unit's selections, fitted by the old and the new path alternately."""
    n = fs.train.shape[0]
    t_old_clean, _ = timed(old().fit, fs.train, fs.train_labels)
    problem_old = _problem(fs, np.ones(n), old)
    problem_new = _problem(fs, np.ones(n), new)
    selections = POLICIES.get("random")().select(
        problem_old, sorted({*budgets, n}), rng=np.random.default_rng(0)
    )
    test_aug = fs.test_augmented
    rows = []
    for budget, selection in selections.items():
        t_o, (clf_o, rows_o) = timed(_fit_selection, problem_old, selection)
        t_n, (clf_n, _) = timed(_fit_selection, problem_new, selection, clean_new)
        rows.append({
            "budget": budget, "rows": rows_o,
            "old_seconds": t_o, "old_iterations": int(np.max(clf_o.n_iter_)),
            "old_accuracy_augmented_test": clf_o.score(*test_aug),
            "new_seconds": t_n, "new_iterations": int(np.max(clf_n.n_iter_)),
            "new_accuracy_augmented_test": clf_n.score(*test_aug),
        })  # fmt: skip
        r = rows[-1]
        print(f"budget {budget:6d} ({rows_o} rows): old {t_o:6.1f} s ({r['old_iterations']} it, "
              f"{100 * r['old_accuracy_augmented_test']:.2f} %)  new {t_n:6.1f} s "
              f"({r['new_iterations']} it, {100 * r['new_accuracy_augmented_test']:.2f} %)")  # fmt: skip
    old_total = t_old_clean + sum(r["old_seconds"] for r in rows)
    new_total = t_new_clean + sum(r["new_seconds"] for r in rows)
    report["fits"] = {
        "clean_old_seconds": t_old_clean,
        "clean_new_seconds": t_new_clean,
        "rows": rows,
        "old_total_seconds": old_total,
        "new_total_seconds": new_total,
        "ratio": old_total / new_total,
    }
    print(f"fits (clean + {len(rows)} selections): old {old_total:.0f} s, new {new_total:.0f} s, "
          f"ratio x{old_total / new_total:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
