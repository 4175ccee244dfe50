"""One-line errors (exit 2, no traceback) for the output folders of every writing command,
damaged files in a run folder being resumed, component parameters and ``evaluate``'s
options (issue 21, item 3).

The output-folder checks all go through :func:`leanaug.results.output_dir` /
:func:`~leanaug.results.output_file`; parameters through
:meth:`leanaug.registry.Registry.create` / ``check_params``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import pytest

import leanaug.results
from leanaug.cli.main import main
from leanaug.errors import DamagedFileError, LeanaugError, OutputError, ParameterError
from leanaug.registry import Registry
from leanaug.results import output_dir, output_file, read_json, read_parquet

SUBSAMPLE = ["subsample", "run", "--dataset", "digits", "--classes", "3,8", "--no-progress"]
TINY_RUN = [
    *SUBSAMPLE,
    *("--n-train", "40", "--budgets", "5,10", "--trials", "1"),
    *("--scores", "loss", "--policies", "random", "--no-plot"),
]


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one line on stderr; return that line."""
    code, _, err = _main(args, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experts") / "E"
    with pytest.raises(SystemExit) as info:
        main(
            ["distill", "experts", "--dataset", "digits", "--n-train", "200", "--experts", "1"]
            + ["--epochs", "1", "--width", "8", "--out", str(out)]
        )
        raise SystemExit(0)
    assert info.value.code == 0
    return out


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


# --- output folders --------------------------------------------------------------------


def _writing_commands(experts: Path, out: Path) -> dict[str, list]:
    return {
        "distill experts": ["distill", "experts", "--dataset", "digits", "--experts", "1"]
        + ["--epochs", "1", "--out", out],
        "distill images": ["distill", "images", "--experts", experts, "--ipc", "1", "--out", out],
        "distill augment": ["distill", "augment", "--experts", experts, "--out", out],
        "subsample run": [*SUBSAMPLE, "--out", out],
        "demo": ["demo", "--out", out, "--no-progress"],
    }


@pytest.mark.parametrize(
    "command", ["distill experts", "distill images", "distill augment", "subsample run", "demo"]
)
def test_out_that_is_a_file(command, experts, a_file, capsys):
    line = _one_line_error(_writing_commands(experts, a_file)[command], capsys)
    assert line == (
        f"error: --out {a_file} is a file, not a folder: give a folder path (it is created "
        "when missing), or move the file away"
    )
    assert a_file.read_text() == "not a folder\n"  # untouched


@pytest.mark.parametrize(
    "command", ["distill experts", "distill images", "distill augment", "subsample run", "demo"]
)
def test_out_under_a_file(command, experts, a_file, capsys):
    out = a_file / "run"
    line = _one_line_error(_writing_commands(experts, out)[command], capsys)
    assert line == f"error: --out {out}: cannot create the folder, {a_file} is a file"


def test_evaluate_and_data_show_out_under_a_file(experts, a_file, capsys):
    out = a_file / "eval.json"
    line = _one_line_error(
        ["evaluate", "random:1", "--experts", experts, "--runs", "1", "--epochs", "1"]
        + ["--out", out],
        capsys,
    )
    assert line == f"error: --out {out}: cannot create its folder, {a_file} is a file"
    grid = a_file / "grid.png"
    line = _one_line_error(["data", "show", "digits", "--out", grid], capsys)
    assert line == f"error: --out {grid}: cannot create its folder, {a_file} is a file"


def _deny_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every folder look unwritable to the write probe (tests run as root, which
    ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if str(kwargs.get("prefix", "")).startswith(".leanaug-write-test"):
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(leanaug.results.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("command", ["distill experts", "distill augment", "subsample run"])
def test_out_that_is_not_writable(command, experts, tmp_path, monkeypatch, capsys):
    out = tmp_path / "read-only"
    out.mkdir()
    _deny_writes(monkeypatch)
    line = _one_line_error(_writing_commands(experts, out)[command], capsys)
    assert line == (
        f"error: --out {out} is not writable (Permission denied); choose another folder or "
        "fix its permissions"
    )


def test_evaluate_out_not_writable_fails_before_training(experts, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    _deny_writes(monkeypatch)
    line = _one_line_error(
        ["evaluate", "random:1", "--experts", experts, "--runs", "1", "--out", out], capsys
    )
    assert line.startswith(f"error: --out {out} is not writable (Permission denied)")


def test_plot_into_an_unwritable_run_folder(finished_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # every atomic write in the folder is refused
        if Path(kwargs.get("dir", "")) == out:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(leanaug.results.tempfile, "mkstemp", mkstemp)
    line = _one_line_error(["subsample", "plot", out], capsys)
    assert line.startswith(f"error: cannot write {out / 'accuracy.png'} (Permission denied)")


def test_output_helpers_directly(tmp_path, monkeypatch):
    assert output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # created
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
    assert output_file(tmp_path / "c" / "x.json") == tmp_path / "c" / "x.json"
    with pytest.raises(OutputError, match="is a folder, expected a file path"):
        output_file(tmp_path / "a")
    # mkdir itself refused (e.g. a read-only parent): the reason, one line
    monkeypatch.setattr(
        Path, "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "nope"))
    )
    with pytest.raises(OutputError, match=r"--out .*new: cannot create the folder \(nope\)"):
        output_dir(tmp_path / "new")


def test_writers_turn_os_errors_into_one_line(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(leanaug.results.os, "replace", full)
    with pytest.raises(OutputError, match=r"cannot write .*x.json \(No space left on device\)"):
        leanaug.results.write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_real_entry_point_prints_no_traceback(a_file):
    env = {**os.environ, "LEANAUG_CACHE": str(a_file.parent / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "leanaug", "distill", "experts", "--dataset", "digits"]
        + ["--experts", "1", "--epochs", "1", "--out", str(a_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: --out {a_file} is a file, not a folder")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stdout + proc.stderr


# --- damaged files in a run folder being resumed ------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "tiny"
    with pytest.raises(SystemExit) as info:
        main([*TINY_RUN, "--out", str(out)])
        raise SystemExit(0)
    assert info.value.code == 0
    return out


@pytest.mark.parametrize(
    "name", ["results.parquet", "features.npz", "scores.parquet", "baselines.json"]
)
def test_torn_file_names_itself_and_what_to_do(name, finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    torn = out / name
    data = torn.read_bytes()
    torn.write_bytes(data[: len(data) // 2])  # what a kill during a non-atomic write leaves
    line = _one_line_error([*TINY_RUN, "--out", out], capsys)
    assert line.startswith(f"error: {torn} is damaged (not a readable ")
    assert line.endswith(
        "; delete it (what it held is recomputed) or rerun with --overwrite to start afresh"
    )
    # and the advice works: without the file the run completes
    torn.unlink()
    code, stdout, err = _main([*TINY_RUN, "--out", out], capsys)
    assert code == 0, err
    again, before = (read_parquet(d / "results.parquet") for d in (out, finished_run))
    columns = ["score", "policy", "trial", "budget", "accuracy", "accuracy_augmented_test"]
    assert again[columns].reset_index(drop=True).equals(before[columns].reset_index(drop=True))


def test_torn_file_and_overwrite(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "results.parquet").write_bytes(b"PAR1 torn")
    code, _, err = _main([*TINY_RUN, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert len(read_parquet(out / "results.parquet")) == 2  # two budgets, one unit


def test_readers_say_which_file_is_damaged(tmp_path):
    bad = tmp_path / "log.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DamagedFileError, match=f"{bad} is damaged \\(not a readable parquet"):
        read_parquet(bad)
    js = tmp_path / "settings.json"
    js.write_text('{"a": 1')
    with pytest.raises(DamagedFileError, match=f"{js} is damaged .*; start again in a fresh"):
        read_json(js)
    with pytest.raises(FileNotFoundError):  # missing is not damaged: callers check first
        read_json(tmp_path / "missing.json")


# --- component parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--policies", "update:q=3"],
            "error: policy 'update': unknown parameter 'q'; valid parameters: "
            "k: int | None = None, mode: str = 'proportional', weighting: str = 'uniform'",
        ),
        (
            ["--featurizer", "smallcnn:epochs=abc"],
            "error: featurizer 'smallcnn': epochs='abc' is not an int; valid parameters: "
            "epochs: int = 40, batch_size: int = 512, lr: float = 0.001, seed: int = 0, "
            "device: str = 'auto', cache: bool = True, progress: bool = True, "
            "transform_batch_size: int = 1024, optimizer: str = 'adam', momentum: float = 0.9, "
            "weight_decay: float = 0.0, schedule: str = 'constant', label_smoothing: float = 0.0, "
            "precision: str = 'float32', weights: str | None = None, "
            "weights_sha256: str | None = None",
        ),
        (
            ["--scores", "influence:precision=float64"],
            "error: score 'influence': unknown parameter 'precision'; valid parameters: "
            "solve_precision: str = 'float32', leverage: bool = False, method: str = 'dense', "
            "device: str = 'auto'",
        ),
        (
            ["--policies", "random:k=3"],
            "error: policy 'random': unknown parameter 'k'; valid parameters: (none)",
        ),
        (
            ["--policies", "cluster:n_clusters=many"],
            "error: policy 'cluster': n_clusters='many' is not an int; valid parameters: "
            "n_clusters: int = 10, inner: str = 'random', n_init: int = 1",
        ),
    ],
)
def test_bad_component_parameters(flags, message, tmp_path, capsys):
    assert _one_line_error([*SUBSAMPLE, *flags, "--out", tmp_path / "o"], capsys) == message
    assert not (tmp_path / "o").exists()  # rejected before anything is written


def test_bad_phi_options(tmp_path, capsys):
    base = ["distill", "augment", "--experts", tmp_path / "E", "--out", tmp_path / "o"]
    line = _one_line_error([*base, "--phi-options", "{nope: 1}"], capsys)
    assert line == (
        "error: phi family 'residual': unknown parameter 'nope'; valid parameters: "
        "width: int = 16, noise_channels: int = 4, scale: float = 1.0, class_embedding: bool = True"
    )
    line = _one_line_error([*base, "--phi", "transform", "--phi-options", "{width: abc}"], capsys)
    assert line == (
        "error: phi family 'transform': width='abc' is not an int; valid parameters: "
        "width: int = 16, padding: str = 'border'"
    )


def test_registry_checks_and_converts_values():
    reg: Registry = Registry("widget")

    @reg.register("w")
    class Widget:
        def __init__(
            self,
            n: int = 1,
            rate: float = 0.5,
            on: bool = False,
            name: str = "a",
            k: int | None = None,
            how: Literal["fast", "slow"] = "fast",
            seed: int = 0,
        ) -> None:
            if n < 0:
                raise LeanaugError(f"widget: n must be >= 0, got {n}")
            self.__dict__.update(n=n, rate=rate, on=on, name=name, k=k, how=how, seed=seed)

    @reg.register("any")
    def anything(**kwargs):
        return kwargs

    w = reg.create("w", {"n": 4.0, "rate": "1e-3", "on": True, "name": 7, "k": None})
    assert (w.n, w.rate, w.on, w.name, w.k) == (4, 0.001, True, "7", None)
    assert type(w.n) is int and type(w.rate) is float
    assert reg.create("w", {"rate": 2}).rate == 2.0 and reg.create("w", {"k": "3"}).k == 3
    assert reg.create("w", {}, context={"seed": 9, "device": "cpu"}).seed == 9  # only accepted
    assert reg.create("w", {"seed": 1}, context={"seed": 9}).seed == 1  # params win
    assert reg.describe("w") == (
        "n: int = 1, rate: float = 0.5, on: bool = False, name: str = 'a', "
        "k: int | None = None, how: Literal['fast', 'slow'] = 'fast', seed: int = 0"
    )
    for params, message in [
        ({"n": 2.5}, "n=2.5 is not an int"),
        ({"n": True}, "n=True is not an int"),
        ({"on": "yes please"}, "on='yes please' is not a bool \\(true/false\\)"),
        ({"k": "x"}, "k='x' is not an int or none"),
        ({"how": "medium"}, "how='medium' is not one of 'fast', 'slow'"),
        ({"rate": None}, "rate=None is not a float"),
        ({"size": 3}, "unknown parameter 'size'; valid parameters: n: int = 1"),
    ]:
        with pytest.raises(ParameterError, match=f"^widget 'w': {message}"):
            reg.create("w", params)
    with pytest.raises(LeanaugError, match="^widget: n must be >= 0, got -1$"):
        reg.create("w", {"n": -1})  # the entry's own one-line error passes through
    assert reg.create("any", {"whatever": [1, 2]}) == {"whatever": [1, 2]}


# --- evaluate's options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["random:1", "--runs", "0"], "error: --runs must be at least 1, got 0"),
        (["random:1", "--epochs", "0"], "error: --epochs must be at least 1, got 0"),
        (
            ["random:abc"],
            "error: random:abc: expected random:N, N real images per class (a whole number "
            ">= 1), e.g. random:10",
        ),
        (
            ["random:-2"],
            "error: random:-2: expected random:N, N real images per class (a whole number "
            ">= 1), e.g. random:10",
        ),
    ],
)
def test_evaluate_bad_options(args, message, experts, capsys):
    assert _one_line_error(["evaluate", *args, "--experts", experts], capsys) == message
