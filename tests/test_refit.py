"""``subsample run --featurizer-refit``: the reference's MNIST protocol, a featurizer
trained from scratch on every fit's rows (digits 3 vs 8, a 1-epoch small CNN)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leanaug.augment import preset, to_float
from leanaug.cli.main import main
from leanaug.data import load_dataset
from leanaug.experiments import RESULT_COLUMNS
from leanaug.experiments.refit import RefitFitter, RefitImages
from leanaug.experiments.runner import FeatureSet, FrozenFitter
from leanaug.features import PixelFeaturizer, SmallCNNFeaturizer
from leanaug.features.trained import TrainedNetFeaturizer
from leanaug.policies import Selection, SelectionProblem, augmented_training_set
from leanaug.results import read_json, read_parquet, write_parquet

N = 268  # training images of digits 3 and 8
K = 4  # translate: 4 copies
BUDGETS = [10, N]
ARGS = ["subsample", "run", "--dataset", "digits", "--classes", "3,8",
        "--featurizer", "smallcnn:epochs=1,batch_size=64", "--scores", "loss",
        "--policies", "random,downweight", "--budgets", "10,268", "--trials", "1",
        "--device", "cpu", "--no-progress"]  # fmt: skip


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same configuration run by the refit protocol and by the frozen one."""
    root = tmp_path_factory.mktemp("refit")
    with (
        pytest.MonkeyPatch.context() as mp
    ):  # module scope: the autouse cache fixture is not on yet
        mp.setenv("LEANAUG_CACHE", str(root / "cache"))
        run([*ARGS, "--featurizer-refit", "--out", str(root / "refit")])
        run([*ARGS, "--no-plot", "--out", str(root / "frozen")])
    return {"refit": root / "refit", "frozen": root / "frozen"}


@pytest.fixture(scope="module")
def digits38() -> RefitImages:
    ds = load_dataset("digits", classes=[3, 8])
    return RefitImages(
        ds.train_images, ds.train_labels, ds.test_images, ds.test_labels,
        preset("digits", "translate"),
    )  # fmt: skip


def count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of TrainedNetFeaturizer._train from now on (the list's length)."""
    calls: list[int] = []
    train = TrainedNetFeaturizer._train

    def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        return train(self, *args, **kwargs)

    monkeypatch.setattr(TrainedNetFeaturizer, "_train", counting)
    return calls


# -- end to end ----------------------------------------------------------------------------
def test_refit_run_end_to_end_on_digits(runs: dict[str, Path], capsys) -> None:
    out = runs["refit"]
    res = read_parquet(out / "results.parquet")
    assert list(res.columns) == RESULT_COLUMNS
    assert len(res) == 2 * len(BUDGETS)  # random, downweight (1 trial) x 2 budgets
    assert (res["n_train_rows"] == N + K * res["budget"]).all()
    base = read_json(out / "baselines.json")
    assert base["protocol"] == "featurizer-refit"
    assert base["no_augmentation"]["n_train_rows"] == N
    assert base["full_augmentation"]["n_train_rows"] == N * (K + 1)
    assert yaml.safe_load((out / "config.yaml").read_text())["featurizer_refit"] is True
    # common random numbers: the same rows train the same net, so budget = n (uniform
    # weights) is the full-augmentation baseline exactly; downweight's weights differ
    full = res[(res["budget"] == N) & (res["policy"] == "random")].iloc[0]
    for key in ("accuracy", "accuracy_augmented_test"):
        assert full[key] == base["full_augmentation"][key], key
    # the refit changes the features: augmenting trains the CNN on the copies too
    frozen = read_json(runs["frozen"] / "baselines.json")
    assert frozen["protocol"] == "frozen-featurizer"
    assert base["no_augmentation"] == frozen["no_augmentation"]  # the clean net is the frozen one
    assert (
        base["full_augmentation"]["accuracy_augmented_test"]
        != frozen["full_augmentation"]["accuracy_augmented_test"]
    )
    frozen_res = read_parquet(runs["frozen"] / "results.parquet")
    assert not np.array_equal(
        res["accuracy_augmented_test"].to_numpy(), frozen_res["accuracy_augmented_test"].to_numpy()
    )
    # the scores come from the clean fit in both protocols
    pd.testing.assert_frame_equal(
        read_parquet(out / "scores.parquet"), read_parquet(runs["frozen"] / "scores.parquet")
    )
    code, stdout, err = cli(["subsample", "plot", str(out)], capsys)
    assert code == 0, err
    assert "featurizer retrained for every fit (the reference's MNIST protocol)" in stdout
    assert (out / "accuracy.png").is_file()


def test_rerun_trains_nothing_and_resume_trains_only_missing_units(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    calls = count_trainings(monkeypatch)
    code, stdout, err = cli([*ARGS, "--featurizer-refit", "--out", str(runs["refit"])], capsys)
    assert code == 0, err
    assert "0 of 2 units run (2 already finished)" in stdout and "0 featurizer trainings" in stdout
    assert "Protocol: featurizer retrained for every fit" in stdout
    assert calls == []
    # killed after the first unit: only the missing unit's budgets are trained again, and
    # they come out as before (same nets)
    out = tmp_path / "resumed"
    shutil.copytree(runs["refit"], out)
    whole = read_parquet(out / "results.parquet")
    write_parquet(out / "results.parquet", whole[whole["policy"] == "random"])
    code, stdout, err = cli([*ARGS, "--featurizer-refit", "--out", str(out)], capsys)
    assert code == 0, err
    assert len(calls) == len(BUDGETS) and f"{len(BUDGETS)} featurizer trainings" in stdout
    drop = ["seconds"]
    pd.testing.assert_frame_equal(
        read_parquet(out / "results.parquet").drop(columns=drop), whole.drop(columns=drop)
    )


def test_protocol_is_part_of_the_configuration(runs: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "frozen"
    shutil.copytree(runs["frozen"], out)
    code, _, err = cli([*ARGS, "--featurizer-refit", "--out", str(out)], capsys)
    assert code == 2 and "differs in: featurizer_refit" in err and err.count("\n") == 1
    # a folder written before the field existed is a frozen run and still resumes
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    del cfg["featurizer_refit"]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, stdout, err = cli([*ARGS, "--no-plot", "--out", str(out)], capsys)
    assert code == 0 and "0 of 2 units run" in stdout and "Protocol: frozen featurizer" in stdout


@pytest.mark.parametrize(
    ("featurizer", "message"),
    [
        ("pixels", "'pixels' is not a trained network (use resnet or smallcnn)"),
        ("smallcnn:weights=net.safetensors", "smallcnn with weights= loads a fixed net"),
        ("resnet:pretrain_dataset=cifar10", "resnet with pretrain_dataset=cifar10 trains on that"),
    ],
)
def test_refit_needs_a_featurizer_trained_on_the_rows(tmp_path, capsys, featurizer, message):
    args = [*ARGS, "--featurizer", featurizer, "--featurizer-refit", "--out", str(tmp_path / "o")]
    code, _, err = cli(args, capsys)
    assert code == 2 and err.startswith("error: --featurizer-refit") and err.count("\n") == 1
    assert message in err, err


def test_yaml_key(tmp_path: Path) -> None:
    from leanaug.errors import LeanaugError
    from leanaug.experiments import resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("dataset: digits\nfeaturizer: smallcnn\nfeaturizer_refit: true\n")
    assert resolve_config(path).featurizer_refit is True
    assert resolve_config(path, featurizer_refit=False).featurizer_refit is False  # flag wins
    path.write_text("featurizer: smallcnn\nfeaturizer_refit: maybe\n")
    with pytest.raises(LeanaugError, match="featurizer_refit must be true or false"):
        resolve_config(path)


# -- the refit fitter ----------------------------------------------------------------------
class RecordingPixels(PixelFeaturizer):
    """Raw pixels that remember what they were fitted on (pixels learn nothing)."""

    def fit(self, images, labels, sample_weight=None):  # noqa: ANN001, ANN201
        self.seen = (images, labels, sample_weight)
        return super().fit(images, labels)


def pixel_features(images: RefitImages) -> FeatureSet:
    def flat(x):  # noqa: ANN001, ANN202
        return to_float(x).reshape(x.shape[0], -1).numpy()

    aug = images.augmentation
    train_copies = aug.copies(to_float(images.train_images)).reshape(N, K, -1).numpy()
    test_copies = aug.copies(to_float(images.test_images))
    return FeatureSet(
        flat(images.train_images), images.train_labels, train_copies,
        flat(images.test_images), images.test_labels,
        test_copies.reshape(test_copies.shape[0], K, -1).numpy(),
        images.train_images, np.array(["3", "8"]),
    )  # fmt: skip


@pytest.mark.parametrize(
    "selection",
    [
        Selection([100, 7, 2]),
        Selection([100, 7, 2], "downweight"),
        Selection([100, 7, 2], "coreset", copy_weights=[0.5, 2.0, 1.5]),
        Selection([]),
        Selection(np.arange(N)[::-1]),
    ],
    ids=["uniform", "downweight", "coreset", "none", "all"],
)
def test_training_rows_are_augmented_training_sets_rows(digits38, selection) -> None:
    """The image rows, labels and weights a refit trains on are, row for row,
    augmented_training_set's (the frozen protocol's) for the sorted selection; with a
    featurizer that learns nothing (pixels) the two protocols give the same fit."""
    fs = pixel_features(digits38)
    made: list[RecordingPixels] = []

    def factory() -> RecordingPixels:
        made.append(RecordingPixels())
        return made[-1]

    fitter = RefitFitter(digits38, factory)
    problem = SelectionProblem(fs.train, fs.train_labels, np.zeros(N), fs.train_copies)
    X, y, w = augmented_training_set(problem, selection.sorted())
    images, labels, weights = fitter.training_rows(selection.sorted())
    assert images.dtype == np.float32 and images.shape == (X.shape[0], 1, 8, 8)
    np.testing.assert_array_equal(images.reshape(X.shape[0], -1), X)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(weights, w)
    refit = fitter.fit_and_score(selection)
    seen_images, seen_labels, seen_weights = made[0].seen
    np.testing.assert_array_equal(seen_images, images)
    np.testing.assert_array_equal(seen_labels, labels)
    np.testing.assert_array_equal(seen_weights, weights)  # the weights reach the featurizer
    frozen = FrozenFitter(fs).fit_and_score(selection)
    assert refit == frozen  # accuracy, accuracy_augmented_test, n_rows


def test_weights_train_a_different_net(digits38) -> None:
    """downweight and uniform selections of the same points: the same rows, other weights,
    other nets; the same selection twice: the same net (common random numbers)."""
    made: list[SmallCNNFeaturizer] = []

    def factory() -> SmallCNNFeaturizer:
        made.append(
            SmallCNNFeaturizer(epochs=1, batch_size=64, cache=False, progress=False, device="cpu")
        )
        return made[-1]

    fitter = RefitFitter(digits38, factory)
    points = np.arange(0, N, 3)
    for selection in (Selection(points), Selection(points, "downweight"), Selection(points)):
        fitter.fit_and_score(selection)
    probe = digits38.test_images
    uniform, down, again = (f.transform(probe) for f in made)
    np.testing.assert_array_equal(again, uniform)
    assert not np.allclose(down, uniform)


def test_refit_images_must_match_the_features(digits38, tmp_path) -> None:
    from leanaug.errors import LeanaugError
    from leanaug.experiments import resolve_config

    config = resolve_config(
        None, {"dataset": "digits", "classes": [3, 8], "n_train": "all", "featurizer": "smallcnn",
               "featurizer_refit": True}, out=str(tmp_path),
    )  # fmt: skip
    RefitImages.load(config, digits38.train_images, digits38.train_labels)
    with pytest.raises(LeanaugError, match="differ from those features.npz.*--overwrite"):
        RefitImages.load(config, digits38.train_images[::-1], digits38.train_labels[::-1])
