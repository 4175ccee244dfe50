"""``leanaug data list|info|show``: look at data sets and their augmentations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from leanaug.augment import preset, preset_names, to_float, to_uint8
from leanaug.cli.common import (
    ClassesOption,
    DataDirOption,
    NoDownloadOption,
    NTrainOption,
    SeedOption,
    SubsetOption,
    load_from_options,
)
from leanaug.data import DATASETS, DESCRIPTIONS, channel_mean_std, class_counts
from leanaug.errors import LeanaugError
from leanaug.results import output_file, write_with
from leanaug.seeding import numpy_rng, torch_generator

app = typer.Typer(help="Inspect data sets and their augmentations.", no_args_is_help=True)

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


@app.command("list")
def list_datasets() -> None:
    """List the data sets and their augmentation presets."""
    table = Table(title="data sets")
    table.add_column("name")
    table.add_column("description")
    table.add_column("augmentation presets")
    for name in DATASETS:
        table.add_row(name, DESCRIPTIONS.get(name, ""), ", ".join(preset_names(name)))
    Console().print(table)


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Data set name (see `leanaug data list`).")],
    data_dir: DataDirOption = None,
    classes: ClassesOption = None,
    n_train: NTrainOption = None,
    subset: SubsetOption = "random",
    seed: SeedOption = 0,
    no_download: NoDownloadOption = False,
) -> None:
    """Sizes, classes with counts, and per-channel pixel statistics."""
    ds = load_from_options(name, data_dir, classes, n_train, subset, seed, no_download)
    console = Console()

    summary = Table(title=f"{ds.name}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("source", ds.source)
    summary.add_row("image shape (C x H x W)", " x ".join(map(str, ds.image_shape)))
    summary.add_row("train images", f"{len(ds.train_labels):,}")
    summary.add_row("test images", f"{len(ds.test_labels):,}")
    summary.add_row("classes", str(ds.num_classes))
    console.print(summary)

    per_class = Table(title="classes")
    for column in ("label", "name", "train", "test"):
        per_class.add_column(column, justify="right" if column != "name" else "left")
    train_counts = class_counts(ds.train_labels, ds.num_classes)
    test_counts = class_counts(ds.test_labels, ds.num_classes)
    for i, class_name in enumerate(ds.class_names):
        per_class.add_row(str(i), class_name, f"{train_counts[i]:,}", f"{test_counts[i]:,}")
    console.print(per_class)

    stats = Table(title="pixel statistics (values scaled to [0, 1])")
    for column in ("split", "channel", "mean", "std"):
        stats.add_column(column, justify="right" if column in ("mean", "std") else "left")
    for split in ("train", "test"):
        mean, std = channel_mean_std(getattr(ds, f"{split}_images"))
        for c in range(len(mean)):
            stats.add_row(split, str(c), f"{mean[c]:.4f}", f"{std[c]:.4f}")
    console.print(stats)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Data set name (see `leanaug data list`).")],
    out: Annotated[
        Path, typer.Option("--out", help="Image file to write (.png, .jpg, .pdf or .svg).")
    ],
    augment: Annotated[
        str, typer.Option("--augment", help="Augmentation preset of this data set.")
    ] = "translate",
    n: Annotated[int, typer.Option("--n", help="Number of images (rows).")] = 8,
    samples: Annotated[
        int,
        typer.Option("--samples", help="Show this many random draws instead of the fixed copies."),
    ] = 0,
    data_dir: DataDirOption = None,
    classes: ClassesOption = None,
    n_train: NTrainOption = None,
    subset: SubsetOption = "random",
    seed: SeedOption = 0,
    no_download: NoDownloadOption = False,
) -> None:
    """A grid: n training images (rows), the original then its augmented copies (columns)."""
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise LeanaugError(f"--out {out}: expected a file ending in {', '.join(FIGURE_SUFFIXES)}")
    if n < 1:
        raise LeanaugError(f"--n {n}: expected at least 1 image")
    output_file(out)  # a folder, under a file, not writable: one line, before any work
    if samples < 0:
        raise LeanaugError(
            f"--samples {samples}: expected 0 (fixed copies) or a positive number of draws"
        )
    aug = preset(name, augment)
    ds = load_from_options(name, data_dir, classes, n_train, subset, seed, no_download)
    if n > len(ds.train_labels):
        raise LeanaugError(
            f"--n {n} is larger than the {len(ds.train_labels)} training images of {ds.name}"
        )

    rows = np.sort(
        numpy_rng(seed, "show", ds.name).choice(len(ds.train_labels), size=n, replace=False)
    )
    x = to_float(ds.train_images[rows])
    if samples:
        gen = torch_generator(seed, "show", ds.name, augment)
        augmented = torch.stack([aug.sample(x, gen) for _ in range(samples)], dim=1)
        titles = ["original", *[f"draw {i + 1}" for i in range(samples)]]
    else:
        augmented = aug.copies(x)
        titles = ["original", *aug.copy_labels()]
    grid = to_uint8(torch.cat([x[:, None], augmented], dim=1)).numpy()  # n x (1+K) x C x H x W
    labels = [ds.class_names[int(ds.train_labels[r])] for r in rows]
    _save_grid(
        grid,
        titles,
        labels,
        out,
        title=f"{ds.name}: {augment} ({'random draws' if samples else 'paper copies'})",
    )
    typer.echo(
        f"wrote {out} ({n} images x {grid.shape[1]} columns: original + {grid.shape[1] - 1} {augment})"
    )


def _save_grid(
    grid: np.ndarray, titles: list[str], labels: list[str], out: Path, title: str
) -> None:
    # Figure (not pyplot): no global state, no GUI backend needed.
    from matplotlib.figure import Figure

    n_rows, n_cols = grid.shape[:2]
    cell = 1.2
    fig = Figure(figsize=(cell * n_cols + 0.6, cell * n_rows + 0.8), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i, j]
            image = grid[i, j]
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(labels[i], fontsize=8)
    fig.suptitle(title, fontsize=10)
    write_with(out, lambda p: fig.savefig(p, dpi=100))
