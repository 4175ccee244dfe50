"""Golden figures: the numbers each command gave before the one-harness redesign.

Issue 17 moves the run harness, the training loops and the settings loaders without
changing behaviour. These tests pin what the commands produce on tiny data (digits and
synthetic MNIST files): every log value and a digest of every output tensor, recorded
from the code before the move (``LEANAUG_GOLDEN_RECORD=1 pytest tests/test_golden.py``
rewrites ``tests/golden/*.json``; do that only for an intended change of numbers, and
say so in the commit).

Bit for bit holds on the machine class that recorded the figures (same torch build, same
CPU capability); another CPU rounds convolutions differently, so there the values are
compared to a relative 1e-4 and the digests are not compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from leanaug.cli.main import main

GOLDEN = Path(__file__).with_name("golden")
RECORD = os.environ.get("LEANAUG_GOLDEN_RECORD") == "1"
MACHINE = {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}


def run_cli(argv: list[str]) -> None:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return digest(load_file(str(path)))


def log_values(path: Path, drop: tuple[str, ...] = ("seconds",)) -> dict[str, list[Any]]:
    frame = pd.read_parquet(path)
    frame = frame.drop(columns=[c for c in frame.columns if c in drop or "second" in c])
    return {c: [_plain(v) for v in frame[c].tolist()] for c in frame.columns}


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


def _close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, (float, int)):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (where, got, want)
    else:
        assert got == want, (where, got, want)


def _scrub(value: Any) -> Any:
    """Absolute paths (the tests' temporary folders) become ``<path>``; timings go."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if "second" not in k}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return "<path>" if isinstance(value, str) and value.startswith(os.sep) else value


def check(name: str, values: dict[str, Any], digests: dict[str, str]) -> None:
    """Compare with (or, when recording, write) ``golden/NAME.json``."""
    path = GOLDEN / f"{name}.json"
    got = _scrub(json.loads(json.dumps({"values": values, "digests": digests})))
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps({"machine": MACHINE, **got}, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(path.read_text())
    if want["machine"] == MACHINE:
        assert got["values"] == want["values"]
        assert got["digests"] == want["digests"]
    else:
        _close(got["values"], want["values"], name)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 tiny experts x 3 epochs on digits (1-channel 8x8), by the CLI."""
    out = tmp_path_factory.mktemp("experts")
    run_cli(
        ["distill", "experts", "--dataset", "digits", "--experts", "2", "--epochs", "3"]
        + ["--width", "6", "--depth", "2", "--batch-size", "64", "--lr", "0.01"]
        + ["--device", "cpu", "--out", out]
    )
    return out


@pytest.fixture(scope="module")
def images_run(experts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short `distill images` run with tracking evaluation (shared by evaluate below)."""
    out = tmp_path_factory.mktemp("images")
    run_cli(images_argv(experts, "unrolled") + ["--eval-every", "3", "--eval-epochs", "4"]
            + ["--eval-runs", "1", "--out", out])  # fmt: skip
    return out


def images_argv(experts: Path, memory: str) -> list[Any]:
    return ["distill", "images", "--experts", experts, "--ipc", "2", "--syn-steps", "4",
            "--expert-epochs", "1", "--max-start-epoch", "2", "--iterations", "6",
            "--lr-img", "100", "--memory", memory, "--device", "cpu"]  # fmt: skip


def test_experts(experts: Path) -> None:
    files = sorted(experts.glob("*.safetensors"))
    assert files
    check("experts_digits", {"files": [f.name for f in files]},
          {f.name: file_digest(f) for f in files})  # fmt: skip


@pytest.mark.parametrize("memory", ["unrolled", "constant", "tesla"])
def test_distill_images(experts: Path, tmp_path: Path, memory: str) -> None:
    run_cli(images_argv(experts, memory) + ["--eval-every", "0", "--out", tmp_path])
    check(f"images_{memory}", log_values(tmp_path / "log.parquet"),
          {"images": file_digest(tmp_path / "images.safetensors")})  # fmt: skip


def test_distill_images_with_tracking(images_run: Path) -> None:
    digests = {p.name: file_digest(p) for p in sorted(images_run.glob("*.safetensors"))}
    check("images_tracking", log_values(images_run / "log.parquet"), digests)


@pytest.mark.parametrize(
    "family,objective",
    [("free", "matching"), ("residual", "matching"), ("transform", "matching"),
     ("hallucinator", "matching"), ("courseproject", "matching"),
     ("residual", "matching-unbiased")],
)  # fmt: skip
def test_distill_augment(experts: Path, tmp_path: Path, family: str, objective: str) -> None:
    run_cli(["distill", "augment", "--experts", experts, "--phi", family, "--subset", "0.2",
             "--iterations", "4", "--syn-steps", "3", "--batch", "16", "--objective", objective,
             "--picture-every", "0", "--device", "cpu", "--out", tmp_path])  # fmt: skip
    digests = {p.name: file_digest(p) for p in sorted(tmp_path.glob("*.safetensors"))}
    check(f"augment_{family}_{objective}", log_values(tmp_path / "log.parquet"), digests)


def eval_values(path: Path) -> dict[str, Any]:
    result = json.loads(path.read_text())
    return {k: v for k, v in result.items() if "second" not in k and k not in ("config",)}


def test_evaluate_images(experts: Path, images_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    run_cli(["evaluate", images_run / "images.safetensors", "--experts", experts, "--runs", "2",
             "--epochs", "3", "--device", "cpu", "--out", out])  # fmt: skip
    check("evaluate_images", eval_values(out), {})


@pytest.mark.parametrize("augment", ["dsa", "none"])
def test_evaluate_subset(experts: Path, tmp_path: Path, augment: str) -> None:
    out = tmp_path / "eval.json"
    run_cli(["evaluate", "--experts", experts, "--subset", "0.2", "--augment", augment,
             "--runs", "1", "--epochs", "3", "--device", "cpu", "--out", out])  # fmt: skip
    check(f"evaluate_subset_{augment}", eval_values(out), {})


def test_evaluate_phi(experts: Path, tmp_path: Path) -> None:
    phi = tmp_path / "phi"
    run_cli(["distill", "augment", "--experts", experts, "--phi", "transform", "--subset", "0.2",
             "--iterations", "2", "--syn-steps", "3", "--batch", "16", "--picture-every", "0",
             "--device", "cpu", "--out", phi])  # fmt: skip
    out = tmp_path / "eval.json"
    run_cli(["evaluate", phi, "--augment", "dsa", "--runs", "1", "--epochs", "3",
             "--device", "cpu", "--out", out])  # fmt: skip
    check("evaluate_phi", eval_values(out), {})


def results_values(folder: Path) -> dict[str, Any]:
    frame = pd.read_parquet(folder / "results.parquet")
    frame = frame.drop(columns=[c for c in frame.columns if "second" in c])
    keys = [c for c in ("score", "policy", "trial", "budget") if c in frame.columns]
    frame = frame.sort_values(keys).reset_index(drop=True)
    values = {c: [_plain(v) for v in frame[c].tolist()] for c in frame.columns}
    base = json.loads((folder / "baselines.json").read_text())
    values["baselines"] = {k: v for k, v in base.items() if "second" not in k}
    return values


def test_subsample_demo(tmp_path: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "demo.yaml"
    run_cli(["subsample", "run", "--config", config, "--policies", "random,proportional",
             "--trials", "2", "--n-jobs", "1", "--no-plot", "--out", tmp_path])  # fmt: skip
    check("subsample_demo", results_values(tmp_path), {})


@pytest.mark.parametrize("refit", [False, True])
def test_subsample_trained_featurizer(tmp_path: Path, refit: bool) -> None:
    run_cli(["subsample", "run", "--dataset", "digits", "--classes", "3,8",
             "--featurizer", "smallcnn:epochs=1,batch_size=64", "--scores", "loss",
             "--policies", "random,downweight", "--budgets", "10,268", "--trials", "1",
             "--device", "cpu", "--no-progress", "--no-plot", "--out", tmp_path]
            + (["--featurizer-refit"] if refit else []))  # fmt: skip
    check(f"subsample_smallcnn{'_refit' if refit else ''}", results_values(tmp_path), {})


def test_end_to_end(tmp_path: Path) -> None:
    from leanaug.experiments.end_to_end import load_end_to_end_config, run_end_to_end

    cfg = load_end_to_end_config(
        None, dataset="digits", classes=[3, 8], n_train=40, augment="translate",
        score_featurizer="pixels", score_featurizer_params={},
        pairs=["influence/random", "loss/topk"], budgets=[5, 40], trials=1, steps=12,
        batch_size=16, device="cpu", out=str(tmp_path),
    )  # fmt: skip
    run_end_to_end(cfg, log=False, plots=False)
    check("end_to_end", results_values(tmp_path), {})


def test_tiny_mnist(official_files, tmp_path: Path) -> None:
    """The MNIST path (28x28, padding-3 ConvNet, the MNIST preprocessing) on synthetic
    IDX files: experts, then images."""
    folder, _ = official_files.mnist(n_train=60, n_test=20)
    experts = tmp_path / "experts"
    run_cli(["distill", "experts", "--dataset", "mnist", "--data-dir", folder, "--experts", "1",
             "--epochs", "2", "--width", "4", "--depth", "2", "--batch-size", "32",
             "--device", "cpu", "--out", experts])  # fmt: skip
    out = tmp_path / "images"
    run_cli(["distill", "images", "--experts", experts, "--data-dir", folder, "--ipc", "1",
             "--syn-steps", "3", "--expert-epochs", "1", "--max-start-epoch", "1",
             "--iterations", "3", "--eval-every", "0", "--device", "cpu", "--out", out])  # fmt: skip
    digests = {p.name: file_digest(p) for p in sorted(experts.glob("*.safetensors"))}
    digests["images"] = file_digest(out / "images.safetensors")
    check("tiny_mnist", log_values(out / "log.parquet"), digests)
