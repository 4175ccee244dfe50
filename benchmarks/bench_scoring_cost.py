"""What scoring costs next to what it saves: influence vs one full-augmentation fit (issue #8).

For each finished subsampling run folder (``leanaug subsample run --out DIR``; the paper
settings in ``configs/paper/``), reads the cached features ``DIR/features.npz`` and times,
with one BLAS thread (as the runner fits), in ``--repeats`` rounds that each time every
quantity once (after a warm-up round), reporting medians:

* ``score``: fitting the clean logistic regression (the no-augmentation model the scores
  need) plus the ``influence`` score of every training point, i.e. everything subsampling
  adds on top of the featurizer;
* ``influence only``: the score alone, the model given (the registered score: its
  triangular solve in float32, checked against float64 on a sample of points); and the
  same with ``solve_precision="float64"`` throughout, for comparison;
* ``full fit``: one fit on every training point plus all its deterministic copies (the
  full-augmentation model subsampling tries to avoid).

Prints one row per folder and the ratio score / full fit (target: under 5 %): the median
of the per-round ratios and their range. Then one line per folder of details: lbfgs
iterations of the clean and the full fit, the condition number of the Hessian, the
float32 solve's largest relative difference from float64 (per point) and whether it ranks
the points the same, and the solve alone (model and Hessian given) in each precision.

    python benchmarks/bench_scoring_cost.py runs/paper/mnist_3v8_* runs/paper/cifar10_0v1_*
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from leanaug.classifier import LogisticClassifier
from leanaug.experiments.config import load_config_file
from leanaug.experiments.runner import _fit_selection, _problem, read_features
from leanaug.policies import Selection
from leanaug.scores import SCORES
from leanaug.scores.influence import logistic_curvature, self_influence


def timed(fn, *args) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - t0, value


def measure(folder: Path, repeats: int) -> dict[str, float | str | int]:
    C = float(load_config_file(folder / "config.yaml").get("C", 1.0))
    _, fs = read_features(folder / "features.npz")
    influence = SCORES.get("influence")()
    double = SCORES.get("influence")(solve_precision="float64")
    problem = _problem(fs, np.zeros(fs.train.shape[0]), partial(LogisticClassifier, C=C))

    def score_all() -> LogisticClassifier:
        clf = LogisticClassifier(C=C).fit(fs.train, fs.train_labels)
        influence.score(clf, fs.train, fs.train_labels)
        return clf

    # Rounds, each timing everything once, side by side: the box's speed drifts by tens of
    # percent over a minute, which best-of-N per quantity would turn into ratio noise.
    rounds: list[dict[str, float]] = []
    rows = 0
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        t_score, clf = timed(score_all)
        t_infl, _ = timed(influence.score, clf, fs.train, fs.train_labels)
        t_infl64, _ = timed(double.score, clf, fs.train, fs.train_labels)
        t_full, (_, rows) = timed(lambda: _fit_selection(problem, Selection(np.arange(problem.n))))
        rounds.append(dict(score=t_score, infl=t_infl, infl64=t_infl64, full=t_full))
    rounds = rounds[1:]
    ratios = [r["score"] / r["full"] for r in rounds]

    def median(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    # details: where the time goes, and what the float32 solve changes
    clf = LogisticClassifier(C=C).fit(fs.train, fs.train_labels)
    full, _ = _fit_selection(problem, Selection(np.arange(problem.n)))
    cur = logistic_curvature(clf, fs.train, fs.train_labels)
    solve = {}
    for precision in ("float32", "float64"):
        times = [timed(self_influence, clf, None, None, None, cur, precision) for _ in rounds]
        solve[precision] = float(np.median([t for t, _ in times]))
        solve[precision + " scores"] = times[-1][1]
    s32, s64 = solve["float32 scores"], solve["float64 scores"]
    return {
        "clean iterations": int(np.max(clf.n_iter_)),
        "full iterations": int(np.max(full.n_iter_)),
        "cond H": float(np.linalg.cond(np.tril(cur.chol[0])) ** 2),
        "float32 max rel diff": float(np.max(np.abs(s32 - s64) / s64)),
        "same ranking": bool(np.array_equal(np.argsort(s32), np.argsort(s64))),
        "solve32 s": solve["float32"],
        "solve64 s": solve["float64"],
        "setting": folder.name,
        "n": fs.train.shape[0],
        "d": fs.train.shape[1],
        "full rows": rows,
        "score s": median("score"),
        "influence s": median("infl"),
        "influence64 s": median("infl64"),
        "full fit s": median("full"),
        "ratio": float(np.median(ratios)),
        "ratio min": min(ratios),
        "ratio max": max(ratios),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; 1 BLAS thread")
    print(
        "| setting | n x d | full-augmentation rows | clean fit + influence (s) | "
        "influence alone (s) | influence alone, float64 solve (s) | full-augmentation fit (s) "
        "| scoring / full fit (median) | range over rounds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    details = []
    with threadpool_limits(limits=1):
        for folder in args.folders:
            if not (folder / "features.npz").is_file():
                print(f"(skipped {folder}: no features.npz)")
                continue
            r = measure(folder, args.repeats)
            details.append(r)
            print(
                f"| {r['setting']} | {r['n']} x {r['d']} | {r['full rows']} | {r['score s']:.3f} | "
                f"{r['influence s']:.3f} | {r['influence64 s']:.3f} | {r['full fit s']:.2f} | "
                f"{100 * r['ratio']:.1f} % | {100 * r['ratio min']:.1f}-{100 * r['ratio max']:.1f} % |",
                flush=True,
            )
    for r in details:
        print(
            f"{r['setting']}: lbfgs iterations clean {r['clean iterations']}, full "
            f"{r['full iterations']}; cond(H) {r['cond H']:.1e}; float32 solve: largest "
            f"relative difference {r['float32 max rel diff']:.1e}, same ranking "
            f"{'yes' if r['same ranking'] else 'no'}; solve alone {1e3 * r['solve32 s']:.1f} ms "
            f"(float32, checked) vs {1e3 * r['solve64 s']:.1f} ms (float64)"
        )


if __name__ == "__main__":
    main()
