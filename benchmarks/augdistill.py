"""Augmentation by distillation (issue #7): learn phi on a subset, train on phi(subset).

Reduced CPU scale (2 shared cores, no GPU): MNIST, the width-32 ConvNet of the MNIST
experts, phi = ``residual`` learned by trajectory matching on fixed, seeded, nested,
class-stratified subsets of p = 1 %, 10 %, 50 % of the training set
(``configs/augdistill/mnist-residual.yaml``), then fresh ConvNets trained for a fixed number
of SGD steps (the same compute for every p; see ``--steps``) on

(a) subset p plain; (b) subset p + DSA (the experts' strategy); (c) subset p + kornia's
TrivialAugment; (d) phi_p(subset p) + DSA, phi learned on subset p, frozen, fresh noise for
every batch; (e) phi_10%(subset) + DSA on 50 % and 100 %; reference lines: 100 % plain and
100 % + DSA. Every condition uses the same ``--runs`` seeds (paired: run r has the same
initialisation in every condition).

``--configs`` takes one phi config per family (the first is the main phi: transfer and
phi without DSA); the other families get (d) on each subset. ``--steps`` is the protocol:
its results go to ``results-{steps}steps{tag}.parquet``, so protocols never mix, and two
processes with distinct ``--tag`` values can evaluate side by side (e.g. one per
fraction, ``--no-references`` in one of them). The long protocol on CPU:

    python benchmarks/augdistill.py --part all --steps 2000 --runs 3 --fractions 0.01,0.1 \
        --transfer-from none --configs configs/augdistill/mnist-{residual,transform,hallucinator}.yaml

Parts (each resumable: finished phi runs and finished (condition, run) pairs are kept):

    python benchmarks/augdistill.py --part phi      # learn phi_p for p in --fractions
    python benchmarks/augdistill.py --part eval     # train/test the conditions
    python benchmarks/augdistill.py --part report   # table + plot + phi training figures
    python benchmarks/augdistill.py --part all

``--preset cifar10-gpu`` is the same experiment for CIFAR-10 on one GPU (experts from
``benchmarks/mtt_cifar10_gpu.py --part experts``; ``configs/augdistill/cifar10-residual-gpu.yaml``);
it is not run here (no GPU on the development machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

PRESETS = {
    "mnist-cpu": dict(
        experts=ROOT / "runs" / "augdistill" / "experts",
        out=ROOT / "runs" / "augdistill",
        configs=[ROOT / "configs" / "augdistill" / "mnist-residual.yaml"],
        steps=200,
        batch=64,
        lr=0.03,
        runs=3,
        device="cpu",
    ),
    "cifar10-gpu": dict(
        experts=ROOT / "runs" / "cifar10-experts-w128",
        out=ROOT / "runs" / "augdistill-cifar10",
        configs=[ROOT / "configs" / "augdistill" / "cifar10-residual-gpu.yaml"],
        steps=20000,
        batch=256,
        lr=0.01,
        runs=5,
        device="cuda",
    ),
}


@dataclass(frozen=True)
class Condition:
    method: str  # plain | dsa | trivialaugment | phi | phi+dsa
    train_fraction: float
    phi_fraction: float | None = None
    family: str | None = None  # the phi family (phi conditions only)

    @property
    def name(self) -> str:
        tag = f"{self.method}@{self.train_fraction:g}"
        return tag if self.phi_fraction is None else f"{tag}[{self.family} {self.phi_fraction:g}]"


def conditions(
    fractions: list[float],
    transfer_from: float | None,
    families: list[str],
    references: bool = True,
) -> list[Condition]:
    """The experiment's conditions; ``families[0]`` is the main phi (transfer and the
    phi-without-DSA diagnostic), the others get phi + DSA on each subset."""
    main = families[0]
    out = []
    for p in fractions:
        out += [
            Condition("plain", p),
            Condition("dsa", p),
            Condition("trivialaugment", p),
            Condition("phi+dsa", p, p, main),
        ]
    if references:
        out += [Condition("plain", 1.0), Condition("dsa", 1.0)]
    if transfer_from is not None:
        out += [
            Condition("phi+dsa", q, transfer_from, main) for q in (0.5, 1.0) if q != transfer_from
        ]
    # other families, then phi without DSA (a diagnostic): run last, so that a cut-short
    # run has the main table
    out += [Condition("phi+dsa", p, p, f) for f in families[1:] for p in fractions]
    out += [Condition("phi", p, p, main) for p in fractions if p <= 0.1]
    seen, unique = set(), []
    for c in out:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def phi_dir(out: Path, family: str, fraction: float) -> Path:
    return out / f"phi-{family}-p{fraction:g}"


def load_phi_config(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    opts = cfg.get("phi_options")
    if isinstance(opts, str):
        cfg["phi_options"] = yaml.safe_load(opts) or {}
    return cfg


def families_of(args) -> list[str]:
    return [load_phi_config(path)["phi"] for path in args.configs]


def results_paths(args) -> list[Path]:
    """Every results file of this ``--steps`` protocol (one per ``--tag``, so that parallel
    processes never write the same file)."""
    return sorted(args.out.glob(f"results-{args.steps}steps*.parquet"))


# --------------------------------------------------------------------------- parts
def part_phi(args) -> None:
    for path in args.configs:
        cfg = {**load_phi_config(path), "device": args.device}
        for p in args.fractions:
            _learn_phi(args, cfg, path, p)


def _learn_phi(args, cfg: dict, path: Path, p: float) -> None:
    from leanaug.distill.augment_training import PHI_NAME, AugmentDistillation

    family = cfg["phi"]
    folder = phi_dir(args.out, family, p)
    if (folder / PHI_NAME).is_file():
        print(f"phi {family} p={p:g}: done already ({folder})", flush=True)
        return
    tic = time.perf_counter()
    est = AugmentDistillation.from_config({**cfg, "subset": p}, source=str(path))
    est.fit(args.experts, folder, progress=False)
    log = est.log_
    tail = log.tail(max(1, len(log) // 4))
    wall = time.perf_counter() - tic
    (folder / "wall_seconds.txt").write_text(f"{wall:.1f}\n")
    print(
        f"phi {family} p={p:g}: {len(log)} iterations, {wall:.0f} s; last quarter: loss "
        f"{tail['loss'].mean():.4f} vs identity {tail['loss_identity'].mean():.4f}; alpha {est.alpha_:.4g}",
        flush=True,
    )


def _scan_setup(args):
    """What the loss scans share: data, the expert, the student, DSA, the 10 % subset."""
    from leanaug.distill.augment_training import subset_indices
    from leanaug.distill.dsa import DSA
    from leanaug.distill.experts import build_network, load_experts
    from leanaug.distill.networks import FlatModel

    cfg, pre, ds = _data(args)
    model = FlatModel(build_network(cfg["network"]))
    idx = subset_indices(ds.train_labels, 0.1, 0)
    x, y = pre.transform(ds.train_images[idx]), torch.as_tensor(ds.train_labels[idx])
    return load_experts(args.experts), model, DSA(**cfg["training"]["dsa"]), x, y


def _scan_loss(model, dsa, phi_cfg, segment, x, y, alpha: float, inputs=None) -> float:
    """Mean matching loss over 3 fixed plans of the config's N steps x batch (no learning);
    ``inputs(xs, ys, rep)`` maps each plan's images (default: the images themselves)."""
    from leanaug.distill.augment_training import plan_slots
    from leanaug.distill.matching import matching_loss, unroll_student

    start, target = segment
    losses = []
    for rep in range(3):
        slots = plan_slots(
            len(x), phi_cfg["syn_steps"], phi_cfg["batch"], torch.Generator().manual_seed(rep)
        )
        xs, ys = x[slots.images], y[slots.images]
        if inputs is not None:
            xs = inputs(xs, ys, rep)
        theta = unroll_student(model, start, xs, ys, torch.tensor(alpha), slots.plan, dsa)
        losses.append(float(matching_loss(theta, start, target)))
    return float(np.mean(losses))


def part_scan(args) -> None:
    """Matching loss of the *identity* phi (real subset images) against a fixed alpha: where
    alpha_0 should start for the config's N and batch (no learning, forward unrolls only)."""
    from leanaug.distill.matching import expert_segment

    experts, model, dsa, x, y = _scan_setup(args)
    phi_cfg = load_phi_config(args.configs[0])
    rows = []
    for t in range(phi_cfg["max_start_epoch"]):
        segment = expert_segment(experts[0].trajectory, t, phi_cfg["expert_epochs"])
        for alpha in (0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3):
            loss = _scan_loss(model, dsa, phi_cfg, segment, x, y, alpha)
            rows.append(dict(start_epoch=t, alpha=alpha, loss=loss))
            print(f"start epoch {t} alpha {alpha:g}: identity matching loss {loss:.4f}", flush=True)
    pd.DataFrame(rows).to_csv(args.out / "alpha_scan.csv", index=False)


def part_noisescan(args) -> None:
    """Does the matching objective reward *random* augmentation? The matching loss (no
    learning) of a student trained on phi(x) for a random ``transform`` phi: the identity
    start with its noise scale gamma set to g for every parameter, so that each draw is
    range * tanh(g * noise) (rotation +-30 deg, translation +-10 %, scale exp(+-0.3),
    brightness and contrast), then DSA; the same plans and noise for every g, at the best
    of a few fixed alphas."""
    from leanaug.distill.augnet import build_phi
    from leanaug.distill.matching import expert_segment

    experts, model, dsa, x, y = _scan_setup(args)
    phi_cfg = load_phi_config(args.configs[0])
    phi = build_phi("transform", x.shape[1], tuple(x.shape[-2:]), 10)

    def inputs(xs, ys, rep):
        with torch.no_grad():
            return phi.augment(xs, ys, generator=torch.Generator().manual_seed(100 + rep))

    rows = []
    # the last setting: no phi noise and no DSA either (the experts were trained with DSA)
    for g, with_dsa in [
        (0.0, True),
        (0.25, True),
        (0.5, True),
        (1.0, True),
        (2.0, True),
        (0.0, False),
    ]:
        with torch.no_grad():
            phi.gamma.fill_(g)
        for t in range(phi_cfg["max_start_epoch"]):
            segment = expert_segment(experts[0].trajectory, t, phi_cfg["expert_epochs"])
            for alpha in (0.03, 0.05, 0.08, 0.12):
                aug = dsa if with_dsa else None
                loss = _scan_loss(model, aug, phi_cfg, segment, x, y, alpha, inputs)
                rows.append(dict(gamma=g, dsa=with_dsa, start_epoch=t, alpha=alpha, loss=loss))
                print(
                    f"gamma {g:g} dsa {with_dsa} start epoch {t} alpha {alpha:g}: loss {loss:.4f}",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "noise_scan.csv", index=False)
    best = frame.loc[frame.groupby(["gamma", "dsa", "start_epoch"])["loss"].idxmin()]
    print(best.to_string(index=False))


def part_diagnose(args) -> None:
    """What each learned phi does: stroke / background intensity, how much the noise
    matters, and how phi changes the student's gradient at the expert's epochs 0 and 1
    (norm ratio and cosine with the gradient on the real images, same DSA draw)."""
    import torch.nn.functional as F

    from leanaug.distill.augment_training import subset_indices
    from leanaug.distill.augnet import TRANSFORM_PARAMETERS, load_phi
    from leanaug.distill.dsa import DSA
    from leanaug.distill.experts import build_network, load_experts
    from leanaug.distill.networks import FlatModel

    cfg, pre, ds = _data(args)
    experts = load_experts(args.experts)
    model = FlatModel(build_network(cfg["network"]))
    dsa = DSA(**cfg["training"]["dsa"])
    rows = []
    for family, p in [(f, p) for f in families_of(args) for p in args.fractions]:
        path = phi_dir(args.out, family, p) / "phi.safetensors"
        if not path.is_file():
            continue
        phi, meta = load_phi(path)
        idx = subset_indices(ds.train_labels, p, 0)[:512]
        x, y = pre.transform(ds.train_images[idx]), torch.as_tensor(ds.train_labels[idx])
        pos = torch.arange(len(idx))
        with torch.no_grad():
            z1 = phi.augment(x, y, pos, generator=torch.Generator().manual_seed(1))
            z2 = phi.augment(x, y, pos, generator=torch.Generator().manual_seed(2))
        raw, img = pre.inverse_transform(x), pre.inverse_transform(z1)
        stroke, background = raw > 0.5, raw < 0.1
        row = dict(
            family=family,
            phi_fraction=p,
            alpha=meta.get("alpha"),
            stroke_in=float(raw[stroke].mean()),
            stroke_out=float(img[stroke].mean()),
            background_in=float(raw[background].mean()),
            background_out=float(img[background].mean()),
            rms_change=float((z1 - x).pow(2).mean().sqrt()),
            rms_noise=float((z1 - z2).pow(2).mean().sqrt()),
        )
        if family == "transform":  # the learned parameters: mean draw and spread from noise
            with torch.no_grad():
                noise = torch.randn(
                    len(x), len(TRANSFORM_PARAMETERS), generator=torch.Generator().manual_seed(3)
                )
                draws = phi.parameters_of(x, noise)
                spread = (phi.parameters_of(x, -noise) - draws).abs() / 2
            for k, (name, _) in enumerate(TRANSFORM_PARAMETERS):
                row[f"{name}_mean"] = float(draws[:, k].mean())
                row[f"{name}_noise"] = float(spread[:, k].mean())
        for t in (0, 1):
            theta = experts[0].trajectory[t].clone().requires_grad_(True)
            aug_x, params = dsa(x, generator=torch.Generator().manual_seed(t))
            aug_z, _ = dsa(z1, params=params)
            (g_x,) = torch.autograd.grad(F.cross_entropy(model(theta, aug_x), y), theta)
            (g_z,) = torch.autograd.grad(F.cross_entropy(model(theta, aug_z), y), theta)
            row[f"grad_ratio_t{t}"] = float(g_z.norm() / g_x.norm())
            row[f"grad_cos_t{t}"] = float(F.cosine_similarity(g_z, g_x, dim=0))
        rows.append(row)
        print(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )
    pd.DataFrame(rows).to_csv(args.out / "phi_diagnosis.csv", index=False)


def _data(args):
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor

    cfg = load_config(args.experts)
    pre = load_preprocessor(args.experts)
    ds = load_dataset_for(cfg)
    return cfg, pre, ds


#: each condition's method as (phi applied?, the library's train-time augmentation name)
METHODS = {
    "plain": (False, "none"),
    "dsa": (False, "dsa"),
    "trivialaugment": (False, "trivialaugment"),
    "phi": (True, "none"),
    "phi+dsa": (True, "dsa"),
}


def _transform(cond: Condition, cfg, pre, args):
    """The condition's per-batch transform, built by the library
    (:func:`leanaug.distill.transforms.train_transform`, as ``leanaug evaluate PHI_DIR``)."""
    from leanaug.distill.augnet import load_phi
    from leanaug.distill.transforms import train_transform

    if cond.method not in METHODS:
        raise ValueError(f"unknown method {cond.method!r}; valid: {', '.join(METHODS)}")
    with_phi, augment = METHODS[cond.method]
    phi = None
    if with_phi:
        phi, _ = load_phi(phi_dir(args.out, cond.family, cond.phi_fraction) / "phi.safetensors")
    return train_transform(augment, phi=phi, dsa_config=cfg["training"]["dsa"], preprocessor=pre)


def part_eval(args) -> None:
    from leanaug.distill.augment_training import subset_indices, train_on_augmented
    from leanaug.results import write_parquet

    cfg, pre, ds = _data(args)
    test_x = pre.transform(ds.test_images)
    test_y = torch.as_tensor(ds.test_labels)
    results_path = args.out / f"results-{args.steps}steps{args.tag}.parquet"
    rows = pd.read_parquet(results_path).to_dict("records") if results_path.exists() else []
    # runs finished by any process of this protocol (other --tag files included)
    done = {
        (r["condition"], int(r["run"]))
        for path in results_paths(args)
        for r in pd.read_parquet(path).to_dict("records")
    }
    todo = conditions(args.fractions, args.transfer_from, families_of(args), args.references)
    ready = []
    for cond in todo:
        if (
            cond.phi_fraction is not None
            and not (
                phi_dir(args.out, cond.family, cond.phi_fraction) / "phi.safetensors"
            ).is_file()
        ):
            print(f"{cond.name}: phi not trained yet, skipped", flush=True)
            continue
        ready.append(cond)
    inputs: dict[Condition, tuple] = {}  # training set and transform, built on first use
    # run-major: a cut-short evaluation still has complete paired runs of every condition
    for r in range(args.runs):
        for cond in ready:
            if (cond.name, r) in done:
                continue
            if cond not in inputs:
                idx = subset_indices(ds.train_labels, cond.train_fraction, 0)
                x = pre.transform(ds.train_images[idx])
                y = torch.as_tensor(ds.train_labels[idx])
                inputs[cond] = (x, y, _transform(cond, cfg, pre, args))
            x, y, transform = inputs[cond]
            res = train_on_augmented(
                x,
                y,
                test_x,
                test_y,
                cfg["network"],
                transform=transform,
                steps=args.steps,
                batch_size=args.batch,
                lr=args.lr,
                runs=1,
                seed=derive_run_seed(r),
                device=args.device,
            )
            rows.append(
                dict(
                    condition=cond.name,
                    method=cond.method,
                    train_fraction=cond.train_fraction,
                    phi_fraction=np.nan if cond.phi_fraction is None else cond.phi_fraction,
                    family=cond.family or "",
                    n_train=len(x),
                    run=r,
                    accuracy=res.final_accuracy[0],
                    seconds=res.seconds,
                    steps=args.steps,
                    batch=args.batch,
                    lr=args.lr,
                )
            )
            write_parquet(results_path, pd.DataFrame(rows))
            print(
                f"{cond.name} run {r}: test accuracy {100 * res.final_accuracy[0]:.2f} % "
                f"({res.seconds:.0f} s)",
                flush=True,
            )


def derive_run_seed(run: int) -> int:
    # run r of every condition shares its initialisation and batch seeds (paired design)
    return 1000 + run


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["condition", "method", "train_fraction", "phi_fraction", "family"]
    g = frame.groupby(keys, dropna=False)
    out = g["accuracy"].agg(["mean", "std", "count"]).reset_index()
    out["std"] = g["accuracy"].agg(lambda a: float(np.std(a))).values  # ddof 0, as MTT
    out["seconds"] = g["seconds"].mean().values
    if "n_train" in frame.columns:  # the training set's real size, as recorded per run
        out["n_train"] = g["n_train"].max().values
    return out.sort_values(["train_fraction", "method", "family"]).reset_index(drop=True)


def part_report(args) -> None:
    from leanaug.distill.experts import load_config

    paths = results_paths(args)
    if paths:
        data = load_config(args.experts)  # the experts' data set: name, size, network
        frame = pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)
        table = summary(frame)
        lines = [
            "| condition | n train | test accuracy (%) | runs | s/run |",
            "|---|---|---|---|---|",
        ]
        for _, r in table.iterrows():
            n = r.get("n_train", np.nan)  # the real size; older results files lack it
            n = int(n) if pd.notna(n) else _subset_size(args, r["train_fraction"])
            lines.append(
                f"| {r['condition']} | {n} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | "
                f"{int(r['count'])} | {r['seconds']:.0f} |"
            )
        text = "\n".join(lines)
        print(text)
        (args.out / f"table-{args.steps}steps.md").write_text(text + "\n")
        plot_accuracy_vs_p(table, args, args.out / f"accuracy_vs_p-{args.steps}steps.png", data)
    for family in families_of(args):
        for p in args.fractions:
            report_phi_training(phi_dir(args.out, family, p), family, p)


def _subset_size(args, fraction: float) -> int:
    """Size of the training subset of ``fraction`` (as part_eval draws it)."""
    from leanaug.distill.augment_training import subset_indices

    return len(subset_indices(_data(args)[2].train_labels, fraction, 0))


def plot_accuracy_vs_p(table: pd.DataFrame, args, path: Path, data: dict) -> None:
    """``data``: the experts' config.json (data set name and size, network width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    own = table[table["phi_fraction"].isna() | (table["phi_fraction"] == table["train_fraction"])]
    main = families_of(args)[0]
    series = [("plain", "", "o-"), ("dsa", "", "s-"), ("trivialaugment", "", "^-")]
    series += [("phi", main, "v-"), ("phi+dsa", main, "D-")]
    series += [("phi+dsa", f, "P--") for f in families_of(args)[1:]]
    for method, family, style in series:
        part = own[
            (own["method"] == method)
            & (own["family"].fillna("") == family)
            & (own["train_fraction"] < 1.0)
        ]
        if len(part):
            ax.errorbar(
                100 * part["train_fraction"],
                100 * part["mean"],
                yerr=100 * part["std"],
                fmt=style,
                capsize=3,
                label=f"{method} ({family} phi learned on the same subset)" if family else method,
            )
    transfer = table[
        table["phi_fraction"].notna() & (table["phi_fraction"] != table["train_fraction"])
    ]
    if len(transfer):
        ax.errorbar(
            100 * transfer["train_fraction"],
            100 * transfer["mean"],
            yerr=100 * transfer["std"],
            fmt="*",
            markersize=11,
            capsize=3,
            label=f"phi learned on {100 * args.transfer_from:g} %, applied (+DSA)",
        )
    for method, color in (("plain", "grey"), ("dsa", "black")):
        ref = table[(table["method"] == method) & (table["train_fraction"] == 1.0)]
        if len(ref):
            ax.axhline(
                100 * ref["mean"].iloc[0], ls="--", color=color, lw=1, label=f"100 % {method}"
            )
    ax.set_xscale("log")
    name, n_all = data["dataset"]["name"], int(data["dataset"]["n_train_images"])
    ax.set_xlabel(f"training subset p (% of the {n_all:,} {name} training images)")
    ax.set_ylabel("test accuracy (%)")
    title = f"{name}, ConvNet w{data['network']['width']}, fixed {args.steps} steps"
    ax.set_title(f"{title} x batch {args.batch}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: no overlap
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def report_phi_training(folder: Path, family: str, p: float) -> None:
    if not (folder / "log.parquet").exists():
        return
    log = pd.read_parquet(folder / "log.parquet")
    first, last = log.head(max(1, len(log) // 4)), log.tail(max(1, len(log) // 4))
    wall = (
        (folder / "wall_seconds.txt").read_text().strip()
        if (folder / "wall_seconds.txt").exists()
        else "?"
    )
    print(
        f"phi {family} p={p:g}: {len(log)} it, wall {wall} s, s/it {log['seconds'].mean():.1f}; "
        f"loss first quarter {first['loss'].mean():.4f} (identity {first['loss_identity'].mean():.4f}), "
        f"last quarter {last['loss'].mean():.4f} (identity {last['loss_identity'].mean():.4f}); "
        f"phi wins {(last['loss'] < last['loss_identity']).mean():.0%} of last-quarter iterations; "
        f"alpha {log['alpha'].iloc[-1]:.4g}; |phi(x)-x| rms {last['phi_change'].mean():.3f}, "
        f"noise effect {last['noise_effect'].mean():.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--part",
        choices=["scan", "noisescan", "diagnose", "phi", "eval", "report", "all"],
        default="all",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="mnist-cpu")
    ap.add_argument("--experts", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--configs",
        type=Path,
        nargs="+",
        help="phi configs, one per family; the first is the main phi (transfer, phi alone)",
    )
    ap.add_argument(
        "--fractions", type=lambda s: [float(v) for v in s.split(",")], default=[0.01, 0.1, 0.5]
    )
    ap.add_argument(
        "--transfer-from",
        type=lambda s: None if s == "none" else float(s),
        default=0.1,
        help="apply the phi learned on this fraction to 50 %% and 100 %% ('none': skip)",
    )
    ap.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the 100 %% plain and 100 %% + DSA reference lines",
    )
    ap.add_argument("--steps", type=int, help="SGD steps per evaluation run (the protocol)")
    ap.add_argument(
        "--tag",
        default="",
        help="suffix of this process's results file (parallel eval processes need distinct tags)",
    )
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cuda={torch.cuda.is_available()}; preset {args.preset}; "
        f"settings {json.dumps({k: str(v) for k, v in vars(args).items()})}",
        flush=True,
    )
    tic = time.perf_counter()
    if args.part == "scan":
        part_scan(args)
    if args.part == "noisescan":
        part_noisescan(args)
    if args.part == "diagnose":
        part_diagnose(args)
    if args.part in ("phi", "all"):
        part_phi(args)
    if args.part in ("eval", "all"):
        part_eval(args)
    if args.part in ("report", "all"):
        part_report(args)
    print(
        f"part {args.part}: wall {time.perf_counter() - tic:.0f} s, "
        f"CPU time of this process {time.process_time():.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
