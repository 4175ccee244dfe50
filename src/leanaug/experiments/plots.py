"""Plots and tables for an augmentation-subsampling output folder.

* ``accuracy.png`` / ``accuracy.pdf``: accuracy against the number of augmented points,
  one panel per score and one line per policy, the mean over trials with a 95%
  t-interval band, and the no-augmentation (dashed red) and full-augmentation (dashed
  green) baselines. By default the accuracy on the augmented test set (the test images
  plus all their deterministic copies, what Kuchnik & Smith plot); ``clean=True`` plots
  the clean test set instead (``accuracy_clean.*``). A run of the ``featurizer-refit``
  protocol (``baselines.json``) says so in the title.
* ``auc.csv`` / ``auc.md``: area under each (score, policy) curve, trapezoid rule over
  the budgets divided by the budget range (so it is a mean accuracy), mean +- std over
  trials, on the augmented test set; ``clean=True`` writes ``auc-clean.csv`` /
  ``auc-clean.md`` for the clean test set instead, so neither overwrites the other. The
  csv's ``metric`` column names the results column the figures come from
  (``accuracy_augmented_test`` or ``accuracy``).
* ``top_bottom_<score>.png``: the highest- and lowest-scoring training images per score.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot global state, no
display needed) and written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from leanaug.errors import LeanaugError
from leanaug.experiments.refit import PROTOCOL_REFIT
from leanaug.results import read_json, read_parquet, reading, write_text, write_with

METRICS = {
    "accuracy_augmented_test": "accuracy on the augmented test set",
    "accuracy": "accuracy on the clean test set",
}
BASELINE_KEY = {"accuracy_augmented_test": "accuracy_augmented_test", "accuracy": "accuracy"}
#: File stem of the AUC table of each metric.
AUC_STEM = {"accuracy_augmented_test": "auc", "accuracy": "auc-clean"}


def _metric(clean: bool) -> str:
    return "accuracy" if clean else "accuracy_augmented_test"


def summarize(results: pd.DataFrame, metric: str = "accuracy_augmented_test") -> pd.DataFrame:
    """Mean, std, trial count and 95% t-interval per (score, policy, budget)."""
    g = results.groupby(["score", "policy", "budget"], sort=True)[metric]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    # Student t half-width; undefined for a single trial, where the band is omitted.
    t = np.where(out["n"] > 1, stats.t.ppf(0.975, np.maximum(out["n"] - 1, 1)), 0.0)
    half = t * out["std"] / np.sqrt(out["n"])
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


def auc_table(results: pd.DataFrame, metric: str = "accuracy_augmented_test") -> pd.DataFrame:
    """Normalised area under the accuracy-vs-budget curve per (score, policy).

    For each trial: ``trapezoid(accuracy, budgets) / (max budget - min budget)`` (the
    accuracy itself when there is one budget); then mean, std (ddof 1) and the number of
    trials. Sorted best first.
    """
    rows = []
    for (score, policy, trial), grp in results.groupby(["score", "policy", "trial"], sort=True):
        grp = grp.sort_values("budget")
        b = grp["budget"].to_numpy(dtype=float)
        a = grp[metric].to_numpy(dtype=float)
        auc = (
            float(a[0])
            if b.size == 1 or b[-1] == b[0]
            else float(np.trapezoid(a, b) / (b[-1] - b[0]))
        )
        rows.append({"score": score, "policy": policy, "trial": trial, "auc": auc})
    per_trial = pd.DataFrame(rows)
    if per_trial.empty:
        return pd.DataFrame(columns=["score", "policy", "auc_mean", "auc_std", "trials"])
    table = (
        per_trial.groupby(["score", "policy"])["auc"]
        .agg(auc_mean="mean", auc_std="std", trials="count")
        .reset_index()
    )
    table["auc_std"] = table["auc_std"].fillna(0.0)
    return table.sort_values(
        ["auc_mean", "score", "policy"], ascending=[False, True, True]
    ).reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub markdown table (hand-written: pandas needs the optional ``tabulate``)."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return format(float(v), floatfmt)
        return str(v)

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def write_auc(
    table: pd.DataFrame,
    out_dir: str | Path,
    baselines: dict[str, Any] | None = None,
    metric: str = "accuracy_augmented_test",
) -> list[Path]:
    """``auc.csv`` and ``auc.md`` (``auc-clean.*`` for the clean test set's ``accuracy``);
    the csv has a ``metric`` column, the markdown also lists the two baselines."""
    out_dir = Path(out_dir)
    stem = AUC_STEM[metric]
    csv = out_dir / f"{stem}.csv"
    named = table.assign(metric=metric)[["metric", *table.columns]]
    write_with(csv, lambda p: named.to_csv(p, index=False))
    shown = table.assign(
        auc=[f"{m:.4f} ± {s:.4f}" for m, s in zip(table["auc_mean"], table["auc_std"], strict=True)]
    )
    md = f"Area under the curve ({METRICS.get(metric, metric)}, trapezoid over budgets / budget range; mean ± std over trials)\n\n"
    md += markdown_table(shown[["score", "policy", "auc", "trials"]])
    if baselines:
        key = BASELINE_KEY[metric]
        md += (
            f"\nBaselines: no augmentation {baselines['no_augmentation'][key]:.4f}, "
            f"full augmentation {baselines['full_augmentation'][key]:.4f}\n"
        )
    return [write_text(out_dir / f"{stem}.md", md), csv]


def plot_accuracy(
    results: pd.DataFrame,
    baselines: dict[str, Any],
    out_dir: str | Path,
    clean: bool = False,
    log_x: bool = False,
    title: str | None = None,
) -> list[Path]:
    """``accuracy.{png,pdf}`` (``accuracy_clean.*`` with ``clean=True``); returns the paths."""
    metric = _metric(clean)
    summary = summarize(results, metric)
    scores = list(dict.fromkeys(results["score"]))
    key = BASELINE_KEY[metric]
    lines = (float(baselines["no_augmentation"][key]), float(baselines["full_augmentation"][key]))
    ncols = min(3, len(scores))
    nrows = (len(scores) + ncols - 1) // ncols
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 0.9), layout="constrained")
    axes = np.atleast_1d(
        fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    ).ravel()
    lo_y = min(*lines, float(summary["lo"].min()))
    hi_y = max(*lines, float(summary["hi"].max()))
    pad = max(0.005, 0.08 * (hi_y - lo_y))
    for ax, score in zip(axes, scores, strict=False):
        _draw_score_panel(ax, summary[summary["score"] == score], sorted(set(results["policy"])),
                          lines, log_x)  # fmt: skip
        ax.set_title(f"score: {score}", fontsize=10)
        ax.set_ylim(lo_y - pad, hi_y + pad)
    _label_grid(fig, axes, len(scores), nrows, ncols, metric)
    refit = baselines.get("protocol") == PROTOCOL_REFIT
    fig.suptitle(
        title
        or f"Augmentation subsampling: {METRICS[metric]}\n"
        "mean over trials; band: 95% t-interval (none for deterministic pairs, run once)"
        + ("\nfeaturizer retrained for every fit" if refit else ""),
        fontsize=10,
    )
    stem = "accuracy_clean" if clean else "accuracy"
    out_dir = Path(out_dir)
    return [
        write_with(out_dir / f"{stem}.{ext}", lambda p: fig.savefig(p, dpi=130))
        for ext in ("png", "pdf")
    ]


def _draw_score_panel(
    ax: Any, summary: pd.DataFrame, policies: list[str], lines: tuple[float, float], log_x: bool
) -> None:
    """One score's curves (mean and 95 % band per policy) between the two baselines."""
    # Red and green are kept for the two baselines.
    palette = ["C0", "C1", "C4", "C9", "black", "C5", "C6", "C8", "C7", "navy", "olive"]
    for i, policy in enumerate(policies):
        s = summary[summary["policy"] == policy].sort_values("budget")
        if s.empty:
            continue
        c = palette[i % len(palette)]
        ax.plot(s["budget"], s["mean"], marker="o", ms=3, lw=1.5, color=c, label=f"policy {policy}")
        if int(s["n"].max()) > 1:
            ax.fill_between(s["budget"], s["lo"], s["hi"], color=c, alpha=0.18, lw=0)
    no_aug, full_aug = lines
    ax.axhline(no_aug, color="red", ls="--", lw=1.2, label=f"no augmentation ({no_aug:.3f})")
    ax.axhline(
        full_aug, color="green", ls="--", lw=1.2, label=f"full augmentation ({full_aug:.3f})"
    )
    ax.grid(alpha=0.3)
    if log_x:
        ax.set_xscale("log")


def _label_grid(fig: Any, axes: np.ndarray, used: int, nrows: int, ncols: int, metric: str) -> None:
    """Axis labels on the outer panels, unused panels hidden, one legend for all."""
    for ax in axes[used:]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols :]:
        ax.set_xlabel("number of augmented training points")
    for ax in axes[::ncols]:
        ax.set_ylabel(METRICS[metric].replace("accuracy on the ", "accuracy, "))
    seen: dict[str, Any] = {}
    for ax in axes[:used]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(
        list(seen.values()),
        list(seen.keys()),
        loc="outside lower center",
        ncols=min(4, len(seen)),
        fontsize=9,
        frameon=False,
    )


def _image_for_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.transpose(img[:3], (1, 2, 0)), None


def plot_top_bottom(
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    score_name: str,
    out_dir: str | Path,
    n: int = 8,
    class_names: Sequence[str] | None = None,
) -> Path:
    """``top_bottom_<score>.png``: the ``n`` highest-scoring training images (top row)
    and the ``n`` lowest-scoring ones (bottom row), each titled with label and score."""
    scores = np.asarray(scores, dtype=float)
    if images.shape[0] != scores.shape[0]:
        raise LeanaugError(
            f"{images.shape[0]} images but {scores.shape[0]} scores for {score_name!r}"
        )
    n = max(1, min(n, scores.size // 2 if scores.size > 1 else 1))
    order = np.argsort(-scores, kind="stable")
    rows = [("highest", order[:n]), ("lowest", order[::-1][:n])]
    fig = Figure(figsize=(1.25 * n + 0.6, 3.2), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for r, (which, idx) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(idx):
                ax.set_visible(False)
                continue
            i = int(idx[c])
            pic, cmap = _image_for_display(images[i])
            ax.imshow(pic, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            lab = class_names[int(labels[i])] if class_names is not None else int(labels[i])
            ax.set_title(f"#{i} y={lab}\n{scores[i]:.3g}", fontsize=7)
            if c == 0:
                ax.set_ylabel(which, fontsize=9)
    fig.suptitle(
        f"score {score_name!r}: highest (top) and lowest (bottom) training points", fontsize=10
    )
    return write_with(
        Path(out_dir) / f"top_bottom_{_safe(score_name)}.png", lambda p: fig.savefig(p, dpi=130)
    )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in name)


def make_plots(
    out_dir: str | Path, clean: bool = False, log_x: bool = False, n_images: int = 8
) -> dict[str, Any]:
    """Every plot and table for a finished (or partly finished) output folder.

    Returns ``{"paths": [...], "auc": DataFrame, "baselines": dict, "summary": DataFrame}``.
    """
    out_dir = Path(out_dir)
    results_path = out_dir / "results.parquet"
    baselines_path = out_dir / "baselines.json"
    for p in (results_path, baselines_path):
        if not p.is_file():
            raise LeanaugError(f"{p} not found: run `leanaug subsample run --out {out_dir}` first")
    results = read_parquet(results_path)
    if results.empty:
        raise LeanaugError(f"{results_path} has no rows yet")
    baselines = read_json(baselines_path)
    metric = _metric(clean)
    paths = plot_accuracy(results, baselines, out_dir, clean=clean, log_x=log_x)
    table = auc_table(results, metric)
    paths += write_auc(table, out_dir, baselines, metric)
    scores_path = out_dir / "scores.parquet"
    features_path = out_dir / "features.npz"
    if scores_path.is_file() and features_path.is_file():
        score_frame = read_parquet(scores_path)
        with reading(features_path, "features file (.npz)"), np.load(features_path) as f:
            images = f["train_images"]
            class_names = [str(c) for c in f["class_names"]] if "class_names" in f else None
        labels = score_frame["label"].to_numpy()
        for col in score_frame.columns:
            if col in ("index", "label"):
                continue
            paths.append(
                plot_top_bottom(
                    images, labels, score_frame[col].to_numpy(), col, out_dir, n_images, class_names
                )
            )
    return {
        "paths": paths,
        "auc": table,
        "baselines": baselines,
        "summary": summarize(results, metric),
    }
