"""The learned step size and matching loss of the two CIFAR-10 GPU leases, side by side.

Lease 1 ran the old alpha rule (SGD on log alpha with lr_lr / alpha_0**2), lease 2 the
fixed one (``leanaug.distill.matching.step_log_alpha_``); both logs are the matching
``log.parquet`` files that ``benchmarks/gpu_session.py`` returned, kept in
``docs/data/gpu-2026-11-30/``.

    python benchmarks/plot_alpha_rule.py    # -> docs/figures/distillation/cifar10_alpha_rule.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "gpu-2026-11-30"
OUT = ROOT / "docs" / "figures" / "distillation" / "cifar10_alpha_rule.png"


def main() -> None:
    old = pd.read_parquet(DATA / "lease1_mtt_log.parquet")
    new = pd.read_parquet(DATA / "lease2_mtt_log.parquet")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].semilogy(old.iteration, old.alpha, label="old rule: lr_lr/alpha_0^2 on dL/dlog alpha")
    ax[0].semilogy(new.iteration, new.alpha, label="fixed: MTT's step at any alpha, <= x2")
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("learned alpha")
    ax[0].legend(fontsize=8)
    ax[0].set_title("CIFAR-10 IPC 10, H200: the step size")
    ax[1].plot(old.iteration, old.loss.rolling(10).mean(), label="old rule")
    ax[1].plot(new.iteration, new.loss.rolling(10).mean(), label="fixed")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("matching loss (10-it mean)")
    ax[1].legend(fontsize=8)
    ax[1].set_title("matching loss")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
