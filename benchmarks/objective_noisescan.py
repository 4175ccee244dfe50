"""Falsification scan of the unbiased matching objective (issue 19, item 1), no learning.

The noise scan of ``benchmarks/augdistill.py --part noisescan`` found that MTT's matching
loss rises with the noise of a *random* transform phi: ``E||theta_N - theta*||^2 =
||E theta_N - theta*||^2 + tr Var(theta_N)``, so any noise in the student's trajectory is
penalised. The U-statistic of :mod:`leanaug.distill.objectives` (``matching-unbiased``)
estimates the first term alone. This scan asks whether it, too, rises with the noise,
at a short horizon and at a long one (``N x batch >= 5 |S|``: the student sees every
subset image at least five times).

For each horizon ``N`` and each of ``--samples`` samples (an expert, a start epoch
``t < T+``, a batch plan over the subset ``S``, and ``K = --draws`` independent draws of
phi's noise and the DSA parameters on that plan, seeded as ``leanaug distill augment``
seeds its iterations and their extra draws), a random ``transform`` phi (the identity
with its noise scale gamma set to ``g`` for every parameter: each draw is
``range * tanh(g * noise)``: rotation +-30 deg, translation +-10 %, log-scale +-0.3,
brightness, contrast) is applied, then DSA, and ``K`` students take ``N`` SGD steps of
size ``alpha`` from ``theta*_t``. The same samples and draws serve every ``g`` (common
random numbers), so differences between rows are paired. Reported, mean +- standard
error over the samples:

* ``MSE``: MTT's loss ``||theta_N - theta*_{t+M}||^2 / D``, averaged over the K draws
  (``matching:draws=K``; the same expectation as one draw, less noise);
* ``U2``: the U-statistic of draws 0 and 1 (``matching-unbiased``);
* ``U4``: the U-statistic of all K draws (``matching-unbiased:draws=K``);
* ``trVar = MSE - UK``: the variance term, ``tr Var(theta_N) / D``;
* beside each, the paired difference from ``g = 0`` (DSA only).

A row ``no DSA`` (``g = 0`` without DSA: a deterministic student, ``U = MSE``) shows what
DSA itself costs. ``alpha`` per horizon is given (``--alphas 8:0.2,100:0.02``) or chosen
(``auto``) as the ``--alpha-grid`` value with the smallest mean MSE at ``g = 0`` over the
first ``--alpha-samples`` samples (the identity phi's best step, as ``--part scan``).

Digits (the numbers of ``docs/results-augmentation-by-distillation.md``)::

    leanaug distill experts --dataset digits --experts 5 --epochs 4 --width 16 --depth 2 \\
        --batch-size 32 --lr 0.05 --out runs/noisescan/experts-digits-w16 --device cpu
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/objective_noisescan.py \\
        --experts runs/noisescan/experts-digits-w16 --subset 0.1 --batch 8 --horizons 8,100 \\
        --samples 48 --draws 4 --alpha-factors 0.5,1,2 --out runs/noisescan/digits.csv

(|S| = 136, b = 8: N x b = 800 = 5.9 |S| at N = 100; 472 s wall, 464 s CPU on the shared
2-core machine.)

MNIST scale (the 20 width-32 experts of ``benchmarks/artifacts/mnist-experts-w32``, 15
epochs, float16; a 1 % subset = 600 images, batch 32: ``100 x 32 >= 5 x 600``; the experts
take 235 steps of lr 0.01 per epoch, so alpha ~ 0.02 at N = 100 and ~ 0.3 at N = 8 cover
one epoch). Each N = 100 sample is 3 alphas x (5 g x 4 draws + 1) x 100 = 6300 student steps
of the width-32 ConvNet at batch 32: a GPU run (add ``--device cuda``) rather than a CPU one::

    python benchmarks/objective_noisescan.py --experts benchmarks/artifacts/mnist-experts-w32 \\
        --subset 0.01 --batch 32 --horizons 8,100 --samples 64 --draws 4 --expert-epochs 1 \\
        --max-start-epoch 5 --alpha-grid 0.01,0.02,0.04,0.08,0.16,0.32 \\
        --alpha-factors 0.5,1,2 --threads 2 --out runs/noisescan/mnist.csv

(Smoke of that path: ``--max-experts 1 --samples 2 --horizons 8 --draws 2 --gammas 0,1
--alphas 8:0.02``, 3 s.)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
NO_DSA = -1.0  # the gamma column's value for the "g = 0 without DSA" row


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _alphas(text: str) -> dict[int, float] | None:
    """``"8:0.2,100:0.02"`` -> {8: 0.2, 100: 0.02}; ``"auto"`` -> None."""
    if text == "auto":
        return None
    out = {}
    for item in text.split(","):
        n, _, a = item.partition(":")
        out[int(n)] = float(a)
    return out


class Scan:
    """The experts, data subset, student, DSA and random phi the samples share."""

    def __init__(self, args) -> None:
        from leanaug.distill.augment_training import subset_indices
        from leanaug.distill.augnet import build_phi
        from leanaug.distill.dsa import DSA
        from leanaug.distill.experts import (
            build_network,
            load_dataset_for,
            load_experts,
            load_preprocessor,
        )
        from leanaug.distill.networks import FlatModel

        self.args = args
        self.device = torch.device(args.device)
        self.experts = load_experts(args.experts)[: args.max_experts or None]
        self.config = self.experts[0].config
        epochs = min(e.epochs_done for e in self.experts)
        if args.max_start_epoch - 1 + args.expert_epochs > epochs:
            raise SystemExit(
                f"--max-start-epoch {args.max_start_epoch} + --expert-epochs "
                f"{args.expert_epochs} needs experts of {args.max_start_epoch - 1 + args.expert_epochs}"
                f" epochs; {args.experts} has {epochs}"
            )
        pre = load_preprocessor(args.experts)
        ds = load_dataset_for(self.config, args.data_dir)
        self.subset = subset_indices(ds.train_labels, args.subset, args.subset_seed)
        self.x = pre.transform(ds.train_images[self.subset], device=self.device)
        self.y = torch.as_tensor(ds.train_labels[self.subset]).to(self.device).long()
        net = self.config["network"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # shapes only: students start at expert parameters
            self.model = FlatModel(build_network(net).to(self.device))
        dsa_cfg = self.config.get("training", {}).get("dsa")
        self.dsa = DSA(**dsa_cfg) if dsa_cfg and args.dsa else None
        self.phi = build_phi(
            "transform", int(net["in_channels"]), tuple(net["image_size"]), int(net["num_classes"])
        ).to(self.device)
        self.n_train = int(self.config["dataset"].get("n_train_images", len(ds.train_labels)))

    def sample(self, n: int, s: int):
        """Sample ``s`` of horizon ``n``: expert segment, slot inputs and the K draws
        (noise, plan); seeded as the trainer seeds iteration ``s`` and its extra draws."""
        from leanaug.distill.augment_training import plan_slots
        from leanaug.distill.matching import expert_segment
        from leanaug.distill.objectives import draw_generator, redraw_plan
        from leanaug.seeding import torch_generator

        args = self.args
        key = (args.seed, "noisescan", n, s)
        gen = torch_generator(*key)
        e = int(torch.randint(len(self.experts), (1,), generator=gen))
        t = int(torch.randint(args.max_start_epoch, (1,), generator=gen))
        slots = plan_slots(len(self.subset), n, args.batch, gen)
        start, target = expert_segment(self.experts[e].trajectory, t, args.expert_epochs)
        pos = slots.images.to(self.device)
        xs, ys = self.x[pos], self.y[pos]
        noises, plans = [self.phi.sample_noise(xs, gen)], [slots.plan]
        for k in range(1, args.draws):
            gk = draw_generator(*key, draw=k)
            plans.append(redraw_plan(slots.plan, gk))
            noises.append(self.phi.sample_noise(xs, gk))
        segment = (start.to(self.device), target.to(self.device))
        return dict(expert=e, start_epoch=t), segment, xs, ys, noises, plans

    def endpoints(self, g: float, alpha: float, segment, xs, ys, noises, plans, dsa=True):
        from leanaug.distill.matching import unroll_student

        with torch.no_grad():
            self.phi.gamma.fill_(g)
            zs = [self.phi(xs, noise, labels=ys) for noise in noises]
        a = torch.tensor(alpha, device=self.device)
        aug = self.dsa if dsa else None
        return [
            unroll_student(self.model, segment[0], z, ys, a, p, aug)
            for z, p in zip(zs, plans, strict=True)
        ]


def estimates(ends, segment) -> dict[str, float]:
    from leanaug.distill.objectives import build_objective

    k = len(ends)
    start, target = segment
    out = dict(
        mse1=float(build_objective("matching").loss(ends[:1], start, target)),
        mse=float(build_objective(f"matching:draws={k}").loss(ends, start, target)),
        u2=float(build_objective("matching-unbiased").loss(ends[:2], start, target)),
        uk=float(build_objective(f"matching-unbiased:draws={k}").loss(ends, start, target)),
        denom=float((start - target).pow(2).sum()),
    )
    out["trvar"] = out["mse"] - out["uk"]
    return out


def choose_alpha(scan: Scan, n: int) -> tuple[float, list[dict]]:
    """The ``--alpha-grid`` value with the smallest mean MSE at g = 0 (with DSA)."""
    args = scan.args
    rows = []
    for s in range(args.alpha_samples):
        info, segment, xs, ys, noises, plans = scan.sample(n, s)
        for alpha in args.alpha_grid:
            ends = scan.endpoints(0.0, alpha, segment, xs, ys, noises[:2], plans[:2])
            rows.append(dict(horizon=n, alpha=alpha, sample=s, **estimates(ends, segment)))
    frame = pd.DataFrame(rows).groupby("alpha")[["mse", "uk"]].mean()
    print(f"N={n}: alpha grid at g=0 (mean of {args.alpha_samples} samples):")
    print(frame.to_string(float_format=lambda v: f"{v:.4f}"), flush=True)
    return float(frame["mse"].idxmin()), rows


def run_horizon(scan: Scan, n: int, alphas: list[float]) -> list[dict]:
    args = scan.args
    rows = []
    tic = time.perf_counter()
    for s in range(args.samples):
        info, segment, xs, ys, noises, plans = scan.sample(n, s)
        for alpha in alphas:
            for g in args.gammas:
                ends = scan.endpoints(g, alpha, segment, xs, ys, noises, plans)
                est = estimates(ends, segment)
                rows.append(dict(horizon=n, alpha=alpha, sample=s, gamma=g, **info, **est))
            if scan.dsa is not None and args.no_dsa_row:  # deterministic: one draw is all
                end = scan.endpoints(0.0, alpha, segment, xs, ys, noises[:1], plans[:1], dsa=False)
                est = estimates(end * args.draws, segment)
                rows.append(dict(horizon=n, alpha=alpha, sample=s, gamma=NO_DSA, **info, **est))
        if (s + 1) % max(1, args.samples // 8) == 0 or s + 1 == args.samples:
            print(
                f"N={n}: {s + 1}/{args.samples} samples, {time.perf_counter() - tic:.0f} s",
                flush=True,
            )
    return rows


def _mean_se(values: pd.Series) -> str:
    return f"{values.mean():.4f} +- {values.std(ddof=1) / math.sqrt(len(values)):.4f}"


def _label(g: float) -> str:
    return "no DSA" if g == NO_DSA else f"{g:g}"


def _order(gammas) -> list[float]:
    return sorted(set(gammas), key=lambda g: (g != NO_DSA, g))


def summarise(frame: pd.DataFrame, draws: int) -> tuple[str, str, list[str]]:
    """Markdown tables (every (N, alpha, g): mean +- s.e. and the paired difference from
    g = 0 at the same alpha; each g at its best alpha) and the verdicts."""
    uk = f"U{draws}"
    cols = [("mse", "MSE"), ("u2", "U2"), ("uk", uk), ("trvar", "trVar")]
    head = " | ".join(name for _, name in cols)
    lines = [
        f"| N | alpha | g | {head} | U2 - (g=0) | {uk} - (g=0) |",
        "|---|---|---|" + "---|" * (len(cols) + 2),
    ]
    for (n, alpha), part in frame.groupby(["horizon", "alpha"], sort=True):
        base = part[part["gamma"] == 0.0].set_index("sample")
        for g in _order(part["gamma"]):
            rows = part[part["gamma"] == g].set_index("sample")
            cells = [_mean_se(rows[col]) for col, _ in cols]
            cells += [_mean_se(rows[col] - base[col]) for col in ("u2", "uk")]
            lines.append(f"| {n} | {alpha:g} | {_label(g)} | " + " | ".join(cells) + " |")
    # each (N, g) at the alpha of its smallest mean, per estimator (the trainer learns alpha)
    best_lines = [
        f"| N | g | MSE (alpha) | {uk} (alpha) | {uk} - (g=0), each at its best alpha |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for n, part in frame.groupby("horizon", sort=True):
        means = part.groupby(["gamma", "alpha"])[["mse", "uk"]].mean()
        best = {
            col: {g: means.loc[g][col].idxmin() for g in part["gamma"].unique()}
            for col in ("mse", "uk")
        }

        def at(g, col, _part=part, _best=best):
            rows = _part[(_part["gamma"] == g) & (_part["alpha"] == _best[col][g])]
            return rows.set_index("sample")[col]

        for g in _order(part["gamma"]):
            cells = [f"{_mean_se(at(g, col))} ({best[col][g]:g})" for col in ("mse", "uk")]
            cells.append(_mean_se(at(g, "uk") - at(0.0, "uk")))
            best_lines.append(f"| {n} | {_label(g)} | " + " | ".join(cells) + " |")
        noisy = sorted(g for g in part["gamma"].unique() if g != NO_DSA)
        for col, name in (("mse", "MSE"), ("uk", uk)):
            trend = [at(g, col).mean() for g in noisy]
            mono = all(b >= a for a, b in zip(trend, trend[1:], strict=False))
            for g in noisy[1:]:
                d = at(g, col) - at(0.0, col)
                mean, se = d.mean(), d.std(ddof=1) / math.sqrt(len(d))
                word = (
                    "higher" if mean > 2 * se else ("lower" if mean < -2 * se else "no different")
                )
                verdicts.append(
                    f"N={n}: {name} at g={g:g} is {word} than at g=0 (each at its best alpha): "
                    f"{mean:+.4f} +- {se:.4f} (paired, {len(d)} samples)"
                )
            verdicts.append(
                f"N={n}: {name} over g = {', '.join(f'{g:g}' for g in noisy)}: "
                + ", ".join(f"{v:.4f}" for v in trend)
                + (" (non-decreasing)" if mono else " (not monotone)")
            )
    return "\n".join(lines), "\n".join(best_lines), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--experts", type=Path, required=True, help="experts folder")
    ap.add_argument("--data-dir", type=Path, help="data folder (default: the experts')")
    ap.add_argument("--max-experts", type=int, default=0, help="use the first K experts (0: all)")
    ap.add_argument("--subset", type=float, default=0.1, help="fraction |S| of the training set")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="student minibatch b")
    ap.add_argument("--horizons", type=lambda s: [int(v) for v in s.split(",")], default=[8, 100])
    ap.add_argument("--gammas", type=_floats, default=[0.0, 0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--samples", type=int, default=40, help="(expert, epoch, plan) samples per N")
    ap.add_argument("--draws", type=int, default=4, help="K independent phi/DSA draws (>= 2)")
    ap.add_argument("--expert-epochs", type=int, default=1, help="M")
    ap.add_argument("--max-start-epoch", type=int, default=3, help="T+: t in 0..T+-1")
    ap.add_argument("--alphas", type=_alphas, default=None, help="N:alpha,... or auto")
    ap.add_argument("--alpha-grid", type=_floats, default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    ap.add_argument("--alpha-samples", type=int, default=6)
    ap.add_argument(
        "--alpha-factors",
        type=_floats,
        default=[1.0],
        help="scan every g at alpha times each factor (e.g. 0.5,1,2); the best per g is reported",
    )
    ap.add_argument("--dsa", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--no-dsa-row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also g = 0 without DSA (a deterministic student)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="CSV of every (N, sample, g) row")
    args = ap.parse_args()
    if args.draws < 2:
        raise SystemExit("--draws must be at least 2 (the U-statistic needs two draws)")
    if 0.0 not in args.gammas:
        raise SystemExit("--gammas must include 0 (the paired baseline)")
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; settings "
        f"{json.dumps({k: str(v) for k, v in vars(args).items()})}",
        flush=True,
    )
    tic = time.perf_counter()
    scan = Scan(args)
    print(
        f"{len(scan.experts)} experts, |S| = {len(scan.subset)} of {scan.n_train} images, "
        f"batch {args.batch}: N x b = "
        + ", ".join(
            f"{n * args.batch} ({n * args.batch / len(scan.subset):.2f} |S|)" for n in args.horizons
        ),
        flush=True,
    )
    rows = []
    for n in args.horizons:
        if args.alphas is None:
            alpha, _ = choose_alpha(scan, n)
        elif n in args.alphas:
            alpha = args.alphas[n]
        else:
            raise SystemExit(f"--alphas has no alpha for N={n}")
        alphas = [alpha * f for f in args.alpha_factors]
        print(f"N={n}: alpha {alpha:g}, scanned at {', '.join(f'{a:g}' for a in alphas)}")
        rows += run_horizon(scan, n, alphas)
    frame = pd.DataFrame(rows)
    out = args.out or ROOT / "runs" / "noisescan" / f"objective_noisescan-{args.experts.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    table, best, verdicts = summarise(frame, args.draws)
    print(table)
    print()
    print(best)
    print()
    print("\n".join(verdicts))
    print(
        f"wrote {out}; wall {time.perf_counter() - tic:.0f} s, "
        f"CPU time of this process {time.process_time():.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
