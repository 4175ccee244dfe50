"""Augmentation-subsampling experiments: config schema, runner, plots.

>>> from leanaug.experiments import resolve_config, run_experiment
>>> summary = run_experiment(resolve_config("configs/demo.yaml", out="runs/demo"))

Names are imported lazily (PEP 562) so that joblib workers, which import
``leanaug.experiments.runner``, do not pay for matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEMO": "config",
    "SubsampleConfig": "config",
    "load_config_file": "config",
    "parse_spec": "config",
    "resolve_config": "config",
    "split_specs": "config",
    "auc_table": "plots",
    "make_plots": "plots",
    "plot_accuracy": "plots",
    "plot_top_bottom": "plots",
    "summarize": "plots",
    "RESULT_COLUMNS": "runner",
    "RunSummary": "runner",
    "compute_baselines": "runner",
    "plan_units": "runner",
    "run_experiment": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
