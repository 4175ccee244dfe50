"""Speed-up of a subsampling sweep on Ray: 1 vs 2 workers (local Ray instances).

    python benchmarks/bench_ray_sweep.py [--trials 4] [--repeats 1] [--out runs/bench_ray]

The sweep: digits 3 vs 8 (268 training points), translate, raw pixels, scores loss and
random, policies random, proportional and update (re-scoring: extra refits inside the
unit), 8 budgets up to 240; trials as given (6 * trials units). Features, baselines and scores are computed
once (a local run) and reused, so the timed part is the (score, policy, trial) units only,
what Ray distributes. Each Ray run starts a local instance with ``num_cpus`` = 1 or 2
(one task per CPU), warms up one worker per CPU (imports), then times
``run_experiment(executor="ray")``. A local in-process run (``n_jobs=1``) is timed the
same way for reference. All runs must give the same results (checked).

Prints the wall times and the speed-up T(1 worker) / T(2 workers). On a shared, busy
machine the figures move with the load: the 1-minute load average is printed, and a
calibration (the same pure-Python loop in 1 process, then in 2 processes at once) gives
the speed-up two processes could get on the machine at that moment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from leanaug.classifier import LogisticClassifier
from leanaug.experiments import resolve_config, run_experiment

SWEEP = dict(
    dataset="digits",
    classes=[3, 8],
    n_train="all",
    augment="translate",
    featurizer="pixels",
    scores=["loss", "random"],
    policies=["random", "proportional", "update"],
    budgets=[1, 5, 10, 20, 40, 80, 160, 240],
    seed=0,
)
KEY = ["score", "policy", "trial", "budget"]


def _warm_up(ray, workers: int) -> None:  # noqa: ANN001 - the ray module
    @ray.remote(num_cpus=1)
    def load(_: int) -> int:
        import leanaug.experiments.runner  # noqa: F401 - what a unit task imports first

        time.sleep(1.0)  # hold the CPU so that each call lands on its own worker
        return os.getpid()

    pids = ray.get([load.remote(i) for i in range(workers)])
    assert len(set(pids)) == workers, pids


def _burn(n: int) -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - t0


def _calibrate(n: int = 20_000_000) -> tuple[float, float]:
    """Wall time of a CPU-bound loop alone, and of two copies in two processes at once."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_burn, [1000, 1000]))  # start both processes first
        t0 = time.perf_counter()
        pool.submit(_burn, n).result()
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(pool.map(_burn, [n, n]))
        two = time.perf_counter() - t0
    return one, two


def _fresh_copy(template: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(template, out)
    (out / "results.parquet").unlink()
    return out


class _UnitFitCounter:
    """Counts ``LogisticClassifier.fit`` calls made inside the runner's units, in this
    process (the local ``n_jobs=1`` run): the evaluation refit of every row plus the
    re-scoring refits of the ``update`` policy, which ``units * budgets`` leaves out."""

    def __init__(self) -> None:
        self.fits = 0
        self._inside = False

    def __enter__(self) -> _UnitFitCounter:
        import leanaug.experiments.runner as runner

        self._runner, self._fit, self._unit = runner, LogisticClassifier.fit, runner.run_unit

        def fit(clf, *args, **kwargs):
            if self._inside:
                self.fits += 1
            return self._fit(clf, *args, **kwargs)

        def unit(*args, **kwargs):
            self._inside = True
            try:
                return self._unit(*args, **kwargs)
            finally:
                self._inside = False

        LogisticClassifier.fit, runner.run_unit = fit, unit
        return self

    def __exit__(self, *exc: object) -> None:
        LogisticClassifier.fit, self._runner.run_unit = self._fit, self._unit


def _timed_run(config_kw: dict, out: Path) -> tuple[float, pd.DataFrame, int]:
    t0 = time.perf_counter()
    summary = run_experiment(
        resolve_config(None, config_kw, out=str(out)), progress=False, plots=False
    )
    return time.perf_counter() - t0, summary.results, summary.units_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ray"))
    args = parser.parse_args()
    import ray

    sweep = {**SWEEP, "trials": args.trials}
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
    template = args.out / "template"
    t0 = time.perf_counter()
    reference = run_experiment(
        resolve_config(None, sweep, out=str(template)),
        overwrite=True,
        progress=False,
        plots=False,
    ).results
    print(
        f"template run (features, baselines, scores, units; local): {time.perf_counter() - t0:.1f} s"
    )

    times: dict[str, list[float]] = {"local n_jobs=1": [], "ray 1 worker": [], "ray 2 workers": []}
    units = 0
    calibration = []
    unit_fits = 0
    for rep in range(args.repeats):
        calibration.append(_calibrate())
        with _UnitFitCounter() as counter:
            seconds, results, units = _timed_run(sweep, _fresh_copy(template, args.out / "local"))
        unit_fits = counter.fits
        times["local n_jobs=1"].append(seconds)
        pd.testing.assert_frame_equal(
            results.drop(columns="seconds"), reference.drop(columns="seconds")
        )
        for workers in (1, 2):
            t0 = time.perf_counter()
            ray.init(
                address="local", num_cpus=workers, include_dashboard=False, logging_level="error"
            )
            _warm_up(ray, workers)
            start = time.perf_counter() - t0
            out = _fresh_copy(template, args.out / f"ray{workers}")
            seconds, results, units = _timed_run({**sweep, "executor": "ray"}, out)
            ray.shutdown()
            name = f"ray {workers} worker{'s' if workers > 1 else ''}"
            times[name].append(seconds)
            print(f"repeat {rep + 1}: {name}: {seconds:.1f} s (Ray start + warm-up {start:.1f} s)")
            pd.testing.assert_frame_equal(
                results.drop(columns="seconds"), reference.drop(columns="seconds")
            )
    rows = len(reference)
    print(
        f"\nsweep: {units} units, {rows} result rows; {unit_fits} classifier fits inside the "
        f"units (counted in the local run: one evaluation refit per row, {unit_fits - rows} "
        "re-scoring refits of the update policy); same results in every run"
    )
    print(f"{'run':<16} {'wall time (s), per repeat':<30} best")
    for name, values in times.items():
        print(f"{name:<16} {', '.join(f'{v:.1f}' for v in values):<30} {min(values):.1f}")
    one, two = min(times["ray 1 worker"]), min(times["ray 2 workers"])
    print(f"speed-up 1 -> 2 Ray workers: {one / two:.2f}x (best of {args.repeats})")
    cal = ", ".join(
        f"{2 * a / b:.2f}x ({a:.1f} s alone, {b:.1f} s for two)" for a, b in calibration
    )
    print(f"calibration, 2 processes vs 1 on a CPU-bound loop at the time: {cal}")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
