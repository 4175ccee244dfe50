"""``leanaug distill ...`` (trajectory matching) and the top-level ``leanaug evaluate``.

* ``leanaug distill experts``: train expert trajectories (resumable).
* ``leanaug distill compact-experts SRC --out DST``: a float16 copy of the first K epochs.
* ``leanaug distill images``: distil images by trajectory matching (see the marked place
  below).
* ``leanaug evaluate IMAGES``: train fresh networks on a distilled image file, on
  ``random:N`` real images per class or on the ``full`` training set; report the final and
  the best-epoch test accuracy.
* ``leanaug evaluate PHI_DIR [--subset P] [--augment NAME]``: the same on phi(x) for x in the
  subset of a ``distill augment`` run; ``leanaug evaluate --experts E --subset P``: on a real
  subset (the hand-made baselines, ``--augment dsa|dsa-noflip|trivialaugment|none``).

``--config FILE`` (YAML or JSON, keys = option names) sets options; flags given on the
command line win over the file.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import torch
import typer
import yaml
from rich.console import Console

from leanaug.errors import LeanaugError
from leanaug.results import output_dir, output_file

app = typer.Typer(help="Dataset distillation by trajectory matching (MTT).", no_args_is_help=True)
console = Console(stderr=True)


def _convert(value: Any, kind: Any, key: str, config: Path) -> Any:
    """A config-file value as the option's Python type (YAML already gives bool/int/float)."""
    if value is None:
        return None
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
        Path: lambda v: isinstance(v, str),
    }.get(kind)
    if ok is None or not ok(value):
        name = getattr(kind, "__name__", str(kind))
        raise LeanaugError(f"--config {config}: {key} = {value!r} is not a {name}")
    return kind(value)


def _merge_config(
    ctx: typer.Context, values: dict[str, Any], config: Path | None, command: Any
) -> dict[str, Any]:
    """Fill options not given on the command line from a YAML/JSON ``--config`` file."""
    if config is None:
        return values
    if not config.is_file():
        raise LeanaugError(f"--config {config}: no such file")
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LeanaugError(f"--config {config}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise LeanaugError(f"--config {config}: expected a mapping of option names to values")
    hints = typing.get_type_hints(command)
    names = [n for n in values if n not in ("config", "ctx")]
    out = dict(values)
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            valid = ", ".join(sorted(n.replace("_", "-") for n in names))
            raise LeanaugError(f"--config {config}: unknown option {key!r}; valid: {valid}")
        # compared by name: typer may bundle its own click, with its own enum class
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            continue
        out[name] = _convert(value, hints.get(name, str), str(key), config)
    return out


def _required(values: dict[str, Any], *names: str) -> None:
    for name in names:
        if values.get(name) is None:
            flag = "--" + name.replace("_", "-")
            raise LeanaugError(f"missing {flag} (give it on the command line or in --config)")


# shared by `distill images` and `distill augment`
THETA_STORE_OPTION = typer.Option(
    "device",
    help="Where 'constant'/'tesla' keep the N stored student parameter vectors: 'device' "
    "or 'host' (pinned host memory on a GPU: device memory flat in N; no-op on a CPU).",
)


# --------------------------------------------------------------------------- experts


@app.command("experts")
def experts_command(
    ctx: typer.Context,
    dataset: str = typer.Option(None, help="Data set name (digits, mnist, cifar10, ...)."),
    data_dir: Path = typer.Option(None, help="Folder with the data set's files."),
    n_train: int = typer.Option(None, help="Use a random subset of this many training images."),
    experts: int = typer.Option(None, help="Number of expert trajectories."),
    epochs: int = typer.Option(None, help="Epochs per expert."),
    out: Path = typer.Option(None, help="Output folder (resumes / extends a run there)."),
    width: int = typer.Option(128, help="ConvNet width."),
    depth: int = typer.Option(3, help="ConvNet depth."),
    norm: str = typer.Option("instancenorm", help="ConvNet norm: instancenorm, groupnorm, none."),
    first_padding: int = typer.Option(
        None,
        help="Padding of the ConvNet's first convolution (default: 3 for 1-channel 28x28 "
        "input, the literature's MNIST ConvNet, 28 -> 32 -> 16 -> 8 -> 4; else 1).",
    ),
    lr: float = typer.Option(0.01, help="SGD learning rate (momentum 0, no weight decay)."),
    batch_size: int = typer.Option(256, help="Minibatch size."),
    zca: bool = typer.Option(
        False, "--zca/--no-zca", help="ZCA-whiten the inputs (kornia, eps 0.1)."
    ),
    dsa: str = typer.Option(
        "color_crop_cutout_flip_scale_rotate", help="DSA strategy ('none' for no augmentation)."
    ),
    seed: int = typer.Option(0, help="Base seed (initialisations, batch order, DSA)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    executor: str = typer.Option(
        "local",
        help="local: the experts one after another in this process; ray: one Ray task per "
        "expert (a GPU each when the cluster has GPUs; needs pip install -e '.\\[ray]').",
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster for --executor ray: auto, HOST:6379 or ray://HOST:10001 "
        "(default: a local Ray instance on all cores).",
    ),
    compile: bool = typer.Option(
        False,
        "--compile/--no-compile",
        help="torch.compile each expert's network: an MNIST width-32 epoch ran 1.8x faster "
        "on a CPU, after ~30 s of compilation; equal to float32 rounding.",
    ),
    dtype: str = typer.Option(
        "float32",
        help="Storage dtype of the trajectories: float32 or float16 (half the size; "
        "training stays float32 and resumes exactly; recorded in config.json).",
    ),
    config: Path = typer.Option(None, help="YAML/JSON file of option values (flags win)."),
) -> None:
    """Train expert trajectories: parameters after init and after every epoch."""
    values = _merge_config(ctx, dict(ctx.params), config, experts_command)
    _required(values, "dataset", "experts", "epochs", "out")
    output_dir(values["out"])  # before any data is read
    from leanaug.data import load_dataset
    from leanaug.distill.experts import check_folder_dtype, train_experts

    check_folder_dtype(values["out"], values["dtype"])  # before any data is read

    v = values
    data_dir_abs = str(Path(v["data_dir"]).resolve()) if v["data_dir"] is not None else None
    spec: dict[str, Any] = {"name": v["dataset"], "data_dir": data_dir_abs}
    if v["n_train"] is not None:
        spec.update(n_train=v["n_train"], subset="random", seed=v["seed"])
    ds = load_dataset(
        v["dataset"],
        data_dir=v["data_dir"],
        **{k: spec[k] for k in ("n_train", "subset", "seed") if k in spec},
    )
    strategy = "" if v["dsa"] in ("none", "None", "") else v["dsa"]
    console.print(
        f"training {v['experts']} experts x {v['epochs']} epochs on {ds.name} "
        f"({ds.train_images.shape[0]} images) into {v['out']}"
    )
    result = train_experts(
        ds,
        v["out"],
        experts=v["experts"],
        epochs=v["epochs"],
        width=v["width"],
        depth=v["depth"],
        norm=v["norm"],
        first_padding=v["first_padding"],
        lr=v["lr"],
        batch_size=v["batch_size"],
        zca=v["zca"],
        dsa_strategy=strategy,
        seed=v["seed"],
        device=v["device"],
        dataset_spec=spec,
        progress=True,
        executor=v["executor"],
        ray_address=v["ray_address"],
        compile=v["compile"],
        dtype=v["dtype"],
    )
    for e in result:
        acc = e.test_accuracy[-1] if e.test_accuracy else float("nan")
        typer.echo(f"{e.path}: {e.epochs_done} epochs, final test accuracy {100 * acc:.2f} %")


@app.command("compact-experts")
def compact_experts_command(
    src: Path = typer.Argument(..., help="Experts folder (from 'leanaug distill experts')."),
    out: Path = typer.Option(..., help="New experts folder (must not hold experts yet)."),
    dtype: str = typer.Option("float16", help="Storage dtype: float16 or float32."),
    epochs: int = typer.Option(
        None,
        help="Keep epochs 0..K (default: all); matching needs max-start-epoch - 1 + expert-epochs.",
    ),
) -> None:
    """Copy an experts folder keeping the first K epochs, stored in float16: a compact copy
    that 'distill images' reads like the original."""
    from leanaug.distill.experts import check_dtype, compact_experts

    check_dtype(dtype)
    output_dir(out)
    info = compact_experts(src, out, dtype=dtype, epochs=epochs)
    before, after = info["bytes_before"], info["bytes_after"]
    typer.echo(
        f"{src}: {before / 2**20:.2f} MiB -> {out}: {after / 2**20:.2f} MiB "
        f"({100 * after / before:.1f} %; {info['experts']} experts, epochs 0..{info['epochs']}, "
        f"{info['dtype']})"
    )


# --------------------------------------------------------------------------- images
# ==== `leanaug distill images` (trajectory matching; owner: the matching engineer).
# ==== The work is in leanaug.distill.matching.TrajectoryMatching; this is the typer layer.
@app.command("images")
def images_command(
    ctx: typer.Context,
    experts: Path = typer.Option(None, help="Experts folder (from 'leanaug distill experts')."),
    ipc: int = typer.Option(None, help="Synthetic images per class."),
    out: Path = typer.Option(None, help="Output folder (a run there is resumed)."),
    syn_steps: int = typer.Option(20, help="N: student steps per iteration."),
    expert_epochs: int = typer.Option(2, help="M: expert epochs the N steps should match."),
    max_start_epoch: int = typer.Option(
        None,
        help="T+: start epoch drawn uniformly from 0..T+-1 (reference randint(0, T+)); "
        "default: the whole usable trajectory (experts' epochs - M + 1).",
    ),
    iterations: int = typer.Option(500, help="Distillation iterations."),
    lr_img: float = typer.Option(100.0, help="SGD (momentum 0.5) learning rate of the pixels."),
    max_image_step: float = typer.Option(
        0.01,
        help="One pixel update moves the images by at most this RMS (preprocessed units, real "
        "images have std ~1): the gradient is clipped where lr_img would move them further "
        "(0: no bound, the reference).",
    ),
    lr_lr: float = typer.Option(
        1e-5,
        help="Learning rate of the step size alpha = exp(log_alpha): SGD on log_alpha with "
        "gradient dL/dalpha / alpha and lr lr_lr, i.e. the reference's update -lr_lr * dL/dalpha "
        "at any alpha, at most 5 % per iteration (the momentum included).",
    ),
    lr_teacher: float = typer.Option(0.01, help="alpha_0: initial student step size."),
    batch_syn: int = typer.Option(0, help="Student minibatch size (0: all synthetic images)."),
    init: str = typer.Option("real", help="Initialise from 'real' images or 'noise'."),
    dsa: bool = typer.Option(
        True, "--dsa/--no-dsa", help="DSA in the student steps (the experts' strategy)."
    ),
    memory: str = typer.Option(
        "unrolled",
        help="Gradient: 'unrolled' (autograd, memory ~ N), 'constant' (exact, activation memory "
        "of one step) or 'tesla' (TESLA's approximation).",
    ),
    theta_store: str = THETA_STORE_OPTION,
    precision: str = typer.Option(
        "float32", help="Student forward pass: 'float32' or 'bfloat16' (autocast; GPU fast path)."
    ),
    channels_last: bool = typer.Option(
        False, "--channels-last/--no-channels-last", help="Channels-last convolutions (GPU)."
    ),
    eval_every: int = typer.Option(100, help="Evaluate every this many iterations (0: never)."),
    eval_runs: int = typer.Option(5, help="Fresh networks per evaluation."),
    eval_epochs: int = typer.Option(300, help="Epochs per evaluation run (lr x0.1 at half)."),
    checkpoint_every: int = typer.Option(10, help="Checkpoint every this many iterations."),
    loss_limit: float = typer.Option(1e3, help="Stop when the matching loss exceeds this."),
    loss_growth: float = typer.Option(
        5.0,
        help="Stop when the matching loss has grown this many times over its start (median of "
        "the last 3 iterations over the first 3; 0: off).",
    ),
    seed: int = typer.Option(0, help="Base seed (initial images, expert/epoch/batch/DSA draws)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    data_dir: Path = typer.Option(
        None, help="Folder with the data set's files (overrides the experts')."
    ),
    config: Path = typer.Option(None, help="YAML/JSON file of option values (flags win)."),
) -> None:
    """Distil images by matching expert trajectories (MTT); resumes a run in --out."""
    from leanaug.distill.matching import (
        BEST_IMAGES_NAME,
        IMAGES_NAME,
        TrajectoryMatching,
        read_settings_file,
        tracking_summary,
    )

    # --config: file values replace defaults, flags given on the command line win. (Own merge:
    # typer >= 0.29 vendors click, so click's ParameterSource / Option.type are not typer's.)
    v = dict(ctx.params)
    if config is not None:
        paths = {"experts", "out", "data_dir"}
        for key, value in read_settings_file(config).items():
            if key not in v or key == "config":
                valid = sorted(set(TrajectoryMatching.param_names()) | paths)
                raise LeanaugError(
                    f"--config {config}: unknown option {key!r}; valid: {', '.join(valid)}"
                )
            source = ctx.get_parameter_source(key)
            if getattr(source, "name", None) == "COMMANDLINE":
                continue
            v[key] = Path(value) if key in paths and value is not None else value
    _required(v, "experts", "ipc", "out")
    output_dir(v["out"])  # before any data is read
    params = {k: v[k] for k in TrajectoryMatching.param_names() if k in v}
    params["batch_syn"] = params.get("batch_syn") or None
    est = TrajectoryMatching.from_config(params, source=str(config or "options"))
    console.print(
        f"distilling {v['ipc']} images per class from {v['experts']} into {v['out']} "
        f"({v['iterations']} iterations, N={v['syn_steps']}, M={v['expert_epochs']}, "
        f"T+={'all' if v['max_start_epoch'] is None else v['max_start_epoch']}, memory {v['memory']})"
    )
    est.fit(v["experts"], v["out"], data_dir=v["data_dir"], progress=True)
    track = tracking_summary(est.log_)
    runs = f"({v['eval_runs']} runs, {v['eval_epochs']} epochs)"
    if track is not None:
        typer.echo(
            f"initial images (iteration 0): tracking test accuracy {100 * track.initial:.2f} +- "
            f"{100 * track.initial_std:.2f} % {runs}"
        )
        typer.echo(
            f"iteration {track.final_iteration}: final test accuracy {100 * track.final:.2f} "
            f"+- {100 * track.final_std:.2f} % {runs}"
        )
        typer.echo(
            f"best checkpoint: iteration {track.best_iteration}, {100 * track.best:.2f} % "
            f"(selected on the test set), {Path(v['out']) / BEST_IMAGES_NAME}"
        )
        warning = track.warning(Path(v["out"]))
        if warning:
            console.print(warning, style="bold red", markup=False, highlight=False, soft_wrap=True)
    typer.echo(f"learned step size alpha = {est.lr_:.6g}")
    typer.echo(f"wrote {Path(v['out']) / IMAGES_NAME}")


# ==== (end of the reserved place)


# --------------------------------------------------------------------------- augment
# ==== `leanaug distill augment` (augmentation by distillation, issue #7; owner: the phi
# ==== engineer). The work is in leanaug.distill.augment_training.AugmentDistillation.
@app.command("augment")
def augment_command(
    ctx: typer.Context,
    experts: Path = typer.Option(None, help="Experts folder (from 'leanaug distill experts')."),
    phi: str = typer.Option(
        "residual", help="phi family: free, residual, transform, hallucinator, courseproject."
    ),
    phi_options: str = typer.Option(
        None, help="phi's options as a YAML/JSON mapping, e.g. '{width: 16, scale: 1.0}'."
    ),
    subset: float = typer.Option(0.1, help="Fraction of the training set phi is learned on."),
    subset_seed: int = typer.Option(0, help="Seed of the (stratified, nested) subset."),
    out: Path = typer.Option(None, help="Output folder (a run there is resumed)."),
    iterations: int = typer.Option(200, help="Training iterations."),
    syn_steps: int = typer.Option(10, help="N: student steps per iteration."),
    expert_epochs: int = typer.Option(1, help="M: expert epochs the N steps should match."),
    max_start_epoch: int = typer.Option(2, help="T+: start epoch drawn from 0..T+-1."),
    batch: int = typer.Option(64, help="Student minibatch (real subset images through phi)."),
    optimizer: str = typer.Option("adam", help="Optimizer of phi's weights: adam or sgd."),
    lr_phi: float = typer.Option(1e-3, help="Learning rate of phi's weights."),
    lr_lr: float = typer.Option(1e-5, help="Learning rate of alpha (as 'distill images')."),
    lr_teacher: float = typer.Option(0.01, help="alpha_0: initial student step size."),
    alpha_mode: str = typer.Option(
        "log", help="'log': alpha = exp(a) stays positive; 'raw': alpha itself (can go negative)."
    ),
    clip_grad: float = typer.Option(0.0, help="Clip phi's gradient norm (0: off)."),
    dsa: bool = typer.Option(True, "--dsa/--no-dsa", help="DSA after phi in the student steps."),
    memory: str = typer.Option("unrolled", help="'unrolled' or 'constant' (exact, less memory)."),
    theta_store: str = THETA_STORE_OPTION,
    objective: str = typer.Option(
        "matching",
        help="Matching objective over the student's endpoint: 'matching' (MTT's loss) or "
        "'matching-unbiased' (the U-statistic over K phi/DSA draws on one batch plan, "
        "unbiased for the squared bias alone; 'matching-unbiased:draws=4' for K = 4).",
    ),
    checkpoint_every: int = typer.Option(10, help="Checkpoint every this many iterations."),
    picture_every: int = typer.Option(100, help="Picture of x and phi(x) draws (0: never)."),
    loss_limit: float = typer.Option(1e3, help="Stop when the matching loss exceeds this."),
    seed: int = typer.Option(0, help="Base seed (phi init, expert/epoch/batch/noise/DSA draws)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    data_dir: Path = typer.Option(
        None, help="Folder with the data set's files (overrides the experts')."
    ),
    config: Path = typer.Option(None, help="YAML/JSON file of option values (flags win)."),
) -> None:
    """Learn an augmentation network phi by trajectory matching; resumes a run in --out."""
    v = _merge_config(ctx, dict(ctx.params), config, augment_command)
    from leanaug.distill.augment_training import PHI_NAME, AugmentDistillation
    from leanaug.distill.objectives import objective_spec

    options: Any = {}
    if v["phi_options"] not in (None, ""):
        try:
            options = yaml.safe_load(str(v["phi_options"]))
        except yaml.YAMLError as exc:
            raise LeanaugError(
                f"--phi-options {v['phi_options']!r}: not YAML/JSON ({exc})"
            ) from exc
        if not isinstance(options, dict):
            raise LeanaugError(f"--phi-options {v['phi_options']!r}: expected a mapping")
    params = {k: v[k] for k in AugmentDistillation.param_names() if k in v and k != "phi_options"}
    est = AugmentDistillation.from_config({**params, "phi_options": options}, source="options")
    est.validate()  # bad names / ranges fail before the experts are read
    _required(v, "experts", "out")
    output_dir(v["out"])  # before any data is read
    console.print(
        f"learning phi={v['phi']} on {100 * v['subset']:g}% of the data from {v['experts']} into "
        f"{v['out']} ({v['iterations']} iterations, N={v['syn_steps']}, M={v['expert_epochs']}, "
        f"T+={v['max_start_epoch']}, batch {v['batch']}, {v['optimizer']} lr {v['lr_phi']:g}, "
        f"objective {v['objective']})"
    )
    est.fit(v["experts"], v["out"], data_dir=v["data_dir"], progress=True)
    log = est.log_
    if len(log):
        tail = log.tail(max(1, len(log) // 10))
        typer.echo(
            f"last {len(tail)} iterations: {objective_spec(est.objective)} loss "
            f"{tail['loss'].mean():.4f} "
            f"(identity phi {tail['loss_identity'].mean():.4f})"
        )
    typer.echo(f"learned step size alpha = {est.alpha_:.6g}")
    typer.echo(f"wrote {Path(v['out']) / PHI_NAME}")


# --------------------------------------------------------------------------- evaluate
_SPEC_RE = re.compile(r"^random:(\d+)$")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _output_path(out: Path | None, images: str, experts: Path | None) -> Path:
    is_file_spec = not (images == "full" or _SPEC_RE.match(images))
    name = f"eval-{_slug(Path(images).stem if is_file_spec else images)}.json"
    if out is not None:
        return out / name if (out.is_dir() or str(out).endswith(("/", "\\"))) else out
    if is_file_spec:
        return Path(images).with_suffix(".eval.json")
    return (experts if experts is not None else Path(".")) / name


def _check_evaluate_options(v: dict[str, Any]) -> None:
    """One-line errors for ``evaluate``'s options before any data is read or trained."""
    from leanaug.distill.networks import NETWORKS

    for name in ("runs", "epochs", "network_width"):
        if v.get(name) is not None and v[name] < 1:
            raise LeanaugError(f"--{name.replace('_', '-')} must be at least 1, got {v[name]}")
    if v.get("network") is not None:
        NETWORKS.get(v["network"])  # one line listing the valid names
    spec = v.get("images")
    if isinstance(spec, str) and spec.startswith("random:") and not _SPEC_RE.match(spec):
        raise LeanaugError(
            f"{spec}: expected random:N, N real images per class (a whole number >= 1), "
            "e.g. random:10"
        )
    out = v.get("out")
    if out is not None:  # checked now rather than after the training
        output_dir(out) if out.is_dir() else output_file(out)


def evaluate_command(
    ctx: typer.Context,
    images: str = typer.Argument(
        None,
        help="A distilled image file (.safetensors), 'random:N', 'full', or a 'distill augment' "
        "run folder (PHI_DIR, or its phi.safetensors): phi(x) for x in --subset. Omit it with "
        "--subset for a real subset.",
    ),
    experts: Path = typer.Option(None, help="Experts folder: preprocessing, network and data set."),
    dataset: str = typer.Option(None, help="Without --experts: the data set to test on."),
    data_dir: Path = typer.Option(None, help="Folder with the data set's files."),
    n_train: int = typer.Option(None, help="Without --experts: random subset of the training set."),
    width: int = typer.Option(128, help="Without --experts: ConvNet width."),
    depth: int = typer.Option(3, help="Without --experts: ConvNet depth."),
    norm: str = typer.Option("instancenorm", help="Without --experts: ConvNet norm."),
    zca: bool = typer.Option(False, "--zca/--no-zca", help="Without --experts: ZCA-whiten inputs."),
    network: str = typer.Option(
        None,
        help="Architecture to train: convnet, convnet-bn, resnet18, vgg11 or alexnet, for the "
        "experts' channels, image size and classes (default: the experts' own network).",
    ),
    network_width: int = typer.Option(
        None, help="Width of --network (default: the experts' for convnets, else its own)."
    ),
    runs: int = typer.Option(5, help="Fresh networks to train."),
    epochs: int = typer.Option(1000, help="Training epochs per run (lr x0.1 at half)."),
    lr: float = typer.Option(
        None, help="Learning rate (default: an image file's learned lr, else the experts' lr)."
    ),
    batch_size: int = typer.Option(256, help="Minibatch size."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    weight_decay: float = typer.Option(5e-4, help="SGD weight decay."),
    dsa: bool = typer.Option(True, "--dsa/--no-dsa", help="DSA augmentation while training."),
    subset: float = typer.Option(
        None,
        help="With PHI_DIR or without IMAGES: train on this fraction of the training set, drawn "
        "as 'distill augment' draws it (class-stratified, nested; default with PHI_DIR: its own).",
    ),
    subset_seed: int = typer.Option(
        None, help="Seed of --subset (default: the phi run's, else 0 as 'distill augment')."
    ),
    augment: str = typer.Option(
        None,
        help="With PHI_DIR or --subset: train-time augmentation after phi: dsa (the experts'), "
        "dsa-noflip, trivialaugment, randaugment or none (default: dsa; none with --no-dsa).",
    ),
    eval_every: int = typer.Option(
        None, help="Test every this many epochs (default epochs // 20)."
    ),
    seed: int = typer.Option(
        0, help="Base seed (initialisations, batches, DSA, random:N subsets)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    out: Path = typer.Option(None, help="JSON file (or folder) for the results."),
    config: Path = typer.Option(None, help="YAML/JSON file of option values (flags win)."),
) -> None:
    """Evaluate a training set: train fresh networks on it, report test accuracy.

    The training set is an image file, random:N, full, phi(subset) of a phi run folder, or a
    real --subset.
    """
    v = _merge_config(ctx, dict(ctx.params), config, evaluate_command)
    _check_evaluate_options(v)
    if _evaluate_subset_command(ctx, v):
        return
    from leanaug.device import resolve_device
    from leanaug.distill.networks import evaluation_network
    from leanaug.results import write_json

    src = _evaluation_source(v)
    src.network = evaluation_network(src.network, v["network"], v["network_width"])
    dev = resolve_device(v["device"])
    result, lr_value, lr_source = _evaluate_spec(v, src, dev)
    spec = v["images"]
    path = _output_path(v["out"], spec, v["experts"])
    payload = {
        "images": spec,
        **src.source,
        "lr": float(lr_value),
        "lr_source": lr_source,
        "device": str(dev),
        **result.to_dict(),
    }
    write_json(path, payload)
    detail = f"{result.runs} runs, {v['epochs']} epochs, lr {float(lr_value):g} from {lr_source}"
    _echo_evaluation(spec, result, detail, path)


@dataclasses.dataclass
class _EvalSource:
    """What ``evaluate`` trains and tests with: the data set, its preprocessor, the
    network, the default learning rate (and where it came from) and the record of the
    source for the JSON file."""

    ds: Any
    pre: Any
    network: dict[str, Any]
    default_lr: float
    default_lr_source: str
    source: dict[str, Any]


def _evaluation_source(v: dict[str, Any]) -> _EvalSource:
    if v["experts"] is not None:
        return _experts_source(v)
    if v["dataset"] is not None:
        return _dataset_source(v)
    raise LeanaugError("give --experts DIR (preprocessing, network and test set) or --dataset NAME")


def _experts_source(v: dict[str, Any]) -> _EvalSource:
    """``--experts DIR``: the experts' data set, preprocessing, network and lr."""
    from leanaug.distill.experts import load_config, load_dataset_for, load_preprocessor

    cfg = load_config(v["experts"])
    pre = load_preprocessor(v["experts"])
    ds = load_dataset_for(cfg, v["data_dir"])
    return _EvalSource(
        ds,
        pre,
        dict(cfg["network"]),
        float(cfg["training"]["lr"]),
        "experts",
        {"experts": str(v["experts"])},
    )


def _dataset_source(v: dict[str, Any]) -> _EvalSource:
    """``--dataset NAME``: the data set (optionally a random --n-train subset), a fresh
    preprocessor fitted to it and a ConvNet of --width/--depth/--norm; lr 0.01."""
    from leanaug.data import load_dataset
    from leanaug.distill.networks import literature_first_padding
    from leanaug.distill.preprocess import Preprocessor

    extra = {"n_train": v["n_train"], "subset": "random", "seed": v["seed"]} if v["n_train"] else {}
    ds = load_dataset(v["dataset"], data_dir=v["data_dir"], **extra)
    pre = Preprocessor(zca=v["zca"]).fit(ds.train_images)
    c, h, w = ds.image_shape
    network = dict(
        name="convnet",
        in_channels=c,
        num_classes=ds.num_classes,
        image_size=[h, w],
        width=v["width"],
        depth=v["depth"],
        norm=v["norm"],
        first_padding=literature_first_padding(c, (h, w)),
    )
    source = {"dataset": v["dataset"], "n_train": v["n_train"], "zca": v["zca"]}
    return _EvalSource(ds, pre, network, 0.01, "default", source)


def _evaluate_spec(v: dict[str, Any], src: _EvalSource, dev: Any) -> tuple[Any, float, str]:
    """Train on IMAGES (``full``, ``random:N`` or an image file); returns the result, the
    learning rate and where it came from."""
    from leanaug.distill.evaluate import evaluate_images, evaluate_random_real

    ds, pre, network = src.ds, src.pre, src.network
    test_x = pre.transform(ds.test_images, device=dev)
    test_y = torch.as_tensor(ds.test_labels)
    train_y_all = torch.as_tensor(ds.train_labels)
    common = dict(
        epochs=v["epochs"],
        batch_size=v["batch_size"],
        momentum=v["momentum"],
        weight_decay=v["weight_decay"],
        dsa=v["dsa"],
        seed=v["seed"],
        device=dev,
        eval_every=v["eval_every"],
        progress=True,
        runs=v["runs"],
    )
    lr_value, lr_source = (
        (v["lr"], "--lr") if v["lr"] is not None else (src.default_lr, src.default_lr_source)
    )
    spec = v["images"]
    match = _SPEC_RE.match(spec)
    if spec == "full":
        train_x = pre.transform(ds.train_images, device=dev)
        result = evaluate_images(train_x, train_y_all, test_x, test_y, network, lr_value, **common)
    elif match:
        per_class = int(match.group(1))
        if per_class < 1:
            raise LeanaugError(f"{spec}: need at least 1 image per class")
        result = evaluate_random_real(  # a fresh random subset for every run
            ds.train_images,
            ds.train_labels,
            lambda x: pre.transform(x, device=dev),
            per_class,
            test_x,
            test_y,
            network,
            lr_value,
            **common,
        )
    else:
        image_set = _load_checked_image_set(spec, network)
        if v["lr"] is None and image_set.lr is not None:
            lr_value, lr_source = image_set.lr, "file"
        result = evaluate_images(
            image_set.images, image_set.labels, test_x, test_y, network, lr_value, **common
        )
    return result, lr_value, lr_source


def _load_checked_image_set(spec: str, network: dict[str, Any]) -> Any:
    """The image file ``spec``; its images must have the network's shape and its hard
    labels must be below its number of classes."""
    from leanaug.distill.evaluate import load_image_set

    image_set = load_image_set(spec)
    c, h, w = network["in_channels"], *network["image_size"]
    if tuple(image_set.images.shape[1:]) != (c, h, w):
        raise LeanaugError(
            f"{spec}: images are {tuple(image_set.images.shape[1:])}, the network expects {(c, h, w)}"
        )
    if (
        not image_set.labels.is_floating_point()
        and int(image_set.labels.max()) >= network["num_classes"]
    ):
        raise LeanaugError(
            f"{spec}: label {int(image_set.labels.max())} >= {network['num_classes']} classes"
        )
    return image_set


def _echo_evaluation(label: str, result: Any, detail: str, path: Path) -> None:
    """The final and best-epoch accuracy lines of an evaluation and the file written."""
    typer.echo(
        f"{label}: final test accuracy {100 * result.final_mean:.2f} +- {100 * result.final_std:.2f} % "
        f"({detail})"
    )
    typer.echo(
        f"{label}: best-epoch test accuracy {100 * result.best_mean:.2f} +- {100 * result.best_std:.2f} % "
        "(max over test evaluations: selected on the test set, the figure papers quote)"
    )
    typer.echo(f"wrote {path}")


def _evaluate_subset_command(ctx: typer.Context, v: dict[str, Any]) -> bool:
    """``evaluate PHI_DIR [--subset P]`` and ``evaluate --subset P``: train on phi(subset) or
    on the real subset (:func:`leanaug.distill.evaluate.evaluate_subset`). False when IMAGES
    is an image file, ``random:N`` or ``full`` (the other path)."""
    from leanaug.distill.evaluate import evaluate_subset
    from leanaug.results import write_json

    request = _subset_request(ctx, v)
    if request is None:
        return False
    phi_dir, augment = request
    result = evaluate_subset(
        phi_dir,
        experts=v["experts"],
        subset=v["subset"],
        subset_seed=v["subset_seed"],
        augment=augment,
        data_dir=v["data_dir"],
        lr=v["lr"],
        epochs=v["epochs"],
        runs=v["runs"],
        batch_size=v["batch_size"],
        momentum=v["momentum"],
        weight_decay=v["weight_decay"],
        eval_every=v["eval_every"],
        seed=v["seed"],
        device=v["device"],
        progress=True,
        network=v["network"],
        network_width=v["network_width"],
    )
    cfg = result.config
    fraction = cfg["subset"]["fraction"]
    method = ("phi" if phi_dir is not None else "") + (
        "" if augment == "none" else ("+" if phi_dir is not None else "") + augment
    )
    path = _subset_output_path(
        v["out"], phi_dir, cfg, f"eval-{(method or 'plain')}-p{fraction:g}.json"
    )
    payload = {
        "images": str(phi_dir) if phi_dir is not None else f"subset:{fraction:g}",
        "experts": cfg["experts"],
        "augment": augment,
        "subset": cfg["subset"],
        "phi": cfg["phi"],
        "lr": cfg["lr"],
        "lr_source": cfg["lr_source"],
        "device": cfg["device"],
        **result.to_dict(),
    }
    write_json(path, payload)
    lr_source = "--lr" if cfg["lr_source"] == "lr" else cfg["lr_source"]
    n = cfg["subset"]["size"]
    detail = f"{result.runs} runs, {v['epochs']} epochs, {n} training images, lr {cfg['lr']:g} from {lr_source}"
    _echo_evaluation(f"{method or 'plain'}@{fraction:g}", result, detail, path)
    return True


def _subset_request(ctx: typer.Context, v: dict[str, Any]) -> tuple[Path | None, str] | None:
    """The phi run folder (``None`` for a real --subset) and the train-time augmentation of
    a subset evaluation, after checking its options; ``None`` when IMAGES is an image file,
    ``random:N`` or ``full``."""
    from leanaug.distill.evaluate import phi_run_dir

    spec = v["images"]
    phi_dir = phi_run_dir(spec) if spec is not None else None
    asked = [f for f in ("subset", "subset_seed", "augment") if v[f] is not None]
    if spec is not None and phi_dir is None:
        if asked:
            flags = ", ".join("--" + f.replace("_", "-") for f in asked)
            raise LeanaugError(
                f"{flags}: only with a 'distill augment' run folder or without IMAGES, not with {spec}"
            )
        return None
    if phi_dir is None and v["subset"] is None:
        raise LeanaugError(
            "give IMAGES (an image file, random:N, full or a phi run folder) or --subset P"
        )
    if phi_dir is None and v["experts"] is None:
        raise LeanaugError("--subset needs --experts DIR (the data set, preprocessing, network)")
    source = ctx.get_parameter_source("dsa")
    if v["augment"] is not None and getattr(source, "name", None) == "COMMANDLINE":
        raise LeanaugError("give --augment NAME or --dsa/--no-dsa, not both")
    augment = v["augment"] if v["augment"] is not None else ("dsa" if v["dsa"] else "none")
    return phi_dir, augment


def _subset_output_path(
    out: Path | None, phi_dir: Path | None, cfg: dict[str, Any], name: str
) -> Path:
    """--out (a file, or a folder that gets ``name``), else ``name`` in the phi run folder
    or, without one, in the experts folder."""
    where = phi_dir if phi_dir is not None else Path(cfg["experts"])
    return (
        (out / name if (out.is_dir() or str(out).endswith(("/", "\\"))) else out)
        if out is not None
        else where / name
    )


def register_top_level(root: typer.Typer) -> None:
    """Add ``leanaug evaluate`` to the root command."""
    root.command("evaluate")(evaluate_command)
