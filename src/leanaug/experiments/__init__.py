"""Augmentation-subsampling experiments: config schema, runner, plots.

>>> from leanaug.experiments import resolve_config, run_experiment
>>> summary = run_experiment(resolve_config("configs/demo.yaml", out="runs/demo"))
"""

from leanaug.experiments.config import (
    DEMO,
    SubsampleConfig,
    load_config_file,
    parse_spec,
    resolve_config,
    split_specs,
)
from leanaug.experiments.plots import (
    auc_table,
    make_plots,
    plot_accuracy,
    plot_top_bottom,
    summarize,
)
from leanaug.experiments.runner import (
    RESULT_COLUMNS,
    RunSummary,
    compute_baselines,
    plan_units,
    run_experiment,
)

__all__ = [
    "DEMO",
    "RESULT_COLUMNS",
    "RunSummary",
    "SubsampleConfig",
    "auc_table",
    "compute_baselines",
    "load_config_file",
    "make_plots",
    "parse_spec",
    "plan_units",
    "plot_accuracy",
    "plot_top_bottom",
    "resolve_config",
    "run_experiment",
    "split_specs",
    "summarize",
]
