"""Tables of a results page from augmentation-subsampling output folders.

    python benchmarks/subsampling_report.py runs/paper/mnist_3v8_translate ... \
        [--page docs/results-subsampling.md] [--figures docs/figures/subsampling]

For every run folder (from ``leanaug subsample run``, or from
``benchmarks/subsampling_end_to_end.py``, which writes the same files) it computes:

* the two baselines on both test sets (clean; augmented = test images plus all their
  copies), and the featurizer's own test accuracy when ``featurizer.json`` is there;
* per (score, policy): the AUC (``leanaug.experiments.auc_table``), the **fraction of the
  augmentation gain recovered** at budgets of 5%, 10% and 25% of n_train,
  ``(acc(b) - acc_no_aug) / (acc_full_aug - acc_no_aug)`` per trial, mean ± std over
  trials (accuracy on the augmented test set, the paper's metric), and the smallest
  budget whose mean accuracy reaches the full-augmentation accuracy;
* the command and wall time from ``run_info.json`` (``benchmarks/subsampling_run.py``).

Output: markdown on stdout, one block per folder plus an overview. With ``--page`` the
blocks replace the text between ``<!-- BEGIN generated:NAME -->`` and
``<!-- END generated:NAME -->`` in that page (NAME = the folder's name, ``overview`` for
the overview, or ``--overview NAME``), so the page's numbers are regenerated, never typed; the prose around them
is left alone. With ``--figures`` the accuracy plot and the influence top/bottom grid of
each folder are copied there as small palette PNGs (``NAME.png``,
``NAME_top_bottom.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from leanaug.experiments import auc_table
from leanaug.results import read_json, read_parquet

METRIC = "accuracy_augmented_test"
FRACTIONS = (0.05, 0.10, 0.25)
DATASET_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10 (JPEG export)", "digits": "digits"}
CLASS_NAMES = {
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
}


# -- loading ---------------------------------------------------------------------------
class Run:
    """One output folder: config, results, baselines and the optional run metadata."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.config = yaml.safe_load((self.path / "config.yaml").read_text())
        self.results = read_parquet(self.path / "results.parquet")
        self.baselines = read_json(self.path / "baselines.json")
        self.info = _maybe_json(self.path / "run_info.json")
        self.featurizer = _maybe_json(self.path / "featurizer.json")
        n = self.config.get("n_train")
        if n is None:
            n = len(read_parquet(self.path / "scores.parquet"))
        self.n_train = int(n)
        self.kind = self.config.get("kind", "subsample")

    @property
    def title(self) -> str:
        c = self.config
        ds = DATASET_TITLES.get(c["dataset"], c["dataset"])
        classes = c.get("classes")
        if classes is None or len(classes) > 2:
            what = "all 10 classes" if classes is None else f"{len(classes)} classes"
        else:
            names = CLASS_NAMES.get(c["dataset"])
            shown = [names[int(k)] if names and str(k).isdigit() else str(k) for k in classes]
            what = " vs ".join(shown)
        extra = ", end-to-end CNN retraining" if self.kind == "end_to_end" else ""
        if c.get("featurizer_refit"):
            extra += ", featurizer retrained for every fit"
        weights = (c.get("featurizer_params") or {}).get("weights")
        if weights:  # a featurizer loaded from a file: name it, it is what differs
            extra += f", featurizer {Path(weights).stem}"
        if any(str(p).startswith("coreset") for p in c.get("policies", [])):
            extra += ", with the coreset policy"
        return f"{ds}, {what}, {c['augment']}, n_train = {self.n_train}{extra}"

    def budgets_at_fractions(self) -> list[tuple[float, int]]:
        return [(f, int(round(f * self.n_train))) for f in FRACTIONS]


def _maybe_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# -- figures ---------------------------------------------------------------------------
def gain_table(run: Run, metric: str = METRIC) -> pd.DataFrame:
    """Per (score, policy): AUC, gain recovered at 5/10/25% of n, smallest budget at full."""
    res = run.results
    key = metric
    no = float(run.baselines["no_augmentation"][key])
    full = float(run.baselines["full_augmentation"][key])
    gap = full - no
    auc = auc_table(res, metric).set_index(["score", "policy"])
    scores = list(dict.fromkeys(res["score"]))
    policies = list(dict.fromkeys(res["policy"]))
    order = {s: i for i, s in enumerate(run.config.get("scores") or scores)}
    p_order = {p: i for i, p in enumerate(run.config.get("policies") or policies)}
    rows = []
    for (score, policy), grp in res.groupby(["score", "policy"], sort=False):
        row = {
            "score": score,
            "policy": policy,
            "trials": int(grp["trial"].nunique()),
            "auc_mean": float(auc.loc[(score, policy), "auc_mean"]),
            "auc_std": float(auc.loc[(score, policy), "auc_std"]),
        }
        for frac, b in run.budgets_at_fractions():
            at = grp[grp["budget"] == b][key].to_numpy(dtype=float)
            if at.size == 0 or gap <= 0:
                row[f"gain_{frac}"] = (math.nan, math.nan, b)
                continue
            g = (at - no) / gap
            row[f"gain_{frac}"] = (
                float(g.mean()),
                float(g.std(ddof=1)) if g.size > 1 else 0.0,
                b,
            )
            row[f"acc_{frac}"] = float(at.mean())
        means = grp.groupby("budget")[key].mean().sort_index()
        reached = means[means >= full - 1e-9]
        row["reach_full"] = int(reached.index[0]) if len(reached) else None
        row["_o"] = (order.get(score, 99), p_order.get(policy, 99))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _budget_text(b: float | None, n: int) -> str:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return "not within the budgets run"
    return f"{int(b)} ({100 * b / n:.0f}%)"


def run_block(run: Run, figures_rel: str | None) -> str:
    b = run.baselines
    lines = [f"### {run.title}", ""]
    if run.info:
        inv = run.info["invocations"]
        wall = sum(i["wall_seconds"] for i in inv)
        loads = [i["loadavg_1min_before"] for i in inv] + [i["loadavg_1min_after"] for i in inv]
        lines.append(f"Command: `{inv[-1]['command']}`  ")
        lines.append(
            f"Wall time: **{_minutes(wall)}**"
            + (f" over {len(inv)} invocations (resumed)" if len(inv) > 1 else "")
            + f" on a {inv[-1]['cpus']}-core CPU "
            f"(1-minute load average {min(loads):.1f} to {max(loads):.1f} at start/end; "
            "above about 2, other jobs shared the cores)."
        )
        lines.append("")
    f = run.featurizer
    if f and f.get("trained"):
        lines.append(
            f"Featurizer `{f['featurizer']}`: test accuracy of its own softmax head "
            f"**{_pct(f['test_accuracy'])}%** on the {f['test_set']} ({f['test_n']} images, "
            f"{f['test_source']})."
        )
        lines.append("")
    elif run.kind == "end_to_end":
        c = run.config
        lines.append(
            f"Network: `{c.get('network', 'smallcnn')}` retrained from scratch for every "
            f"(policy, budget, trial) on the originals plus the copies of the selected points "
            f"({c.get('steps')} Adam steps whatever the set's size, lr {c.get('lr')}, batch "
            f"{c.get('batch_size')}; same initialisation and batch-order seed within a trial); "
            f"scores from a logistic regression on the features of a network trained on the "
            f"clean points (`{c.get('score_featurizer')}`). Baselines: mean over "
            f"{len(b.get('trials', {}).get('no_augmentation', [0]))} trials."
        )
        lines.append("")
    lines += [
        "| test set | no augmentation | full augmentation | gain (points) |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("accuracy", "clean test set"),
        ("accuracy_augmented_test", "augmented test set (test + all copies)"),
    ):
        no, full = b["no_augmentation"][key], b["full_augmentation"][key]
        lines.append(f"| {label} | {_pct(no)}% | {_pct(full)}% | {100 * (full - no):+.2f} |")
    lines.append("")
    if figures_rel:
        lines.append(f"![accuracy against budget: {run.title}]({figures_rel}/{run.name}.png)")
        lines.append("")
    table = gain_table(run)
    fr = run.budgets_at_fractions()
    head = (
        "| score | policy | trials | AUC (%) | "
        + " | ".join(f"gain recovered at {b} ({int(100 * f)}%)" for f, b in fr)
        + " | smallest budget reaching full aug |"
    )
    lines += [
        "Fraction of the augmentation gain recovered, "
        "(acc(b) − acc_no_aug) / (acc_full_aug − acc_no_aug) on the augmented test set, "
        "mean ± std over trials (1.00 = the full-augmentation accuracy; deterministic pairs run "
        "once); AUC: mean accuracy under the curve over all budgets, ± std over trials.",
        "",
        head,
        "|" + "---|" * (5 + len(fr)),
    ]
    for _, r in table.iterrows():
        cells = [
            r["score"],
            r["policy"],
            str(r["trials"]),
            f"{100 * r['auc_mean']:.2f} ± {100 * r['auc_std']:.2f}",
        ]
        cells += [_pm(*r[f"gain_{f}"][:2]) for f, _ in fr]
        cells.append(_budget_text(r["reach_full"], run.n_train))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if run.kind == "end_to_end":
        lines.append(end_to_end_comparison(run))
        lines.append("")
    if figures_rel and (run.path / "top_bottom_influence.png").is_file():
        lines.append(
            f"![highest- and lowest-influence training images: {run.title}]"
            f"({figures_rel}/{run.name}_top_bottom.png)"
        )
        lines.append("")
    return "\n".join(lines)


def end_to_end_comparison(run: Run) -> str:
    """Same selections, two judges: the retrained network and the frozen-feature LR."""
    res = run.results
    base = run.baselines
    frozen = base.get("frozen") or {}
    judges = [("retrained network", METRIC, base)]
    if frozen:
        judges.append(("frozen features + LR", "frozen_accuracy_augmented_test", frozen))
    lines = [
        "Same selections, two judges (augmented test set): accuracy (%) and gain recovered, "
        "mean ± std over trials, and each judge's ranking of the pairs at every budget "
        "(1 = best).",
        "",
        "| score / policy | budget | "
        + " | ".join(f"{j} accuracy | {j} gain recovered | rank" for j, _, _ in judges)
        + " |",
        "|---|---|" + "---|---|---|" * len(judges),
    ]
    stats = {}
    for name, col, b in judges:
        no = float(b["no_augmentation"]["accuracy_augmented_test"])
        full = float(b["full_augmentation"]["accuracy_augmented_test"])
        if full <= no:
            full = math.nan  # no gain to recover: gains print as n/a
        g = res.assign(
            _acc=res[col].astype(float), _gain=(res[col].astype(float) - no) / (full - no)
        )
        agg = g.groupby(["score", "policy", "budget"])[["_acc", "_gain"]].agg(["mean", "std"])
        agg[("rank", "")] = (
            agg[("_acc", "mean")].groupby(level="budget").rank(ascending=False, method="min")
        )
        stats[name] = agg
    first = stats[judges[0][0]]
    for score, policy, budget in first.index:
        cells = [f"{score} / {policy}", str(budget)]
        for name, _, _ in judges:
            r = stats[name].loc[(score, policy, budget)]
            cells += [
                f"{100 * r[('_acc', 'mean')]:.2f} ± {100 * np.nan_to_num(r[('_acc', 'std')]):.2f}",
                _pm(r[("_gain", "mean")], float(np.nan_to_num(r[("_gain", "std")]))),
                str(int(r[("rank", "")])),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if frozen:
        lines.append("")
        lines.append(
            "Frozen-feature baselines for these gains: no augmentation "
            f"{_pct(frozen['no_augmentation'][METRIC])}%, full augmentation "
            f"{_pct(frozen['full_augmentation'][METRIC])}% (augmented test set). Retrained "
            f"network baselines: no augmentation {_pct(base['no_augmentation'][METRIC])}% "
            f"± {100 * base['no_augmentation'].get('std_accuracy_augmented_test', 0):.2f}, full "
            f"augmentation {_pct(base['full_augmentation'][METRIC])}% ± "
            f"{100 * base['full_augmentation'].get('std_accuracy_augmented_test', 0):.2f} "
            "(mean ± std over trials)."
        )
    return "\n".join(lines)


def overview_block(runs: list[Run]) -> str:
    lines = [
        "| setting | no aug (augmented / clean test) | full aug (augmented / clean test) | "
        "random policy @10% | influence proportional @10% | influence top-k @10% | "
        "best @10% | smallest budget at full aug (first policy to get there) | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    b10 = f"gain_{0.10}"
    for run in runs:
        t = gain_table(run)
        base = run.baselines
        no = base["no_augmentation"]
        full = base["full_augmentation"]
        # The random policy ignores the score: pool its trials over the scores.
        rand = pooled_random_gain(run, 0.10)
        rand_txt = _pm(*rand) if rand else "—"

        def pick(score: str, policy: str, t: pd.DataFrame = t) -> str:
            row = t[(t["score"] == score) & (t["policy"] == policy)]
            return _pm(*row.iloc[0][b10][:2]) if len(row) else "—"

        gains = t[b10].map(lambda g: g[0])
        if gains.notna().any():
            best = t.loc[gains.idxmax()]
            best_txt = f"{_pm(*best[b10][:2])} ({best['score']} {best['policy']})"
        else:
            best_txt = "n/a"
        reach = t.dropna(subset=["reach_full"])
        if len(reach):
            r = reach.loc[reach["reach_full"].astype(int).idxmin()]
            reach_txt = (
                f"{_budget_text(int(r['reach_full']), run.n_train)} ({r['score']} {r['policy']})"
            )
        else:
            reach_txt = "not within the budgets run"
        wall = (
            _minutes(sum(i["wall_seconds"] for i in run.info["invocations"])) if run.info else "—"
        )
        lines.append(
            f"| [{run.title}](#{_anchor(run.title)}) | "
            f"{_pct(no[METRIC])} / {_pct(no['accuracy'])} | "
            f"{_pct(full[METRIC])} / {_pct(full['accuracy'])} | {rand_txt} | "
            f"{pick('influence', 'proportional')} | {pick('influence', 'topk')} | {best_txt} | "
            f"{reach_txt} | {wall} |"
        )
    lines.append("")
    lines.append(
        "Accuracies in %. '@10%': fraction of the augmentation gain (augmented test set) "
        "recovered when 10% of n_train are augmented, mean ± std over trials; the random "
        "policy's trials are pooled over the scores (it ignores them)."
    )
    return "\n".join(lines) + "\n"


def pooled_random_gain(run: Run, frac: float) -> tuple[float, float] | None:
    """Gain recovered by the ``random`` policy at ``frac`` * n, all its trials pooled."""
    b = int(round(frac * run.n_train))
    no = float(run.baselines["no_augmentation"][METRIC])
    full = float(run.baselines["full_augmentation"][METRIC])
    res = run.results
    at = res[(res["policy"] == "random") & (res["budget"] == b)][METRIC].to_numpy(dtype=float)
    if at.size == 0 or full <= no:
        return None
    g = (at - no) / (full - no)
    return float(g.mean()), float(g.std(ddof=1)) if g.size > 1 else 0.0


def _anchor(title: str) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces -> dashes.
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


def copy_figures(run: Run, figures: Path, width: int = 1000) -> None:
    """Small PNGs: the accuracy plot redrawn with a log budget axis (the paper's budgets
    crowd near zero on a linear one) and the influence top/bottom grid."""
    import tempfile

    from PIL import Image

    from leanaug.experiments import plot_accuracy

    figures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plot_accuracy(run.results, run.baselines, tmp, log_x=True, title=run.title)
        pairs = [
            (Path(tmp) / "accuracy.png", f"{run.name}.png"),
            (run.path / "top_bottom_influence.png", f"{run.name}_top_bottom.png"),
        ]
        for path, dst in pairs:
            if not path.is_file():
                continue
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.width > width:
                    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
                im.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
                    figures / dst, optimize=True
                )


def update_page(page: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each ``<!-- BEGIN generated:NAME -->...<!-- END generated:NAME -->``."""
    text = page.read_text()
    missing = []
    for name, body in blocks.items():
        pattern = re.compile(
            rf"(<!-- BEGIN generated:{re.escape(name)} -->\n).*?(<!-- END generated:{re.escape(name)} -->)",
            re.S,
        )
        if not pattern.search(text):
            missing.append(name)
            continue
        text = pattern.sub(
            lambda m, body=body: m.group(1) + body.rstrip() + "\n" + m.group(2), text
        )
    page.write_text(text)
    return missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--page", type=Path, default=None)
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument(
        "--overview",
        default="overview",
        help="marker name of the overview table (another name keeps an older overview)",
    )
    args = ap.parse_args()
    runs = []
    for p in args.runs:
        if not (p / "results.parquet").is_file() or not (p / "baselines.json").is_file():
            print(f"note: skipping {p} (not a finished run folder)", file=sys.stderr)
            continue
        runs.append(Run(p))
    figures_rel = None
    if args.figures:
        for run in runs:
            copy_figures(run, args.figures)
        base = args.page.parent if args.page else Path.cwd()
        try:
            figures_rel = str(args.figures.resolve().relative_to(base.resolve()))
        except ValueError:
            figures_rel = str(args.figures)
    blocks = {args.overview: overview_block(runs)}
    for run in runs:
        blocks[run.name] = run_block(run, figures_rel)
    if args.page:
        missing = update_page(args.page, blocks)
        for name in missing:
            print(
                f"note: no generated:{name} markers in {args.page}; block printed below",
                file=sys.stderr,
            )
            print(f"<!-- BEGIN generated:{name} -->\n{blocks[name]}<!-- END generated:{name} -->\n")
    else:
        for name, body in blocks.items():
            print(f"<!-- BEGIN generated:{name} -->\n{body}<!-- END generated:{name} -->\n")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
