"""The ``nora`` command line: one typer app; each command group lives in its own module.

Bad input exits with code 2 and one line on stderr naming the problem; success exits 0.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from nora.api.base import ApiValidationError
from nora.cli import genetics_commands, run_commands
from nora.cli.report import ReportError
from nora.cli.toy_uris import ToyUriError
from nora.genetics import GeneticsError
from nora.local.driver import RunError
from nora.operator import cli as operator_cli
from nora.storage import StoreError
from nora.toy.cli import app as toy_app
from nora.trainer import cli as trainer_cli

app = typer.Typer(
    name="nora",
    help="Evolve populations of LoRA adapters: breed, mutate, inspect, train and run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
genetics_commands.register(app)
run_commands.register(app)
trainer_cli.register(app)
app.command("operator")(operator_cli.operator)
app.add_typer(toy_app, name="toy")

USER_ERRORS: tuple[type[Exception], ...] = (
    GeneticsError,
    ApiValidationError,
    RunError,
    ReportError,
    StoreError,
    ToyUriError,
)
"""Exceptions that mean bad input: reported in one line with exit code 2, never as a traceback."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nora`` script."""
    try:
        result = app(args=argv, standalone_mode=False)
    except TyperException as error:
        context = getattr(error, "ctx", None)
        command = getattr(context, "command_path", "nora")
        format_message = getattr(error, "format_message", None)
        message = format_message() if format_message else str(error)
        if message:
            print(f"{command}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("nora: aborted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as error:
        print(f"nora: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)
