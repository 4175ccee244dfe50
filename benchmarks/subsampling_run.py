"""Run one subsampling config with the CLI and record how it was run (for results pages).

    python benchmarks/subsampling_run.py --out runs/paper/mnist_3v8_translate -- \
        --config configs/paper/mnist_3v8_translate.yaml --data-dir ../shared/data [more flags]

Everything after ``--`` goes verbatim to ``leanaug subsample run`` (with ``--out`` and
``--no-progress`` added). Afterwards:

* ``OUT/run_info.json`` gets one entry per invocation: the exact command, start time,
  wall seconds, the 1-minute load average before and after (the machine is shared), CPU
  count and exit code. A run that was interrupted and resumed has several entries; the
  report adds their wall times.
* ``OUT/featurizer.json``: the featurizer's figures (test accuracy of its own head on the
  test split it was trained for, whether it came from the cache, training time when it
  was trained in this call), from ``benchmarks/subsampling_featurizer.py`` on the
  resolved ``OUT/config.yaml`` (a cache hit: no retraining).

``benchmarks/subsampling_report.py`` reads both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from subsampling_featurizer import featurizer_figures  # noqa: E402

from leanaug.experiments import resolve_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-featurizer-info", action="store_true")
    ap.add_argument("cli_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cli_args = [a for a in args.cli_args if a != "--"]
    out = Path(args.out)
    cmd = ["leanaug", "subsample", "run", *cli_args, "--out", str(out), "--no-progress"]

    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    entry = {
        "command": shlex.join(cmd),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.node()}",
        "exit_code": rc,
    }
    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"invocations": []}
    info["invocations"].append(entry)
    out.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    if rc != 0:
        sys.exit(rc)
    if not args.skip_featurizer_info and not (out / "featurizer.json").is_file():
        cfg = resolve_config(out / "config.yaml")
        figures = featurizer_figures(cfg, label=str(out / "config.yaml"))
        (out / "featurizer.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
