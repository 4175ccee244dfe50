"""The course project's failed phi, reproduced, and each fix on its own (issue #7).

Short runs on MNIST (reduced CPU scale), 1 % subset (600 images), the same experts, plan
and seeds for every variant: N=5 student steps of 32 images, M=1, T+=2, DSA on,
``--iterations`` iterations, alpha_0 = 0.01 and lr_lr = 1e-5 (MTT's defaults, which the
course project kept). Variants:

``course``          courseproject phi (random init, unbounded), SGD lr 1000 momentum 0.5
                    (the pixel learning rate) on its weights, alpha learned directly (raw)
``+identity``       course, but the last deconvolution zero-initialised (phi = x at start)
``+bounded``        course, but ``x + tanh(r)`` instead of ``x + r``
``+adam``           course, but Adam lr 1e-3 (a learning rate for network weights)
``+positive-alpha`` course, but ``alpha = exp(a)``
``all-fixes``       the four fixes together (still the courseproject architecture)
``residual``        our residual phi with the same fixes (identity, bounded, Adam, exp)

Each run stops early with a one-line reason when the guard fires (non-finite loss or
weights); the last good checkpoint is then used for the pictures and the evaluation.
Outputs in ``--out``: ``failure.parquet`` (per-iteration logs of all variants),
``failure_summary.parquet``, ``failure_curves.png`` (loss / identity loss / alpha),
``failure_images.png`` (the same 6 inputs: x, then phi(x) of every variant), and the
evaluation: one ConvNet per variant trained ``--eval-steps`` steps on phi(1 % subset) +
DSA (fresh noise per batch), plus the course project's own protocol (phi of 10 real
images, one per class) for ``course`` and ``all-fixes``.

    python benchmarks/augdistill_failure.py
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]

BASE = dict(
    subset=0.01,
    syn_steps=5,
    batch=32,
    expert_epochs=1,
    max_start_epoch=2,
    lr_lr=1e-5,
    lr_teacher=0.01,
    dsa=True,
    memory="unrolled",
    checkpoint_every=1,
    picture_every=10,
    loss_limit=1e30,  # let the failure show; only non-finite values stop a run
    seed=0,
    device="cpu",
)
COURSE = dict(phi="courseproject", phi_options={}, optimizer="sgd", lr_phi=1000.0, alpha_mode="raw")
VARIANTS = {
    "course": COURSE,
    "+identity": {**COURSE, "phi_options": {"identity_init": True}},
    "+bounded": {**COURSE, "phi_options": {"bounded": True, "bound": 1.0}},
    "+adam": {**COURSE, "optimizer": "adam", "lr_phi": 1e-3},
    "+positive-alpha": {**COURSE, "alpha_mode": "log"},
    "all-fixes": dict(
        phi="courseproject",
        phi_options={"identity_init": True, "bounded": True, "bound": 1.0},
        optimizer="adam",
        lr_phi=1e-3,
        alpha_mode="log",
    ),
    "residual": dict(
        phi="residual",
        phi_options={"width": 16, "noise_channels": 4, "scale": 1.0},
        optimizer="adam",
        lr_phi=1e-3,
        alpha_mode="log",
    ),
}


def run_variant(name: str, args) -> dict:
    from leanaug.distill.augment_training import AugmentDistillation, AugmentDiverged

    folder = args.out / "failure" / name
    params = {**BASE, **VARIANTS[name], "iterations": args.iterations}
    tic = time.perf_counter()
    stopped = ""
    try:
        AugmentDistillation(**params).fit(args.experts, folder, progress=False)
    except AugmentDiverged as exc:
        stopped = str(exc).split(" (try")[0]
    wall = time.perf_counter() - tic
    log = pd.read_parquet(folder / "log.parquet")
    log.insert(0, "variant", name)
    print(
        f"{name}: {len(log)} iterations in {wall:.0f} s{'; ' + stopped if stopped else ''}; "
        f"loss first {log['loss'].iloc[0]:.4g} last {log['loss'].iloc[-1]:.4g} "
        f"(identity {log['loss_identity'].iloc[-1]:.4g}); alpha last {log['alpha'].iloc[-1]:.4g} "
        f"min {log['alpha'].min():.4g}",
        flush=True,
    )
    return dict(variant=name, log=log, stopped=stopped, wall=wall, folder=folder)


def evaluate_variant(name: str, folder: Path, args, data) -> dict:
    from leanaug.distill.augment_training import (
        Compose,
        DSATransform,
        PhiTransform,
        load_checkpoint_phi,
        subset_indices,
        train_on_augmented,
    )
    from leanaug.distill.dsa import DSA
    from leanaug.distill.evaluate import random_real_indices

    cfg, pre, ds, test_x, test_y = data
    phi, alpha, it = load_checkpoint_phi(folder)
    dsa = DSATransform(DSA(**cfg["training"]["dsa"]))
    idx = subset_indices(ds.train_labels, BASE["subset"], 0)
    x = pre.transform(ds.train_images[idx])
    y = torch.as_tensor(ds.train_labels[idx])
    out = dict(variant=name, checkpoint_iteration=it, alpha=alpha)
    with torch.no_grad():
        z = phi.augment(x, y, torch.arange(len(idx)), generator=torch.Generator().manual_seed(0))
    out["phi_finite"] = bool(torch.isfinite(z).all())
    out["phi_rms_change"] = float((z - x).pow(2).mean().sqrt()) if out["phi_finite"] else math.inf
    if out["phi_finite"]:
        res = train_on_augmented(
            x,
            y,
            test_x,
            test_y,
            cfg["network"],
            transform=Compose(PhiTransform(phi), dsa),
            steps=args.eval_steps,
            batch_size=64,
            lr=0.01,
            runs=1,
            seed=1000,
            device="cpu",
        )
        out["accuracy_phi_600"] = res.final_accuracy[0]
        if name in ("course", "all-fixes"):
            # the course project's evaluation: phi of 10 real images (1 per class)
            ten = random_real_indices(ds.train_labels, 1, 0, 0)
            pos = torch.as_tensor(np.searchsorted(idx, ten)) if phi.needs_index else None
            x10 = pre.transform(ds.train_images[ten])
            y10 = torch.as_tensor(ds.train_labels[ten])
            res10 = train_on_augmented(
                x10,
                y10,
                test_x,
                test_y,
                cfg["network"],
                transform=Compose(PhiTransform(phi), dsa) if pos is None else dsa,
                steps=args.eval_steps,
                batch_size=64,
                lr=0.01,
                runs=1,
                seed=1000,
                device="cpu",
            )
            out["accuracy_phi_10"] = res10.final_accuracy[0]
    return out


def figures(results: list[dict], args, data) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanaug.distill.augment_training import load_checkpoint_phi, subset_indices

    frame = pd.concat([r["log"] for r in results], ignore_index=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for r in results:
        log = r["log"]
        axes[0].plot(log["iteration"], log["loss"], label=r["variant"])
        axes[2].plot(log["iteration"], log["alpha"], label=r["variant"])
    ident = frame.groupby("iteration")["loss_identity"].mean()
    axes[0].plot(ident.index, ident.values, "k--", lw=1, label="identity phi (real images)")
    axes[0].set_yscale("log")
    axes[0].set_title("matching loss (log scale)", fontsize=9)
    for r in results:
        log = r["log"]
        axes[1].plot(log["iteration"], log["phi_change"], label=r["variant"])
    axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[1].set_title("rms |phi(x) - x| (preprocessed units)", fontsize=9)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_yscale("symlog", linthresh=1e-2)
    axes[2].set_title("alpha (student step size)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "failure_curves.png", dpi=110)
    plt.close(fig)

    cfg, pre, ds, _, _ = data
    idx = subset_indices(ds.train_labels, BASE["subset"], 0)
    y_all = np.asarray(ds.train_labels)[idx]
    picks = [int(np.flatnonzero(y_all == c)[0]) for c in range(6)]
    x = pre.transform(ds.train_images[idx[picks]])
    y = torch.as_tensor(y_all[picks])
    rows = [pre.inverse_transform(x)]
    names = ["x (real)"]
    for r in results:
        phi, _, it = load_checkpoint_phi(r["folder"])
        with torch.no_grad():
            z = phi.augment(
                x, y, torch.as_tensor(picks), generator=torch.Generator().manual_seed(0)
            )
        rows.append(pre.inverse_transform(torch.nan_to_num(z, nan=0.0, posinf=1e3, neginf=-1e3)))
        names.append(f"{r['variant']} (it {it})")
    fig, axes = plt.subplots(
        len(rows), len(picks), figsize=(1.1 * len(picks) + 1.6, 1.1 * len(rows))
    )
    for i, row in enumerate(rows):
        for j in range(len(picks)):
            ax = axes[i, j]
            ax.imshow(row[j, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(names[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(args.out / "failure_images.png", dpi=110)
    plt.close(fig)
    print(f"wrote {args.out / 'failure_curves.png'} and {args.out / 'failure_images.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--experts", type=Path, default=ROOT / "runs" / "augdistill" / "experts")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "augdistill")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--eval-steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cuda={torch.cuda.is_available()}",
        flush=True,
    )
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor
    from leanaug.results import write_parquet

    tic = time.perf_counter()
    cfg = load_config(args.experts)
    pre = load_preprocessor(args.experts)
    ds = load_dataset_for(cfg)
    data = (cfg, pre, ds, pre.transform(ds.test_images), torch.as_tensor(ds.test_labels))
    results = [run_variant(name, args) for name in args.variants.split(",")]
    write_parquet(
        args.out / "failure.parquet", pd.concat([r["log"] for r in results], ignore_index=True)
    )
    rows = []
    for r in results:
        ev = evaluate_variant(r["variant"], r["folder"], args, data)
        log = r["log"]
        rows.append(
            dict(
                **ev,
                iterations_run=len(log),
                stopped=r["stopped"],
                wall_seconds=r["wall"],
                loss_first=float(log["loss"].iloc[0]),
                loss_last=float(log["loss"].iloc[-1]),
                loss_identity_last=float(log["loss_identity"].iloc[-1]),
                loss_min=float(log["loss"].min()),
                alpha_min=float(log["alpha"].min()),
                alpha_last=float(log["alpha"].iloc[-1]),
            )
        )
        print({k: v for k, v in rows[-1].items()}, flush=True)
    summary = pd.DataFrame(rows)
    write_parquet(args.out / "failure_summary.parquet", summary)
    figures(results, args, data)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.drop(columns=["stopped"]).to_string(index=False))
    print(
        f"failure study: wall {time.perf_counter() - tic:.0f} s, "
        f"CPU time of this process {time.process_time():.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
