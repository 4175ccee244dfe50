"""Real kills: a command's process gets SIGKILL mid-run, the same command runs again in a
fresh process, and its outputs must equal an uninterrupted run's bit for bit.

An interrupt inside one process (a callback that raises) cannot see state that only a
fresh process rebuilds: generator states, optimizer states, or the memory layout of a
tensor read back from a checkpoint. The last one was a real bug: for 1-channel images a
fresh image tensor and one read from a checkpoint had different strides, the student's
convolutions rounded differently, and a resumed ``distill images`` drifted from
iteration 62 on (final alpha 4x off). ``test_distill_images_resumes_exactly`` catches it
(checked by planting it back).

``distill experts`` has its own SIGKILL test in ``tests/test_experts.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from leanaug.cli.main import main

DEADLINE_S = 180


def run_cli(argv: list[str]) -> None:
    """``leanaug ARGV`` in this process; success may return or raise ``SystemExit(0)``."""
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def kill_when(argv: list[str], ready: Callable[[], bool]) -> None:
    """Start ``leanaug ARGV`` in its own process and SIGKILL it once ``ready()`` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanaug", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + DEADLINE_S
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert not finished, f"the run ended before it could be killed: {err.decode()[-2000:]}"


def checkpoint_iteration(path: Path) -> int:
    """The iteration recorded in a distillation checkpoint, -1 while there is none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("iteration", -1))
    except Exception:  # noqa: BLE001 - not written yet
        return -1


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no items()


def log(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).drop(columns=["seconds"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 tiny experts x 3 epochs on all of sklearn's digits (1-channel 8x8), by the CLI."""
    out = tmp_path_factory.mktemp("experts")
    run_cli(
        ["distill", "experts", "--dataset", "digits", "--experts", "2", "--epochs", "3"]
        + ["--width", "6", "--depth", "2", "--batch-size", "64", "--lr", "0.01"]
        + ["--device", "cpu", "--out", str(out)]
    )
    return out


def kill_resume_compare(
    argv: list[str], tmp_path: Path, kill_after: int, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    """Run ``argv`` whole, and killed once its checkpoint passed ``kill_after`` then rerun;
    return (whole, resumed) folders after checking that the kill came mid-run and that the
    rerun said where it resumed (stderr here is no terminal: plain progress lines too)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_cli([*argv, "--out", str(whole)])
    ckpt = resumed / "checkpoint.safetensors"
    kill_when([*argv, "--out", str(resumed)], lambda: checkpoint_iteration(ckpt) >= kill_after)
    done = checkpoint_iteration(ckpt)
    total = checkpoint_iteration(whole / "checkpoint.safetensors")
    assert kill_after <= done < total
    capsys.readouterr()
    run_cli([*argv, "--out", str(resumed)])
    err = capsys.readouterr().err
    assert f"resuming from the checkpoint of iteration {done} (of {total})" in err
    assert f": {total}/{total} (100 %)" in err  # the plain progress line at the end
    pd.testing.assert_frame_equal(log(resumed / "log.parquet"), log(whole / "log.parquet"))
    return whole, resumed


@pytest.mark.parametrize("memory", ["unrolled", "constant", "tesla"])
def test_distill_images_resumes_exactly(
    experts: Path, tmp_path: Path, memory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL after the checkpoint of iteration 4 (of 12); the rerun equals a whole run.

    Planted bug it catches: the images not put in one memory layout after a checkpoint is
    read (``clone()`` instead of ``clone(memory_format=torch.contiguous_format)`` in
    ``matching._Run._prepare``): the log's losses differ from iteration 5 on.
    """
    argv = ["distill", "images", "--experts", str(experts), "--ipc", "2", "--syn-steps", "4"]
    argv += ["--expert-epochs", "1", "--max-start-epoch", "2", "--iterations", "12"]
    argv += ["--lr-img", "100", "--eval-every", "0", "--checkpoint-every", "2"]
    argv += ["--memory", memory, "--device", "cpu"]
    whole, resumed = kill_resume_compare(argv, tmp_path, 4, capsys)
    a, b = tensors(whole / "images.safetensors"), tensors(resumed / "images.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_distill_augment_resumes_exactly(
    experts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL mid-run of a stochastic phi (residual: noise input, Adam, DSA after phi);
    the rerun's log and final checkpoint (phi, both optimizers, alpha) equal a whole run's.

    Planted bug it catches: the optimizer states left out of the checkpoint (Adam restarts
    from zero moments after the resume): the losses differ from the first resumed iteration.
    """
    argv = ["distill", "augment", "--experts", str(experts), "--phi", "residual"]
    argv += ["--phi-options", "{width: 4}", "--subset", "0.2", "--iterations", "24"]
    argv += ["--syn-steps", "3", "--batch", "16", "--checkpoint-every", "2"]
    argv += ["--picture-every", "0", "--device", "cpu"]
    whole, resumed = kill_resume_compare(argv, tmp_path, 4, capsys)
    a = tensors(whole / "checkpoint.safetensors")
    b = tensors(resumed / "checkpoint.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt_phi") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_subsample_run_resumes_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL once some (score, policy, trial) units are in ``results.parquet``; the rerun
    finishes the rest and its table equals a whole run's (timings aside).

    Planted bug it catches: a unit's seed taken from its position in the work list instead
    of its identity (``seeding.derive_seed``): the resumed run's randomised units differ.
    """
    argv = ["subsample", "run", "--config", str(Path(__file__).parents[1] / "configs/demo.yaml")]
    argv += ["--policies", "random,proportional", "--trials", "6", "--n-jobs", "1"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_cli([*argv, "--out", str(whole)])
    results = resumed / "results.parquet"

    def units_done() -> int:
        try:
            frame = pd.read_parquet(results, columns=["score", "policy", "trial"])
        except Exception:  # noqa: BLE001 - not written yet
            return 0
        return len(frame.drop_duplicates())

    kill_when([*argv, "--out", str(resumed)], lambda: units_done() >= 3)
    full = pd.read_parquet(whole / "results.parquet")
    done, total = units_done(), len(full[["score", "policy", "trial"]].drop_duplicates())
    assert 3 <= done < total
    capsys.readouterr()
    run_cli([*argv, "--out", str(resumed)])
    err = capsys.readouterr().err
    assert f"resuming, {done} of {total} units already done" in err
    assert f": {total}/{total} (100 %)" in err
    keys = ["score", "policy", "trial", "budget"]

    def table(folder: Path) -> pd.DataFrame:
        frame = pd.read_parquet(folder / "results.parquet").drop(columns=["seconds"])
        return frame.sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(resumed), table(whole))


@pytest.mark.parametrize("command", ["images", "augment"])
def test_a_damaged_checkpoint_is_one_line_saying_what_to_do(
    experts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A checkpoint torn by a failing disk stops the rerun in one line that names the
    file and says how to go on (exit status 2), not with safetensors' traceback."""
    argv = ["distill", command, "--experts", str(experts), "--iterations", "2"]
    argv += ["--syn-steps", "2", "--device", "cpu", "--out", str(tmp_path)]
    argv += ["--ipc", "1", "--eval-every", "0"] if command == "images" else ["--picture-every", "0"]
    run_cli(argv)
    ckpt = tmp_path / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert info.value.code == 2 and "Traceback" not in err
    assert len(errors) == 1 and str(ckpt) in errors[0], err
    assert "delete it to restart the run from iteration 0" in errors[0]
