"""``leanaug data ...`` (placeholder until the data commands land)."""

import typer

app = typer.Typer(help="Inspect data sets and their augmentations.", no_args_is_help=True)
