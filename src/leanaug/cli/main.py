"""The ``leanaug`` command: a thin typer layer over the library.

User errors (:class:`leanaug.errors.LeanaugError`) are printed as one line on stderr
with exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from leanaug.errors import LeanaugError

app = typer.Typer(
    name="leanaug",
    help="Lean data augmentation: augmentation subsampling and learned augmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    # Imported here so that each command group lives in its own module under cli/.
    from leanaug.cli import data as data_cli
    from leanaug.cli import distill as distill_cli
    from leanaug.cli import subsample as subsample_cli

    app.add_typer(data_cli.app, name="data")
    app.add_typer(subsample_cli.app, name="subsample")
    subsample_cli.register_top_level(app)
    app.add_typer(distill_cli.app, name="distill")
    distill_cli.register_top_level(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    # typer's standalone mode handles usage errors (exit 2) and --help itself; our own
    # user errors come out of the commands as LeanaugError.
    try:
        app(args=argv, prog_name="leanaug")
    except LeanaugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
