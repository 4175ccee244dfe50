"""``leanaug subsample run`` defaults that fit the data, and what ``subsample plot`` writes
(issue 21, items 4 and 5): n_train / budgets "auto", ``auc-clean.*`` next to ``auc.*``
with a ``metric`` column in both, the ``--executor`` help's ``.[ray]``."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leanaug.cli.main import app, main
from leanaug.errors import DataError
from leanaug.experiments.config import (
    PAPER_BUDGETS,
    budgets_for,
    fit_to_data,
    resolve_config,
)
from leanaug.experiments.plots import auc_table
from leanaug.results import read_json, read_parquet

N_DIGITS_38 = 268  # training images of digits 3 and 8 (the fixed split)
DIGITS_38_BUDGETS = [1, 3, 13, 27, 67, 134, 201, 268]  # the paper's fractions of 268


def _main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_budgets_are_the_papers_fractions():
    assert budgets_for(1000) == PAPER_BUDGETS
    assert budgets_for(N_DIGITS_38) == DIGITS_38_BUDGETS
    assert budgets_for(2000) == [2 * b for b in PAPER_BUDGETS]
    assert budgets_for(3) == [1, 2, 3]  # rounded, at least 1, no duplicates


def test_fit_to_data_rules():
    auto = resolve_config(None, {"dataset": "digits", "classes": [3, 8]})
    assert (auto.n_train, auto.budgets) == ("auto", "auto")  # until the data is known
    # fewer points than the default: all of them, budgets as fractions of them
    small = fit_to_data(auto, n_available=N_DIGITS_38)
    assert (small.n_train, small.budgets) == (None, DIGITS_38_BUDGETS)
    # more: the paper's 1000 and its budgets
    big = fit_to_data(auto, n_available=11982)
    assert (big.n_train, big.budgets) == (1000, PAPER_BUDGETS)
    # an explicit n_train sets the budgets' scale; explicit budgets stay as given
    given = resolve_config(None, {"dataset": "digits", "classes": [3, 8], "n_train": 100})
    assert fit_to_data(given, n_available=N_DIGITS_38).budgets == budgets_for(100)
    fixed = resolve_config(None, {"dataset": "digits", "classes": [3, 8], "budgets": "1,5"})
    assert fit_to_data(fixed, n_available=N_DIGITS_38).budgets == [1, 5]
    every = resolve_config(None, {"dataset": "digits", "classes": [3, 8], "n_train": "all"})
    assert fit_to_data(every, n_available=N_DIGITS_38).budgets == DIGITS_38_BUDGETS
    # counted from the data when not given; an explicit n_train above it stays an error
    assert fit_to_data(auto).budgets == DIGITS_38_BUDGETS
    too_many = resolve_config(None, {"dataset": "digits", "classes": [3, 8], "n_train": 1000})
    with pytest.raises(DataError, match="n_train=1000 is larger than the 268 training images"):
        fit_to_data(too_many)
    # a config without "auto" is returned as it is
    assert fit_to_data(small) is small


RUN = [
    *("subsample", "run", "--dataset", "digits", "--classes", "3,8"),
    *("--trials", "1", "--scores", "loss", "--policies", "random", "--no-progress"),
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """``leanaug subsample run --dataset digits --classes 3,8`` with the defaults."""
    out = tmp_path_factory.mktemp("digits") / "run"
    with pytest.raises(SystemExit) as info:
        main([*RUN, "--out", str(out)])
        raise SystemExit(0)
    assert info.value.code == 0
    return out


def test_digits_run_with_default_n_train_and_budgets(digits_run, capsys):
    cfg = yaml.safe_load((digits_run / "config.yaml").read_text())
    assert cfg["n_train"] is None and cfg["budgets"] == DIGITS_38_BUDGETS  # concrete on disk
    results = read_parquet(digits_run / "results.parquet")
    assert sorted(set(results["budget"])) == DIGITS_38_BUDGETS
    baselines = read_json(digits_run / "baselines.json")
    assert baselines["no_augmentation"]["n_train_rows"] == N_DIGITS_38
    # the largest budget augments every point: the full-augmentation fit
    full = results[results["budget"] == N_DIGITS_38]["accuracy_augmented_test"]
    assert full.tolist() == pytest.approx(
        [baselines["full_augmentation"]["accuracy_augmented_test"]]
    )
    # the same command resumes: the defaults resolve the same way, nothing is recomputed
    code, stdout, err = _main([*RUN, "--out", digits_run], capsys)
    assert code == 0, err
    assert "0 of 1 units run (1 already finished), 0 classifier fits" in stdout


def test_plot_clean_writes_its_own_auc_files(digits_run, capsys):
    augmented_md = (digits_run / "auc.md").read_bytes()
    augmented_csv = (digits_run / "auc.csv").read_bytes()
    code, stdout, err = _main(["subsample", "plot", digits_run, "--clean"], capsys)
    assert code == 0, err
    # the augmented test set's tables are left as they were
    assert (digits_run / "auc.md").read_bytes() == augmented_md
    assert (digits_run / "auc.csv").read_bytes() == augmented_csv
    results = read_parquet(digits_run / "results.parquet")
    for stem, metric in (("auc", "accuracy_augmented_test"), ("auc-clean", "accuracy")):
        table = pd.read_csv(digits_run / f"{stem}.csv")
        assert list(table.columns) == [
            "metric",
            "score",
            "policy",
            "auc_mean",
            "auc_std",
            "trials",
        ]
        assert set(table["metric"]) == {metric}
        expected = auc_table(results, metric)
        assert table["auc_mean"].tolist() == pytest.approx(expected["auc_mean"].tolist())
    assert str(digits_run / "auc-clean.md") in stdout  # the files it wrote are listed
    assert "clean test set" in (digits_run / "auc-clean.md").read_text()
    assert "augmented test set" in (digits_run / "auc.md").read_text()
    baselines = read_json(digits_run / "baselines.json")
    clean_md = (digits_run / "auc-clean.md").read_text()
    assert f"no augmentation {baselines['no_augmentation']['accuracy']:.4f}" in clean_md
    # --overwrite deletes the clean tables too
    code, _, err = _main([*RUN, "--out", digits_run, "--overwrite", "--no-plot"], capsys)
    assert code == 0, err
    assert not (digits_run / "auc-clean.md").exists() and not (digits_run / "auc.md").exists()


@pytest.mark.parametrize("command", [["subsample", "run"], ["distill", "experts"]])
def test_executor_help_shows_the_ray_extra(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=250)
    assert result.exit_code == 0, result.output
    help_text = " ".join(result.output.replace("│", " ").split())
    assert "pip install -e '.[ray]'" in help_text
    assert "'.'" not in help_text and "\\[" not in help_text
