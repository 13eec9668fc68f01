"""The ``comit`` command: a thin layer over the library. Each command parses options, calls the
modules that do the work, and turns expected failures into one-line errors (exit code 1).

This module makes the app and registers the command groups, one module each; a group keeps its own
options and commands, and no group imports another.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from . import bench, experiment, models, tokens, train, viz
from . import eval as evaluation

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="COMiT: tokenize images crop by crop into discrete messages, and paint them back.")


def show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"comit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                       help="Print the version and exit.")] = False):
    """COMiT: tokenize images crop by crop into discrete messages, and paint them back."""


# In this order on `comit --help` (commands first, then the groups with sub-commands: eval, experiment).
for group in (tokens, models, evaluation, experiment, train, viz, bench):
    group.register(app)


def main() -> None:  # the console script
    app()
