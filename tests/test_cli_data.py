from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leanaug.cli.common import parse_classes, parse_int_list
from leanaug.cli.main import app, main
from leanaug.errors import LeanaugError

runner = CliRunner()


def test_parse_classes() -> None:
    assert parse_classes("3,8") == ["3", "8"]
    assert parse_classes(" airplane , automobile ") == ["airplane", "automobile"]
    assert parse_classes(None) is None
    for bad in ("", "3,,8", "3,"):
        with pytest.raises(LeanaugError, match="--classes"):
            parse_classes(bad)
    assert parse_int_list("1,10,50", "--budgets") == [1, 10, 50]
    with pytest.raises(LeanaugError, match="--budgets 'a,b'"):
        parse_int_list("a,b", "--budgets")


def test_data_list() -> None:
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name in ("cifar10", "digits", "mnist", "smallnorb"):
        assert name in result.output


def test_data_info_digits_prints_sizes_counts_and_stats() -> None:
    result = runner.invoke(app, ["data", "info", "digits", "--classes", "3,8"], terminal_width=120)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "1 x 8 x 8" in out and "classes" in out and "pixel statistics" in out
    # digits has 183 threes and 174 eights; the fixed split keeps 3/4 of each in train
    lines = [line for line in out.splitlines() if "│" in line]
    three = next(line for line in lines if line.split("│")[1].strip() == "0")
    assert [c.strip() for c in three.split("│")[1:5]] == ["0", "3", "137", "46"]


def test_data_info_mnist_subset(real_data) -> None:
    args = [
        "data",
        "info",
        "mnist",
        "--data-dir",
        str(real_data("mnist")),
        "--classes",
        "3,8",
        "--n-train",
        "100",
    ]
    result = runner.invoke(app, [*args, "--subset", "first"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "MNIST (official IDX files)" in result.output
    assert "│ train images            │ 100" in result.output
    assert "1,984" in result.output  # test images of 3 and 8: 1,010 + 974


def test_data_show_writes_a_grid_png(tmp_path: Path, official_files) -> None:
    mnist_dir, _ = official_files.mnist(n_train=20, n_test=10)  # the IDX format, random pixels
    out = tmp_path / "grid.png"
    args = [
        "data",
        "show",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--augment",
        "rotate",
    ]
    result = runner.invoke(app, [*args, "--n", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 images x 15 columns" in result.output
    with Image.open(out) as im:
        assert im.format == "PNG"
        width, height = im.size
        pixels = np.asarray(im.convert("L"))
    assert width > 3 * height  # 15 columns, 3 rows
    assert pixels.std() > 20  # not a blank canvas
    samples = tmp_path / "samples.png"
    result = runner.invoke(
        app,
        [
            "data",
            "show",
            "digits",
            "--augment",
            "crop",
            "--samples",
            "4",
            "--n",
            "2",
            "--out",
            str(samples),
        ],
    )
    assert result.exit_code == 0, result.output
    assert samples.stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["data", "info", "imagenet"],
            "error: unknown data set 'imagenet'; valid names: cifar10, digits, mnist, smallnorb",
        ),
        (
            ["data", "info", "digits", "--classes", "cat"],
            "error: digits: unknown class 'cat'; valid classes: 0, 1,",
        ),
        (
            ["data", "info", "digits", "--n-train", "5000"],
            "error: n_train=5000 is larger than the 1347 training images",
        ),
        (
            ["data", "info", "mnist", "--data-dir", "/nonexistent/leanaug"],
            "error: data directory /nonexistent/leanaug does not exist",
        ),
        (
            ["data", "show", "digits", "--augment", "flip", "--out", "x.png"],
            "error: unknown augmentation preset 'flip' for digits; valid presets: crop, rotate, translate",
        ),
        (
            ["data", "show", "digits", "--out", "grid.gif"],
            "error: --out grid.gif: expected a file ending in .png",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1


def test_cli_subprocess_bad_input_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "LEANAUG_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable,
        "-m",
        "leanaug",
        "data",
        "info",
        "mnist",
        "--data-dir",
        str(tmp_path / "missing"),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"error: data directory {tmp_path / 'missing'} does not exist\n"
    assert "Traceback" not in proc.stderr + proc.stdout
