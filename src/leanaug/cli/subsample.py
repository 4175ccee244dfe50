"""``leanaug subsample run|plot`` and ``leanaug demo``: augmentation subsampling.

A thin layer over :mod:`leanaug.experiments`: flags map one to one onto the fields of
:class:`~leanaug.experiments.config.SubsampleConfig` and override ``--config FILE``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from leanaug.experiments.config import DEMO, resolve_config
from leanaug.experiments.plots import auc_table
from leanaug.experiments.refit import PROTOCOL_TEXT
from leanaug.experiments.runner import RunSummary, run_experiment

app = typer.Typer(
    help="Augmentation subsampling (Kuchnik & Smith, ICLR 2019): augment only a few "
    "well-chosen training points. `run` an experiment, `plot` its output folder.",
    no_args_is_help=True,
)

METRIC_HELP = (
    "Plot accuracy on the clean test set instead of the augmented test set "
    "(writes accuracy_clean.* and auc-clean.*; auc.* stay the augmented test set's)."
)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _table(results: pd.DataFrame, baselines: dict, metric: str, title: str) -> Table:
    """Mean accuracy (%) per (score, policy) x budget, the AUC, and the two baselines."""
    means = (
        results.groupby(["score", "policy", "budget"], sort=False)[metric].mean().unstack("budget")
    )
    trials = results.groupby(["score", "policy"], sort=False)["trial"].nunique()
    auc = auc_table(results, metric).set_index(["score", "policy"])
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("score")
    table.add_column("policy")
    for b in means.columns:
        table.add_column(str(b), justify="right")
    table.add_column("AUC ± std", justify="right")
    table.add_column("trials", justify="right")
    best = auc["auc_mean"].max()
    previous = None
    for (score, policy), row in means.iterrows():
        a = auc.loc[(score, policy)]
        auc_text = f"{_pct(a['auc_mean'])} ± {_pct(a['auc_std'])}"
        if a["auc_mean"] == best:
            auc_text = f"[bold]{auc_text}[/bold]"
        shown_score = score if score != previous else ""
        previous = score
        table.add_row(
            shown_score, policy, *[_pct(v) for v in row], auc_text, str(trials[(score, policy)])
        )
    key = "accuracy" if metric == "accuracy" else "accuracy_augmented_test"
    table.add_section()
    for name, label, style in (
        ("no_augmentation", "no augmentation", "red"),
        ("full_augmentation", "full augmentation", "green"),
    ):
        value = _pct(baselines[name][key])
        table.add_row(
            "baseline",
            f"[{style}]{label}[/{style}]",
            *[f"[{style}]{value}[/{style}]"] * len(means.columns),
            f"[{style}]{value}[/{style}]",
            "",
        )
    return table


def _console() -> Console:
    # Piped output (tests, logs) gets a fixed wide width instead of rich's 80 columns.
    probe = Console()
    return probe if probe.is_terminal else Console(width=140)


def _report(
    console: Console,
    results: pd.DataFrame,
    baselines: dict,
    out: Path,
    files: list[Path],
    clean: bool = False,
) -> None:
    metric = "accuracy" if clean else "accuracy_augmented_test"
    what = "clean test set" if clean else "augmented test set (test images + all their copies)"
    console.print(
        _table(
            results,
            baselines,
            metric,
            f"Accuracy (%) on the {what}: mean over trials, by number of augmented points",
        )
    )
    console.print("AUC: trapezoid over the budgets divided by the budget range (a mean accuracy).")
    protocol = baselines.get("protocol")
    if protocol is not None:
        console.print(f"Protocol: {PROTOCOL_TEXT.get(protocol, protocol)}.")
    console.print(f"Output folder: [bold]{out}[/bold]")
    for f in files:
        console.print(f"  {f}")


def _print_run(summary: RunSummary, console: Console) -> None:
    trainings = (
        f", {summary.featurizer_trainings} featurizer trainings (one per fit)"
        if summary.config.featurizer_refit
        else ""
    )
    console.print(
        f"{summary.units_run} of {summary.units_total} units run ({summary.units_skipped} already finished), "
        f"{summary.refits} classifier fits (baselines, one per result row; the update "
        f"policy's re-scoring fits are not counted){trainings}, {summary.seconds:.1f} s"
    )
    core = [
        summary.out / n
        for n in (
            "results.parquet",
            "baselines.json",
            "scores.parquet",
            "config.yaml",
            "features.npz",
        )
    ]
    _report(console, summary.results, summary.baselines, summary.out, core + summary.files)


@app.command("run")
def run(
    config: Path = typer.Option(
        None, "--config", help="YAML config file; flags override its values."
    ),
    dataset: str = typer.Option(None, help="Data set: digits, mnist, cifar10, smallnorb."),
    data_dir: str = typer.Option(None, help="Folder with a local copy of the data set."),
    classes: str = typer.Option(None, help="Comma-separated class names or indices, e.g. 3,8."),
    n_train: str = typer.Option(
        None,
        help="Training points to keep: an integer, 'all', or 'auto' (the default: 1000, or "
        "every point of the chosen classes when there are fewer).",
    ),
    subset: str = typer.Option(None, help="Which n_train points: first (file order) or random."),
    augment: str = typer.Option(
        None, help="Augmentation preset of the data set: translate, rotate, crop, ..."
    ),
    featurizer: str = typer.Option(
        None, help="pixels, smallcnn or resnet, with parameters: smallcnn:epochs=40."
    ),
    featurizer_refit: bool = typer.Option(
        None,
        "--featurizer-refit/--no-featurizer-refit",
        help="Retrain the featurizer from scratch on every fit's rows (baselines and each "
        "selection: originals plus the selected points' copies, with the selection's "
        "weights), the reference's MNIST protocol, instead of training it once on the "
        "clean points and freezing it (the default). Costs one featurizer training per "
        "fit; needs a trained featurizer (smallcnn, resnet without weights= or "
        "pretrain_dataset=). Scores still come from the clean points' featurizer.",
    ),
    C: float = typer.Option(
        None, "--C", "-C", help="Inverse L2 strength of the logistic classifier."
    ),
    classifier: str = typer.Option(
        None,
        "--classifier",
        help="Options of the logistic classifier, key=value,...: solver=lbfgs (scikit-learn) "
        "or torch (the same problem, objective in torch on --device: faster on 10-class "
        "fits of tens of thousands of rows), tol=1e-7, max_iter=1000.",
    ),
    warm_start: bool = typer.Option(
        None,
        "--warm-start/--no-warm-start",
        help="Start every augmented fit from the no-augmentation fit's parameters (the same "
        "optimum, fewer iterations). Frozen featurizer only.",
    ),
    scores: str = typer.Option(None, help="Comma-separated scores, e.g. influence,loss,random."),
    policies: str = typer.Option(
        None,
        help="Comma-separated policies with optional parameters, e.g. random,proportional,update:k=5,topk.",
    ),
    budgets: str = typer.Option(
        None,
        help="Comma-separated numbers of points to augment, e.g. 1,10,50. Default 'auto': the "
        "paper's 1,10,50,100,250,500,750,1000 of 1000 points as fractions of n_train.",
    ),
    trials: int = typer.Option(None, help="Trials of each randomised (score, policy) pair."),
    seed: int = typer.Option(None, help="Base seed; each trial's seed is derived from it."),
    n_jobs: int = typer.Option(
        None, help="Worker processes (-1: all cores); results do not depend on it."
    ),
    device: str = typer.Option(None, help="auto, cpu or cuda (for training a featurizer)."),
    executor: str = typer.Option(
        None,
        help="Where the units run: local (this machine, --n-jobs workers) or ray (one Ray "
        "task per unit; needs pip install -e '.\\[ray]'). Results do not depend on it.",
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster to join with --executor ray: auto, HOST:6379 or ray://HOST:10001. "
        "Without it: a local Ray instance with --n-jobs CPUs.",
    ),
    out: str = typer.Option(None, help="Output folder; re-running the same command resumes."),
    overwrite: bool = typer.Option(
        False, "--overwrite", "--force", help="Delete the folder's previous results first."
    ),
    plot: bool = typer.Option(
        True, "--plot/--no-plot", help="Write the plots and AUC table at the end."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run (or resume) an augmentation-subsampling experiment."""
    cfg = resolve_config(
        config,
        dataset=dataset,
        data_dir=data_dir,
        classes=classes,
        n_train=n_train,
        subset=subset,
        augment=augment,
        featurizer=featurizer,
        featurizer_refit=featurizer_refit,
        C=C,
        classifier_params=classifier,
        warm_start=warm_start,
        scores=scores,
        policies=policies,
        budgets=budgets,
        trials=trials,
        seed=seed,
        n_jobs=n_jobs,
        device=device,
        executor=executor,
        ray_address=ray_address,
        out=out,
    )
    summary = run_experiment(cfg, overwrite=overwrite, progress=progress, plots=plot)
    _print_run(summary, _console())


@app.command("plot")
def plot(
    out_dir: Path = typer.Argument(..., help="Output folder of `leanaug subsample run`."),
    clean: bool = typer.Option(False, "--clean", help=METRIC_HELP),
    log_x: bool = typer.Option(False, "--log-x", help="Logarithmic budget axis."),
) -> None:
    """Plot accuracy against the number of augmented points; write the AUC table."""
    from leanaug.experiments.plots import make_plots
    from leanaug.results import read_parquet

    made = make_plots(out_dir, clean=clean, log_x=log_x)
    results = read_parquet(out_dir / "results.parquet")
    _report(_console(), results, made["baselines"], out_dir, made["paths"], clean=clean)


def demo(
    out: str = typer.Option("runs/demo", help="Output folder."),
    n_jobs: int = typer.Option(1, help="Worker processes (-1: all cores)."),
    trials: int = typer.Option(None, help="Override the demo's 5 trials."),
    budgets: str = typer.Option(None, help="Override the demo's budgets, e.g. 1,10,100."),
    overwrite: bool = typer.Option(
        False, "--overwrite", "--force", help="Delete the folder's previous results first."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Augmentation subsampling on digits 3 vs 8: a table and plots in under a minute.

    scikit-learn's bundled digits, translate +-1 px, raw-pixel features; the same run as
    `leanaug subsample run --config configs/demo.yaml`. Re-running resumes.
    """
    cfg = resolve_config(None, DEMO, out=out, n_jobs=n_jobs, trials=trials, budgets=budgets)
    summary = run_experiment(cfg, overwrite=overwrite, progress=progress, plots=True)
    _print_run(summary, _console())


def register_top_level(root: typer.Typer) -> None:
    """Add ``leanaug demo`` to the root command."""
    root.command("demo")(demo)
