"""The Ray executor (issue #9): the same subsampling results and expert files as local runs,
workers killed mid-task retried without duplicates, finished tasks skipped on re-runs.

One local Ray instance (2 CPUs, no dashboard) serves the whole module. A killed worker is
simulated deterministically: the task wrapper below ends its own process with
``os._exit`` on the victim's first attempt (a marker file remembers the kill), after
optionally doing part of the work, as a worker killed mid-task would have.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from leanaug.cli.main import main
from leanaug.data import load_dataset
from leanaug.distill.experts import expert_path, load_expert, train_experts
from leanaug.errors import LeanaugError
from leanaug.executors import EXECUTORS, RayExecutor, make_executor, ray_available
from leanaug.experiments import resolve_config, run_experiment
from leanaug.experiments.runner import Unit
from leanaug.results import read_parquet

needs_ray = pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install -e '.[ray]'); CI installs it"
)

N_DIGITS_38 = 268
SWEEP = dict(
    dataset="digits",
    classes=[3, 8],
    n_train="all",
    augment="translate",
    featurizer="pixels",
    scores=["loss", "random"],
    policies=["random", "topk"],
    budgets=[1, 20, N_DIGITS_38],
    trials=2,
    seed=0,
)
SWEEP_FLAGS = [
    "--dataset", "digits", "--classes", "3,8", "--n-train", "all", "--augment", "translate",
    "--featurizer", "pixels", "--scores", "loss,random", "--policies", "random,topk",
    "--budgets", f"1,20,{N_DIGITS_38}", "--trials", "2", "--seed", "0",
]  # fmt: skip
KEY = ["score", "policy", "trial", "budget"]
TINY = dict(width=8, depth=2, lr=0.05, batch_size=128)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    # The wrappers below live in this test module, which Ray workers cannot import: ship
    # them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local_sweep")
    return run_experiment(resolve_config(None, SWEEP, out=str(out)), progress=False, plots=False)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["seconds"]).sort_values(KEY).reset_index(drop=True)


# -- killing a worker ----------------------------------------------------------------------
@dataclasses.dataclass
class KillFirstAttempt:
    """Runs ``fn(shared, task)``; the first attempt of the victim task kills its process.

    Every attempt leaves a file ``attempt-<key>-<pid>-<ns>`` in ``markers``. With
    ``partial_epochs``, the killed attempt first trains the expert that far (so the retry
    must resume from the expert's file).
    """

    fn: Callable[..., Any]
    markers: str
    victim: str
    partial_epochs: int | None = None

    def __call__(self, shared: Any, task: Any) -> Any:
        key = _task_key(task)
        folder = Path(self.markers)
        (folder / f"attempt-{key}-{os.getpid()}-{time.time_ns()}").touch()
        killed = folder / "killed"
        if key == self.victim and not killed.exists():
            killed.touch()
            if self.partial_epochs is not None:
                self.fn(shared, dataclasses.replace(task, epochs=self.partial_epochs))
            os._exit(1)  # as if the worker process were killed: no result, no clean-up
        return self.fn(shared, task)


def _task_key(task: Any) -> str:
    if isinstance(task, Unit):
        return f"{task.score}.{task.policy}.{task.trial}"
    return f"expert{task.index}"


class KillingRayExecutor(RayExecutor):
    def __init__(self, markers: Path, victim: str, partial_epochs: int | None = None) -> None:
        super().__init__(max_retries=2)
        self.wrapper = dict(markers=str(markers), victim=victim, partial_epochs=partial_epochs)

    def map(self, fn, tasks, **kwargs):  # noqa: ANN001, ANN201
        return super().map(KillFirstAttempt(fn, **self.wrapper), tasks, **kwargs)


def _attempts(markers: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in markers.glob("attempt-*"):
        key = p.name.split("-")[1]
        out[key] = out.get(key, 0) + 1
    return out


# -- subsampling ---------------------------------------------------------------------------
@needs_ray
def test_sweep_on_ray_equals_local_and_resumes(ray_instance, local_sweep, tmp_path, capsys):
    out = tmp_path / "ray"
    argv = ["subsample", "run", *SWEEP_FLAGS, "--executor", "ray", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--no-plot", "--no-progress"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert "7 of 7 units run" in capsys.readouterr().out
    on_ray = read_parquet(out / "results.parquet")
    assert not on_ray.duplicated(KEY).any()
    pd.testing.assert_frame_equal(_sorted(on_ray), _sorted(local_sweep.results))
    # executor and address are execution fields: a local re-run of the folder is a resume
    assert resolve_config(out / "config.yaml").executor == "ray"
    again = run_experiment(
        resolve_config(None, SWEEP, out=str(out), executor="ray"), progress=False, plots=False
    )
    assert (again.units_run, again.units_skipped, again.refits) == (0, 7, 0)
    pd.testing.assert_frame_equal(read_parquet(out / "results.parquet"), on_ray)


@needs_ray
def test_killed_unit_is_retried_without_duplicate_rows(ray_instance, local_sweep, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(local_sweep.out, out)  # features, baselines and scores are reused
    (out / "results.parquet").unlink()
    markers = tmp_path / "markers"
    markers.mkdir()
    ex = KillingRayExecutor(markers, victim="loss.random.1")
    summary = run_experiment(
        resolve_config(None, SWEEP, out=str(out)), progress=False, plots=False, executor=ex
    )
    assert (markers / "killed").exists()
    attempts = _attempts(markers)
    assert attempts.pop("loss.random.1") == 2 and set(attempts.values()) == {1}
    assert summary.units_run == 7 and len(attempts) == 6
    rows = read_parquet(out / "results.parquet")
    assert len(rows) == 7 * 3 and not rows.duplicated(KEY).any()
    pd.testing.assert_frame_equal(_sorted(rows), _sorted(local_sweep.results))


# -- experts -------------------------------------------------------------------------------
@needs_ray
def test_killed_expert_worker_still_gives_every_expert_once(ray_instance, tmp_path):
    ds = load_dataset("digits", n_train=200, subset="random", seed=0)
    kw = dict(experts=2, epochs=2, device="cpu", progress=False, **TINY)
    threads = torch.get_num_threads()
    # The Ray tasks' thread count: CPU results depend on it in the last bits.
    torch.set_num_threads(1)
    try:
        local = train_experts(ds, tmp_path / "local", **kw)
    finally:
        torch.set_num_threads(threads)

    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "ray"
    ex = KillingRayExecutor(markers, victim="expert0", partial_epochs=1)
    on_ray = train_experts(ds, out, executor=ex, **kw)
    assert (markers / "killed").exists()
    assert _attempts(markers) == {"expert0": 2, "expert1": 1}
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "config.json",
        "expert_000.safetensors",
        "expert_001.safetensors",
        "preprocess.json",
        "preprocess.safetensors",
    ]  # no second copy, no temp file of the killed attempt
    assert (out / "config.json").read_text() == (tmp_path / "local" / "config.json").read_text()
    for i, (a, b) in enumerate(zip(local, on_ray, strict=True)):
        stored = load_expert(expert_path(out, i))
        assert stored.trajectory.shape[0] == 3  # init + 2 epochs: no row written twice
        assert torch.equal(stored.trajectory, a.trajectory)
        assert torch.equal(b.trajectory, a.trajectory)
        assert stored.test_accuracy == a.test_accuracy and stored.train_loss == a.train_loss
        assert b.path == expert_path(out, i)

    # a re-run skips the finished experts: no task runs, no file is rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("expert_*")}
    again = train_experts(ds, out, executor=KillingRayExecutor(markers, victim="none"), **kw)
    assert _attempts(markers) == {"expert0": 2, "expert1": 1}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("expert_*")} == mtimes
    assert all(torch.equal(x.trajectory, y.trajectory) for x, y in zip(again, local, strict=True))


# -- errors (no Ray needed) ----------------------------------------------------------------
def test_missing_ray_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    assert not ray_available()
    with pytest.raises(LeanaugError, match=r"pip install -e '\.\[ray\]'"):
        RayExecutor()
    for argv in (
        ["subsample", "run", *SWEEP_FLAGS, "--executor", "ray", "--out", str(tmp_path / "s")],
        ["distill", "experts", "--dataset", "digits", "--experts", "1", "--epochs", "1",
         "--executor", "ray", "--out", str(tmp_path / "e")],
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: --executor ray needs Ray")
        assert "pip install -e '.[ray]'" in last
        assert "Traceback" not in err
    assert not (tmp_path / "s" / "features.npz").exists()  # failed before any work


def test_unreachable_address_fails_fast():
    from leanaug.executors import _check_reachable

    t0 = time.perf_counter()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(LeanaugError, match="could not reach the Ray cluster.*ray start --head"):
            _check_reachable(address)
    _check_reachable("auto")  # names Ray resolves itself are left to Ray
    assert time.perf_counter() - t0 < 5


def test_executor_names_and_address_checks(tmp_path):
    assert EXECUTORS.names() == ["local", "ray"]
    with pytest.raises(LeanaugError, match="unknown executor 'dask'; valid names: local, ray"):
        make_executor("dask")
    with pytest.raises(LeanaugError, match="needs --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(LeanaugError, match="needs executor 'ray'"):
        resolve_config(None, SWEEP, out=str(tmp_path), ray_address="auto")
    ex = make_executor("local", n_jobs=1)
    assert sorted(ex.map(lambda s, t: s * t, [1, 2, 3], shared=10)) == [10, 20, 30]
