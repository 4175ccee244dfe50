"""Preprocessing (normalisation, ZCA) and expert trajectories: format, resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from leanaug.cli.main import main
from leanaug.data import load_dataset
from leanaug.distill.experts import (
    build_network,
    expert_path,
    load_config,
    load_dataset_for,
    load_expert,
    load_experts,
    load_preprocessor,
    train_experts,
)
from leanaug.distill.networks import FlatModel
from leanaug.distill.preprocess import Preprocessor
from leanaug.distill.training import accuracy
from leanaug.errors import DataError, LeanaugError

TINY = dict(width=8, depth=2, lr=0.1, batch_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: a second intra-op thread only adds synchronisation, which costs ~10x
    # on a loaded 2-core machine. Results do not depend on the thread count.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=400, subset="random", seed=0)


# ------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("zca", [False, True])
def test_preprocess_inverse_and_round_trip(digits, tmp_path: Path, zca: bool) -> None:
    pre = Preprocessor(zca=zca).fit(digits.train_images)
    x = pre.transform(digits.train_images)
    raw = torch.as_tensor(digits.train_images).float() / 255
    torch.testing.assert_close(pre.inverse_transform(x), raw, atol=1e-4, rtol=0)
    if not zca:  # per-channel normalisation: mean 0, std 1 on the training set
        assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again.config() == pre.config()
    assert torch.equal(again.transform(digits.test_images), pre.transform(digits.test_images))


def test_zca_matches_numpy_formula(digits) -> None:
    pre = Preprocessor(zca=True, zca_eps=0.1).fit(digits.train_images)
    raw = digits.train_images.astype(np.float64) / 255
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3), ddof=1)
    flat = ((raw - mean[None, :, None, None]) / std[None, :, None, None]).reshape(len(raw), -1)
    centred = flat - flat.mean(0)
    s, u = np.linalg.eigh(np.cov(centred, rowvar=False))
    whiten = u @ np.diag(1 / np.sqrt(np.clip(s, 0, None) + 0.1)) @ u.T
    expected = (centred @ whiten).reshape(raw.shape)
    got = pre.transform(digits.train_images).double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_preprocess_errors(tmp_path: Path) -> None:
    with pytest.raises(LeanaugError, match="uint8"):
        Preprocessor().fit(np.zeros((4, 1, 2, 2), dtype=np.float32))
    with pytest.raises(LeanaugError, match="not fitted"):
        Preprocessor().transform(np.zeros((4, 1, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="no saved preprocessing"):
        Preprocessor.load(tmp_path)


# ------------------------------------------------------------------ experts
def test_resume_gives_the_same_trajectory(digits, tmp_path: Path) -> None:
    whole = train_experts(
        digits, tmp_path / "a", experts=1, epochs=3, progress=False, device="cpu", **TINY
    )
    train_experts(digits, tmp_path / "b", experts=1, epochs=2, progress=False, device="cpu", **TINY)
    assert load_expert(expert_path(tmp_path / "b", 0)).epochs_done == 2
    resumed = train_experts(
        digits, tmp_path / "b", experts=1, epochs=3, progress=False, device="cpu", **TINY
    )
    assert torch.equal(whole[0].trajectory, resumed[0].trajectory)
    assert whole[0].test_accuracy == resumed[0].test_accuracy
    assert load_config(tmp_path / "b")["epochs"] == 3
    # a finished run started again changes nothing
    again = train_experts(
        digits, tmp_path / "b", experts=1, epochs=3, progress=False, device="cpu", **TINY
    )
    assert torch.equal(again[0].trajectory, whole[0].trajectory)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_experts_follow_the_eager_trajectory(digits, tmp_path: Path) -> None:
    # the same seeds and batches: equal to float32 rounding (not bit for bit); 400 images
    # in batches of 64 end with a smaller batch, the second compiled shape
    kw = dict(experts=1, epochs=2, progress=False, device="cpu", **TINY)
    from torch._dynamo.utils import counters

    eager = train_experts(digits, tmp_path / "eager", **kw)[0]
    graphs = counters["stats"]["unique_graphs"]
    fast = train_experts(digits, tmp_path / "compiled", compile=True, **kw)[0]
    assert counters["stats"]["unique_graphs"] > graphs  # it did compile
    assert fast.trajectory.shape == eager.trajectory.shape
    torch.testing.assert_close(fast.trajectory, eager.trajectory, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.train_loss, eager.train_loss, rtol=1e-4)
    # a run is resumable either way: compile is not part of the config
    again = train_experts(digits, tmp_path / "compiled", **{**kw, "epochs": 3})[0]
    torch.testing.assert_close(again.trajectory[:3], fast.trajectory, rtol=0, atol=0)


def test_expert_file_format(digits, tmp_path: Path) -> None:
    train_experts(digits, tmp_path, experts=2, epochs=2, progress=False, device="cpu", **TINY)
    experts = load_experts(tmp_path)
    assert len(experts) == 2
    cfg = load_config(tmp_path)
    net = build_network(cfg["network"])
    flat = FlatModel(net)
    with safe_open(str(expert_path(tmp_path, 0)), framework="pt") as f:
        assert list(f.keys()) == ["trajectory"]
        assert json.loads(f.metadata()["test_accuracy"]) == experts[0].test_accuracy
    pre = load_preprocessor(tmp_path)
    test_x, test_y = pre.transform(digits.test_images), torch.as_tensor(digits.test_labels)
    for e in experts:
        assert e.trajectory.dtype == torch.float32 and e.trajectory.shape == (3, flat.size)
        assert len(e.test_accuracy) == 2 and len(e.train_loss) == 2
        # the stored parameters reproduce the stored test accuracy exactly
        flat.load_into_module(e.trajectory[-1])
        assert accuracy(net, test_x, test_y) == e.test_accuracy[-1]
        assert not torch.equal(e.trajectory[0], e.trajectory[1])  # training moved the parameters
    assert not torch.equal(experts[0].trajectory[0], experts[1].trajectory[0])  # distinct inits
    assert experts[0].test_accuracy[-1] > 0.25  # 10 classes: chance is 0.1
    assert cfg["training"]["momentum"] == 0.0 and cfg["training"]["weight_decay"] == 0.0
    assert cfg["dataset"]["n_train_images"] == 400


def test_config_mismatch_is_a_clear_error(digits, tmp_path: Path) -> None:
    train_experts(digits, tmp_path, experts=1, epochs=1, progress=False, device="cpu", **TINY)
    with pytest.raises(LeanaugError, match=r"network\.width: 8 there, 16 now"):
        train_experts(
            digits,
            tmp_path,
            experts=1,
            epochs=1,
            progress=False,
            device="cpu",
            **{**TINY, "width": 16},
        )
    other = load_dataset("digits", n_train=300, subset="random", seed=0)
    with pytest.raises(LeanaugError, match="train_sha256"):
        train_experts(other, tmp_path, experts=1, epochs=1, progress=False, device="cpu", **TINY)


def test_missing_or_empty_experts_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_experts(tmp_path / "nope")
    with pytest.raises(DataError, match="no config.json"):
        load_experts(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "leanaug-experts/1"}))
    with pytest.raises(DataError, match="no expert files"):
        load_experts(tmp_path)


def run_cli(argv: list[str]) -> None:
    """``leanaug ARGV`` in this process; success may return or raise ``SystemExit(0)``."""
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def _rows(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("trajectory").get_shape()[0]
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """A real kill (SIGKILL after the first epoch's file appears), then the same command."""
    args = ["distill", "experts", "--dataset", "digits", "--n-train", "200", "--experts", "1"]
    args += ["--epochs", "8", "--width", "8", "--depth", "2", "--lr", "0.1", "--batch-size", "64"]
    args += ["--device", "cpu"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leanaug", *args, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path = expert_path(killed, 0)
    deadline = time.monotonic() + 120
    while _rows(path) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    done = _rows(path) - 1
    assert 1 <= done < 8, f"the run was not interrupted mid-way ({done} epochs done)"
    run_cli([*args, "--out", str(killed)])
    run_cli([*args, "--out", str(tmp_path / "whole")])
    resumed, whole = load_expert(path), load_expert(expert_path(tmp_path / "whole", 0))
    assert resumed.epochs_done == 8
    assert torch.equal(resumed.trajectory, whole.trajectory)
    assert resumed.test_accuracy == whole.test_accuracy
    assert not list(killed.glob(".expert_*"))  # the killed run's temp files are gone


def test_cli_experts_with_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "experts.yaml"
    config.write_text(
        "dataset: digits\nn-train: 200\nexperts: 1\nepochs: 5\nwidth: 8\ndepth: 2\nlr: 0.05\n"
    )
    out = tmp_path / "experts"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "distill",
                "experts",
                "--config",
                str(config),
                "--epochs",
                "1",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
    assert exit_info.value.code in (0, None)
    cfg = load_config(out)
    assert cfg["epochs"] == 1  # the flag wins over the file
    assert cfg["network"]["width"] == 8 and cfg["dataset"]["n_train"] == 200
    assert load_dataset_for(cfg).train_images.shape[0] == 200
    assert "final test accuracy" in capsys.readouterr().out
    config.write_text("dataset: digits\nwidth: eight\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "experts", "--config", str(config), "--out", str(out)])
    assert exit_info.value.code == 2
    assert "width = 'eight' is not a int" in capsys.readouterr().err
    config.write_text("datset: digits\n")
    with pytest.raises(SystemExit):
        main(["distill", "experts", "--config", str(config), "--out", str(out)])
    assert "unknown option 'datset'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "distill",
                "experts",
                "--dataset",
                "nosuch",
                "--experts",
                "1",
                "--epochs",
                "1",
                "--out",
                "{tmp}/x",
            ],
            "unknown",
        ),
        (
            ["distill", "experts", "--dataset", "digits", "--epochs", "1", "--out", "{tmp}/x"],
            "missing --experts",
        ),
        (["distill", "experts", "--config", "{tmp}/none.yaml"], "no such file"),
        (["evaluate", "full", "--experts", "{tmp}/missing"], "does not exist"),
        (["evaluate", "full"], "give --experts"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err


# ------------------------------------------------------------------ first padding (issue 18.1)
def test_literature_convnet_for_28x28x1_pads_its_first_convolution_by_3() -> None:
    """28 -> 32 -> 16 -> 8 -> 4: the head sees 4 x 4 x width (padding 1 gave 28 -> 14 -> 7 -> 3,
    the last pooling dropping a row and a column)."""
    from leanaug.distill.networks import ConvNet, literature_first_padding

    assert literature_first_padding(1, (28, 28)) == 3
    assert literature_first_padding(3, (32, 32)) == 1 and literature_first_padding(1, (8, 8)) == 1
    net = ConvNet(1, 10, (28, 28), width=16, first_padding=3)
    x = torch.zeros(2, 1, 28, 28)
    sizes = []
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d | torch.nn.AvgPool2d):
            sizes.append(tuple(x.shape[2:]))
    assert sizes == [(32, 32), (16, 16), (16, 16), (8, 8), (8, 8), (4, 4)]
    assert net.classifier.in_features == 16 * 4 * 4
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert ConvNet(1, 10, (28, 28), width=16).classifier.in_features == 16 * 3 * 3  # padding 1


def test_mnist_like_experts_default_to_padding_3_and_old_folders_load_as_they_were(
    tmp_path: Path,
) -> None:
    from leanaug.data.base import ImageDataset
    from leanaug.distill.experts import expert_config

    rng = np.random.default_rng(0)
    fake = ImageDataset(
        name="fake28",
        train_images=rng.integers(0, 256, (20, 1, 28, 28), dtype=np.uint8),
        train_labels=np.arange(20, dtype=np.int64) % 10,
        test_images=rng.integers(0, 256, (10, 1, 28, 28), dtype=np.uint8),
        test_labels=np.arange(10, dtype=np.int64),
        class_names=tuple(str(i) for i in range(10)),
    )
    cfg = expert_config(fake, experts=1, epochs=1, width=8)
    assert cfg["network"]["first_padding"] == 3
    assert build_network(cfg["network"]).classifier.in_features == 8 * 4 * 4
    # a config.json written before the setting existed: the padding-1 network it was
    old = {k: v for k, v in cfg["network"].items() if k != "first_padding"}
    assert build_network(old).classifier.in_features == 8 * 3 * 3
    assert (
        expert_config(fake, experts=1, epochs=1, first_padding=1)["network"]["first_padding"] == 1
    )


# ------------------------------------------------------------------ float16 storage (issue 18.2)
def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no items()


def test_float16_trajectories_round_the_float32_ones_and_resume_exactly(
    digits, tmp_path: Path
) -> None:
    kw = dict(experts=1, progress=False, device="cpu", **TINY)
    full = train_experts(digits, tmp_path / "f32", epochs=4, **kw)[0]
    half = train_experts(digits, tmp_path / "f16", epochs=4, dtype="float16", **kw)[0]
    stored = _tensors(expert_path(tmp_path / "f16", 0))
    assert stored["trajectory"].dtype == torch.float16 and stored["last"].dtype == torch.float32
    loaded = load_expert(expert_path(tmp_path / "f16", 0))
    assert loaded.trajectory.dtype == torch.float32 and loaded.trajectory.shape == (
        5,
        full.num_parameters,
    )
    # training is float32 either way: the float16 rows are the float32 rows rounded
    torch.testing.assert_close(loaded.trajectory, full.trajectory, rtol=2**-11, atol=6e-8)
    assert torch.equal(loaded.trajectory, full.trajectory.half().float())
    assert torch.equal(loaded.last, full.trajectory[-1])
    assert loaded.test_accuracy == full.test_accuracy
    assert torch.equal(half.trajectory, loaded.trajectory)
    assert load_config(tmp_path / "f16")["trajectory_dtype"] == "float16"
    # an interrupted float16 run (2 epochs) continued to 4 ends with the same file
    train_experts(digits, tmp_path / "resumed", epochs=2, dtype="float16", **kw)
    train_experts(digits, tmp_path / "resumed", epochs=4, dtype="float16", **kw)
    again = _tensors(expert_path(tmp_path / "resumed", 0))
    assert again.keys() == stored.keys()
    assert all(torch.equal(again[k], stored[k]) for k in stored)
    size = expert_path(tmp_path / "f16", 0).stat().st_size
    # 5 float16 rows + the float32 last row: (5 * 2 + 4) / (5 * 4) = 0.7 of the bytes
    assert size < 0.72 * expert_path(tmp_path / "f32", 0).stat().st_size


def test_resume_with_another_dtype_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["distill", "experts", "--dataset", "digits", "--n-train", "200", "--experts", "1"]
    args += ["--epochs", "1", "--width", "8", "--depth", "2", "--device", "cpu"]
    args += ["--out", str(tmp_path / "e")]
    run_cli([*args, "--dtype", "float16"])
    for dtype, message in (("float32", "stores trajectories as float16"), ("int8", "'int8'")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--dtype", dtype])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and message in err, err


def test_compacted_folder_loads_and_matches(
    digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leanaug.distill.matching import TrajectoryMatching

    spec = {"name": "digits", "n_train": 400, "subset": "random", "seed": 0}  # the fixture's
    kw = dict(experts=2, progress=False, device="cpu", dataset_spec=spec, **TINY)
    src, dst = tmp_path / "src", tmp_path / "dst"
    full = train_experts(digits, src, epochs=4, **kw)
    capsys.readouterr()
    run_cli(["distill", "compact-experts", str(src), "--out", str(dst), "--epochs", "2"])
    printed = capsys.readouterr().out
    assert "MiB ->" in printed and "epochs 0..2" in printed, printed
    small = load_experts(dst)
    assert len(small) == 2
    for e, f in zip(small, full, strict=True):
        assert e.trajectory.shape == (3, f.num_parameters) and e.trajectory.dtype == torch.float32
        assert torch.equal(e.trajectory, f.trajectory[:3].half().float())
        assert e.test_accuracy == f.test_accuracy[:2] and torch.equal(e.last, f.trajectory[2])
    cfg = load_config(dst)
    assert cfg["epochs"] == 2 and cfg["trajectory_dtype"] == "float16"
    assert load_preprocessor(dst).config() == load_preprocessor(src).config()
    sizes = [sum(expert_path(d, i).stat().st_size for i in range(2)) for d in (src, dst)]
    # 3 of 5 rows at half the bytes + the float32 last row: (3 * 2 + 4) / (5 * 4) = 0.5
    assert sizes[1] < 0.52 * sizes[0]
    est = TrajectoryMatching(
        ipc=1, syn_steps=2, expert_epochs=1, max_start_epoch=2, iterations=2,
        eval_every=0, device="cpu",
    )  # fmt: skip
    est.fit(dst, tmp_path / "mtt", progress=False)
    assert (tmp_path / "mtt" / "images.safetensors").exists()
    # from a float32 source the exact row K is kept: the copy extends like the original
    longer = train_experts(digits, dst, epochs=3, dtype="float16", **kw)
    assert torch.equal(longer[1].trajectory, full[1].trajectory[:4].half().float())
    # a float16 source cut before its end has no exact last row: extending it is refused
    run_cli(
        ["distill", "compact-experts", str(dst), "--out", str(tmp_path / "cut"), "--epochs", "1"]
    )
    assert load_expert(expert_path(tmp_path / "cut", 0)).last is None
    with pytest.raises(LeanaugError, match="stored only as float16"):
        train_experts(digits, tmp_path / "cut", epochs=2, dtype="float16", **kw)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "compact-experts", str(src), "--out", str(dst)])
    assert exit_info.value.code == 2 and "already holds experts" in capsys.readouterr().err
