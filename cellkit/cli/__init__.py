"""The ``cellkit`` command. Thin: parses options, calls the library, shows progress.

Each stage's commands live in their own module here and are registered on `app`.
"""

from __future__ import annotations

import importlib

import typer

from .. import __version__
from .._logging import to_console
from ._common import console
from ._errors import HandledGroup, set_debug

app = typer.Typer(help="cellkit: image-based drug profiling.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, cls=HandledGroup)

# Modules whose commands are registered on `app`, in help order.
COMMAND_MODULES = ["data", "fetch", "qc", "images", "convert", "segment", "extract", "export", "models", "robustness",
                   "search", "profile", "run", "demo"]


def _version(value: bool):
    if value:
        typer.echo(f"cellkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show the full traceback of any error "
                                                             "(also CELLKIT_DEBUG=1).")):
    """cellkit: image-based drug profiling."""
    set_debug(debug)
    to_console(lambda message: console.print(message, highlight=False))


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main():
    app()
