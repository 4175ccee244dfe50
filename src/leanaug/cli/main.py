"""The ``leanaug`` command: a thin typer layer over the library.

User errors (:class:`leanaug.errors.LeanaugError`) are printed as one line on stderr
with exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click
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
    # Imported here so that `leanaug --help` lists every command group, and each group
    # lives in its own module under cli/.
    from leanaug.cli import data as data_cli

    app.add_typer(data_cli.app, name="data")
    try:
        from leanaug.cli import subsample as subsample_cli
    except ImportError:  # pragma: no cover - group not built yet
        subsample_cli = None
    if subsample_cli is not None:
        app.add_typer(subsample_cli.app, name="subsample")
        subsample_cli.register_top_level(app)
    try:
        from leanaug.cli import distill as distill_cli
    except ImportError:  # pragma: no cover - group not built yet
        distill_cli = None
    if distill_cli is not None:
        app.add_typer(distill_cli.app, name="distill")
        distill_cli.register_top_level(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except LeanaugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
