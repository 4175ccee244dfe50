"""End-to-end subsampling: networks retrained on originals + copies of selected points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanaug.errors import LeanaugError
from leanaug.experiments import resolve_config, run_experiment
from leanaug.experiments.end_to_end import (
    load_end_to_end_config,
    run_end_to_end,
    split_pair,
    train_network,
)
from leanaug.results import read_json, read_parquet

N = 40
TINY = dict(
    dataset="digits",
    classes=[3, 8],
    n_train=N,
    augment="translate",
    score_featurizer="pixels",
    score_featurizer_params={},
    pairs=["influence/random", "loss/topk"],
    budgets=[5, N],
    trials=1,
    steps=12,
    batch_size=16,
    device="cpu",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    cfg = load_end_to_end_config(None, **TINY, out=str(out))
    return cfg, run_end_to_end(cfg, log=False)


def test_files_rows_and_baselines(tiny_run):
    """Files, rows and baselines of a tiny run. Rows come sorted by (score, policy, trial,
    budget), and each row's ``n_augmented`` is its own budget's count. Planted bug it
    catches: a row recording another budget's selection size (values still {5, N})."""
    cfg, summary = tiny_run
    out = summary["out"]
    for name in (
        "results.parquet",
        "baselines.json",
        "config.yaml",
        "scores.parquet",
        "accuracy.png",
    ):
        assert (out / name).is_file(), name
    res = read_parquet(out / "results.parquet")
    assert len(res) == 2 * 1 * 2  # pairs x trials x budgets
    assert set(res["policy"]) == {"random", "topk"}
    assert res["policy"].tolist() == ["random", "random", "topk", "topk"]
    assert res["budget"].tolist() == [5, N, 5, N]
    assert res["n_augmented"].tolist() == [5, N, 5, N]
    base = read_json(out / "baselines.json")
    assert 0.5 < base["frozen"]["full_augmentation"]["accuracy_augmented_test"] <= 1.0
    k = 4  # digits translate: 4 copies
    assert base["no_augmentation"]["n_train_rows"] == N
    assert base["full_augmentation"]["n_train_rows"] == N * (k + 1)
    assert summary["trainings"] == 2 + 4  # two baselines + one network per row
    # budget = n augments every point: the same training set, initialisation and batch
    # order as the trial's full-augmentation network, so exactly its accuracies
    full = res[res["budget"] == N]
    trial0 = base["trials"]["full_augmentation"][0]
    assert np.allclose(full["accuracy"], trial0["accuracy"])
    assert np.allclose(full["accuracy_augmented_test"], trial0["accuracy_augmented_test"])


def test_selections_and_frozen_accuracies_match_the_frozen_runner(tiny_run, tmp_path):
    cfg, summary = tiny_run
    frozen = run_experiment(
        resolve_config(
            None,
            dict(
                dataset="digits", classes=[3, 8], n_train=N, augment="translate",
                featurizer="pixels", scores=["influence", "loss"], policies=["random", "topk"],
                budgets=[5, N], trials=1, seed=0,
            ),
            out=str(tmp_path / "frozen"),
        ),
        progress=False,
        plots=False,
    ).results  # fmt: skip
    e2e = summary["results"]
    for score, policy in (split_pair(p) for p in cfg.pairs):
        a = frozen[(frozen["score"] == score) & (frozen["policy"] == policy)].sort_values("budget")
        b = e2e[(e2e["score"] == score) & (e2e["policy"] == policy)].sort_values("budget")
        np.testing.assert_allclose(
            b["frozen_accuracy_augmented_test"].to_numpy(float),
            a["accuracy_augmented_test"].to_numpy(float),
        )
        assert b["seed"].tolist() == a["seed"].tolist()  # the runner's unit seeds


def test_resume_trains_nothing_and_other_config_is_an_error(tiny_run):
    cfg, summary = tiny_run
    again = run_end_to_end(cfg, log=False, plots=False)
    assert again["trainings"] == 0
    assert len(again["results"]) == len(summary["results"])
    changed = load_end_to_end_config(None, **{**TINY, "steps": 13}, out=str(summary["out"]))
    with pytest.raises(LeanaugError, match="differs in: steps"):
        run_end_to_end(changed, log=False)


def test_training_is_reproducible_and_learns():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    x[y == 1] += 0.3  # separable by brightness
    x = x.clamp(0, 1)
    cfg = load_end_to_end_config(None, **{**TINY, "steps": 60})
    w = torch.ones(64)
    net1, acc1 = train_network(cfg, x, y, w, 2, x, trial=0, device=torch.device("cpu"))
    net2, acc2 = train_network(cfg, x, y, w, 2, x, trial=0, device=torch.device("cpu"))
    for p1, p2 in zip(net1.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p1, p2)
    with torch.no_grad():
        assert (net1(x).argmax(1) == y).float().mean() > 0.9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pairs": ["influence"]}, "score/policy"),
        ({"pairs": ["influence/nope"]}, "unknown policy 'nope'"),
        ({"network": "vgg"}, "smallcnn, resnet"),
        ({"budgets": [5, 500]}, "larger than n_train"),
        ({"bogus": 1}, "unknown field"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(LeanaugError, match=message):
        load_end_to_end_config(None, **{**TINY, **overrides})


def test_shipped_end_to_end_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "beyond"
    paths = sorted(root.glob("*end_to_end*.yaml"))
    assert paths
    for path in paths:
        cfg = load_end_to_end_config(path)
        cfg.scoring_config()  # a valid frozen-pipeline config for its scores
