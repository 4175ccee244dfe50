"""Evaluation protocol, image-set files, random real subsets and the ``evaluate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leanaug.cli.main import main
from leanaug.data import load_dataset
from leanaug.distill.evaluate import (
    EvalResult,
    evaluate_images,
    load_image_set,
    random_real_indices,
    save_image_set,
)
from leanaug.distill.experts import load_preprocessor, train_experts
from leanaug.distill.networks import NETWORKS, evaluation_network
from leanaug.distill.preprocess import Preprocessor
from leanaug.errors import DataError, LeanaugError

NET = {"name": "convnet", "in_channels": 1, "num_classes": 10, "image_size": [8, 8]}
NET.update(width=8, depth=2, norm="instancenorm")


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
    ds = load_dataset("digits")
    pre = Preprocessor().fit(ds.train_images)
    return ds, pre


@pytest.fixture(scope="module")
def experts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experts")
    ds = load_dataset("digits", n_train=300, subset="random", seed=0)
    spec = {"n_train": 300, "subset": "random", "seed": 0}  # how load_dataset_for reloads it
    train_experts(
        ds,
        out,
        experts=1,
        epochs=1,
        width=8,
        depth=2,
        lr=0.05,
        progress=False,
        device="cpu",
        dataset_spec=spec,
    )
    return out


def run_cli(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_evaluate_images_learns_and_is_reproducible(digits) -> None:
    ds, pre = digits
    idx = random_real_indices(ds.train_labels, 20, 0)
    x, y = pre.transform(ds.train_images[idx]), torch.as_tensor(ds.train_labels[idx])
    test_x, test_y = pre.transform(ds.test_images), torch.as_tensor(ds.test_labels)
    kw = dict(
        network_config=NET, lr=0.2, epochs=60, runs=2, batch_size=256, device="cpu", eval_every=10
    )
    result = evaluate_images(x, y, test_x, test_y, **kw)
    assert result.runs == 2
    assert all(0.5 < a <= 1.0 for a in result.final_accuracy), result.final_accuracy  # chance: 0.1
    assert [e for e, _ in result.curves[0]] == [10, 20, 30, 40, 50, 60]
    for final, best, curve in zip(
        result.final_accuracy, result.best_accuracy, result.curves, strict=True
    ):
        assert best == max(a for _, a in curve) >= final == curve[-1][1]
    assert result.final_accuracy[0] != result.final_accuracy[1]  # two fresh networks
    assert result.final_mean == pytest.approx(np.mean(result.final_accuracy))
    assert result.final_std == pytest.approx(np.std(result.final_accuracy))
    assert result.config["lr_decay"] == {"factor": 0.1, "at_epoch": 30}
    again = evaluate_images(x, y, test_x, test_y, **{**kw, "runs": 1})  # run 0 again
    assert (
        again.final_accuracy[0] == result.final_accuracy[0] and again.curves[0] == result.curves[0]
    )
    # no augmentation at all gives a different (still learned) result
    plain = evaluate_images(x, y, test_x, test_y, **{**kw, "runs": 1}, dsa=False)
    assert plain.curves[0] != result.curves[0] and plain.final_accuracy[0] > 0.5
    d = result.to_dict()
    assert d["best_epoch_mean"] == result.best_mean and len(d["curves"]) == 2
    json.dumps(d)


def test_evaluate_random_real_draws_a_subset_per_run(digits) -> None:
    """Run r of the random-real baseline is evaluate_images on random_real_indices(.., r)."""
    from leanaug.distill.evaluate import evaluate_random_real

    ds, pre = digits
    test_x, test_y = pre.transform(ds.test_images), torch.as_tensor(ds.test_labels)
    kw = dict(epochs=20, batch_size=256, device="cpu", eval_every=10, seed=3)
    both = evaluate_random_real(
        ds.train_images, ds.train_labels, pre.transform, 5, test_x, test_y, NET, 0.2, runs=2, **kw
    )
    assert both.runs == 2 and "fresh random subset" in both.config["subsets"]
    for r in range(2):
        idx = random_real_indices(ds.train_labels, 5, 3, r)
        one = evaluate_images(
            pre.transform(ds.train_images[idx]),
            torch.as_tensor(ds.train_labels[idx]),
            test_x,
            test_y,
            NET,
            0.2,
            runs=1,
            run_offset=r,
            **kw,
        )
        assert one.curves[0] == both.curves[r]
    second = evaluate_random_real(
        ds.train_images,
        ds.train_labels,
        pre.transform,
        5,
        test_x,
        test_y,
        NET,
        0.2,
        runs=1,
        run_offset=1,
        **kw,
    )
    assert second.curves[0] == both.curves[1]
    assert not np.array_equal(
        random_real_indices(ds.train_labels, 5, 3, 0), random_real_indices(ds.train_labels, 5, 3, 1)
    )


def test_evaluate_images_rejects_bad_settings(digits) -> None:
    ds, pre = digits
    x, y = pre.transform(ds.train_images[:10]), torch.as_tensor(ds.train_labels[:10])
    with pytest.raises(LeanaugError, match="positive"):
        evaluate_images(x, y, x, y, NET, lr=-0.01, epochs=1, runs=1, device="cpu")
    with pytest.raises(LeanaugError, match="labels"):
        evaluate_images(x, y[:5], x, y, NET, lr=0.01, epochs=1, runs=1, device="cpu")


def test_merge_concatenates_runs() -> None:
    a = EvalResult([0.5], [0.6], [3], [[(3, 0.6), (4, 0.5)]], {"k": 1}, 1.0)
    b = EvalResult([0.7], [0.7], [4], [[(3, 0.6), (4, 0.7)]], {"k": 1}, 2.0)
    m = EvalResult.merge([a, b])
    assert (
        m.final_accuracy == [0.5, 0.7] and m.best_accuracy == [0.6, 0.7] and m.wall_seconds == 3.0
    )
    assert m.final_mean == pytest.approx(0.6) and m.final_std == pytest.approx(0.1)


def test_random_real_indices() -> None:
    labels = np.repeat(np.arange(3), [5, 7, 9])
    idx = random_real_indices(labels, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 4, 4] and len(set(idx.tolist())) == 12
    assert np.array_equal(idx, random_real_indices(labels, 4, seed=0))
    assert not np.array_equal(idx, random_real_indices(labels, 4, 0, "run", 1))
    with pytest.raises(LeanaugError, match="fewer than 6"):
        random_real_indices(labels, 6, seed=0)


def test_image_set_round_trip(tmp_path: Path) -> None:
    images = torch.randn(6, 3, 4, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    path = save_image_set(
        tmp_path / "syn.safetensors", images, labels, lr=torch.tensor(0.0123), metadata={"ipc": 2}
    )
    s = load_image_set(path)
    assert (
        torch.equal(s.images, images)
        and torch.equal(s.labels, labels)
        and s.labels.dtype == torch.int64
    )
    assert s.lr == pytest.approx(0.0123) and s.metadata == {"ipc": 2}
    soft = torch.softmax(torch.randn(6, 3), 1)
    s = load_image_set(save_image_set(tmp_path / "soft.safetensors", images, soft))
    assert torch.equal(s.labels, soft) and s.lr is None
    with pytest.raises(DataError, match="does not exist"):
        load_image_set(tmp_path / "none.safetensors")
    with pytest.raises(DataError, match="labels must be"):
        save_image_set(tmp_path / "bad.safetensors", images, labels[:3])
    with pytest.raises(DataError, match="NaN"):
        save_image_set(tmp_path / "bad.safetensors", images * float("nan"), labels)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a readable"):
        load_image_set(tmp_path / "junk.safetensors")


def test_cli_evaluate_random_file_and_full(experts_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["--runs", "2", "--epochs", "3", "--batch-size", "64", "--device", "cpu"]
    run_cli(
        [
            "evaluate",
            "random:2",
            "--experts",
            str(experts_dir),
            *common,
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == "random:2" and len(report["final_accuracy"]) == 2
    assert (
        report["lr"] == 0.05
        and report["lr_source"] == "experts"
        and report["config"]["n_train"] == 20
    )
    out = capsys.readouterr().out
    assert "random:2: final test accuracy" in out and "best-epoch test accuracy" in out

    # a distilled image file in the experts' preprocessed space, with a learned lr
    ds = load_dataset("digits", n_train=300, subset="random", seed=0)
    pre = load_preprocessor(experts_dir)
    idx = random_real_indices(ds.train_labels, 1, 0)
    syn = tmp_path / "syn.safetensors"
    save_image_set(
        syn, pre.transform(ds.train_images[idx]), torch.as_tensor(ds.train_labels[idx]), lr=0.02
    )
    run_cli(["evaluate", str(syn), "--experts", str(experts_dir), *common])
    report = json.loads((tmp_path / "syn.eval.json").read_text())  # default: next to the file
    assert report["lr"] == pytest.approx(0.02) and report["lr_source"] == "file"
    assert report["config"]["n_train"] == 10

    (tmp_path / "reports").mkdir()
    run_cli(
        [
            "evaluate",
            "full",
            "--dataset",
            "digits",
            "--n-train",
            "100",
            "--width",
            "8",
            "--depth",
            "2",
        ]
        + [*common, "--runs", "1", "--lr", "0.03", "--out", str(tmp_path / "reports")]
    )
    report = json.loads((tmp_path / "reports" / "eval-full.json").read_text())
    assert report["config"]["n_train"] == 100 and report["lr_source"] == "--lr"


def test_cli_evaluate_bad_input(experts_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    save_image_set(bad, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    for argv, message in [
        ([str(bad), "--experts", str(experts_dir)], "the network expects (1, 8, 8)"),
        ([str(tmp_path / "none.safetensors"), "--experts", str(experts_dir)], "does not exist"),
        (["random:0", "--experts", str(experts_dir)], "at least 1 image"),
        (["random:500", "--experts", str(experts_dir)], "fewer than 500"),
        (["full", "--dataset", "nosuch"], "unknown data set"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", *argv, "--runs", "1", "--epochs", "1", "--device", "cpu"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and message in err, err


ARCHITECTURES = ["convnet", "convnet-bn", "resnet18", "vgg11", "alexnet"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_architectures_build_and_train(architecture: str, shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    experts_net = {"name": "convnet", "in_channels": c, "num_classes": 3, "image_size": [h, w]}
    experts_net.update(width=8, depth=3, norm="instancenorm", first_padding=3 if c == 1 else 1)
    cfg = evaluation_network(experts_net, architecture, width=2)
    assert cfg["name"] == architecture and cfg["width"] == 2
    assert (cfg["in_channels"], cfg["num_classes"], list(cfg["image_size"])) == (c, 3, [h, w])
    module = NETWORKS.get(architecture)(**{k: v for k, v in cfg.items() if k != "name"})
    assert module(torch.zeros(2, *shape)).shape == (2, 3)
    if architecture == "convnet-bn":
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, *shape, generator=gen), torch.tensor([0, 1, 2] * 2)
    result = evaluate_images(
        x, y, x, y, cfg, lr=0.01, epochs=2, runs=1, batch_size=3, dsa=False, device="cpu"
    )
    assert result.config["network"]["name"] == architecture
    assert len(result.curves[0]) == 2 and 0.0 <= result.final_mean <= 1.0


def test_evaluation_network_defaults_to_the_experts_own() -> None:
    assert evaluation_network(NET) == NET and evaluation_network(NET, "convnet") == NET
    assert evaluation_network(NET, width=4) == {**NET, "width": 4}
    bn = evaluation_network({**NET, "first_padding": 1}, "convnet-bn")
    assert bn["width"] == 8 and bn["depth"] == 2 and "norm" not in bn
    with pytest.raises(LeanaugError, match="valid names: alexnet, convnet, convnet-bn"):
        evaluation_network(NET, "resnet50")
    with pytest.raises(LeanaugError, match="vgg11 needs larger images"):
        NETWORKS.get("vgg11")(1, 10, (8, 8))


def test_cli_evaluate_network(experts_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["--runs", "1", "--epochs", "1", "--batch-size", "64", "--device", "cpu"]
    run_cli(
        ["evaluate", "random:2", "--experts", str(experts_dir), "--network", "alexnet"]
        + ["--network-width", "2", *common, "--out", str(tmp_path / "a.json")]
    )
    network = json.loads((tmp_path / "a.json").read_text())["config"]["network"]
    assert network == {
        "name": "alexnet",
        "in_channels": 1,
        "num_classes": 10,
        "image_size": [8, 8],
        "width": 2,
    }
    run_cli(["evaluate", "random:2", "--experts", str(experts_dir), *common])
    default = json.loads((experts_dir / "eval-random-2.json").read_text())["config"]["network"]
    assert default["name"] == "convnet" and default["width"] == 8  # the experts' own
    capsys.readouterr()
    for flag, message in [
        (
            ["--network", "resnet50"],
            "unknown network 'resnet50'; valid names: alexnet, convnet, "
            "convnet-bn, resnet18, vgg11",
        ),
        (["--network-width", "0"], "--network-width must be at least 1"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", "random:2", "--experts", str(experts_dir), *flag, *common])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and message in err, err
