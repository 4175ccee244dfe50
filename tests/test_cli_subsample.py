"""``leanaug demo``, ``leanaug subsample run|plot``: files, config resolution, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from leanaug.cli.main import main
from leanaug.results import read_json, read_parquet


def _main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_demo_writes_every_file_and_prints_table(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = _main(
        ["demo", "--out", str(out), "--trials", "2", "--budgets", "1,10,100", "--no-progress"],
        capsys,
    )
    assert code == 0
    for name in (
        "results.parquet",
        "baselines.json",
        "scores.parquet",
        "config.yaml",
        "features.npz",
        "accuracy.png",
        "accuracy.pdf",
        "auc.csv",
        "auc.md",
        "top_bottom_influence.png",
        "top_bottom_loss.png",
        "top_bottom_random.png",
    ):
        assert (out / name).is_file(), name
        assert str(out / name) in stdout  # tells where the files went
    assert "no augmentation" in stdout and "full augmentation" in stdout and "AUC" in stdout
    results = read_parquet(out / "results.parquet")
    assert set(results["budget"]) == {1, 10, 100}
    assert set(results["policy"]) == {"random", "proportional", "topk", "update", "downweight"}
    assert set(results["score"]) == {"influence", "loss", "random"}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["dataset"], cfg["trials"], cfg["featurizer"]) == ("digits", 2, "pixels")

    # re-running resumes: nothing refitted, rows not duplicated
    code, stdout, _ = _main(
        ["demo", "--out", str(out), "--trials", "2", "--budgets", "1,10,100", "--no-progress"],
        capsys,
    )
    assert code == 0 and "0 of " in stdout and "0 classifier fits" in stdout
    again = read_parquet(out / "results.parquet")
    assert (
        len(again) == len(results)
        and not again.duplicated(["score", "policy", "trial", "budget"]).any()
    )

    code, stdout, _ = _main(["subsample", "plot", str(out), "--clean", "--log-x"], capsys)
    assert (
        code == 0
        and (out / "accuracy_clean.png").is_file()
        and (out / "accuracy_clean.pdf").is_file()
    )
    assert "clean test set" in stdout


def test_run_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "dataset: digits\nclasses: [1, 7]\nn_train: 120\nsubset: random\naugment: rotate\n"
        "scores: [loss]\npolicies: [random, topk]\nbudgets: [1, 5, 50]\ntrials: 4\nseed: 3\n"
    )
    out = tmp_path / "run"
    code, stdout, err = _main(
        [
            "subsample",
            "run",
            "--config",
            str(cfg),
            "--trials",
            "2",
            "--policies",
            "random,update:k=25",
            "--out",
            str(out),
            "--no-progress",
            "--no-plot",
        ],
        capsys,
    )
    assert code == 0, err
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    # flags win; the file supplies the rest; defaults fill what neither gives
    assert resolved["trials"] == 2 and resolved["policies"] == ["random", "update:k=25"]
    assert (resolved["classes"], resolved["n_train"], resolved["subset"], resolved["augment"]) == (
        [1, 7],
        120,
        "random",
        "rotate",
    )
    assert (resolved["budgets"], resolved["seed"], resolved["featurizer"], resolved["C"]) == (
        [1, 5, 50],
        3,
        "pixels",
        1.0,
    )
    results = read_parquet(out / "results.parquet")
    assert len(results) == 2 * 2 * 3  # 2 policies x 2 trials x 3 budgets
    assert (
        results["n_train_rows"] == 120 + results["budget"] * 4
    ).all()  # rotate on digits: 4 copies
    assert not (out / "accuracy.png").exists()
    assert read_json(out / "baselines.json")["no_augmentation"]["n_train_rows"] == 120

    # the same folder with a different configuration: a clear error, exit 2
    code, _, err = _main(
        ["subsample", "run", "--config", str(cfg), "--out", str(out), "--no-progress"], capsys
    )
    assert (
        code == 2 and "different configuration" in err and "trials" in err and "--overwrite" in err
    )


def test_run_coreset_policy(tmp_path, capsys):
    out = tmp_path / "coreset"
    code, stdout, err = _main(
        ["subsample", "run", "--dataset", "digits", "--classes", "3,8", "--n-train", "120",
         "--scores", "loss", "--policies", "coreset,coreset:weighting=uniform",
         "--budgets", "2,30,120", "--trials", "3", "--out", str(out), "--no-progress",
         "--no-plot"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    res = read_parquet(out / "results.parquet")
    # deterministic: one trial per policy, whatever --trials says
    assert len(res) == 2 * 3 and set(res["trial"]) == {0}
    assert (res["n_augmented"] == res["budget"]).all()
    assert (res["n_train_rows"] == 120 + 4 * res["budget"]).all()  # translate: 4 copies
    # at budget n every point is its own coreset element (gamma 1, weight 1): full augmentation
    full = read_json(out / "baselines.json")["full_augmentation"]
    at_n = res[res["budget"] == 120]
    assert (at_n["accuracy_augmented_test"] == full["accuracy_augmented_test"]).all()
    assert "coreset:weighting=uniform" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scores", "loss,bogus"], "unknown score 'bogus'; valid names:"),
        (["--policies", "random,nope"], "unknown policy 'nope'; valid names:"),
        (["--n-train", "50", "--budgets", "1,100"], "budget 100 is larger than n_train=50"),
        (["--classes", ""], "classes is empty"),
        (
            ["--n-train", "all", "--budgets", "1,1000"],
            "budget 1000 is larger than the 268 training points",
        ),
        (["--n-train", "1000"], "n_train=1000 is larger than the 268 training images"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    base = [
        "subsample",
        "run",
        "--dataset",
        "digits",
        "--classes",
        "3,8",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    code, _, err = _main(base + args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_bad_input_through_the_real_entry_point(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "leanaug",
            "subsample",
            "run",
            "--dataset",
            "digits",
            "--classes",
            "3,8",
            "--policies",
            "random,nope",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "unknown policy 'nope'; valid names:" in lines[0]
        and "proportional" in lines[0]
    )
    assert "Traceback" not in proc.stderr
