"""The ``comit`` command: a thin layer over the library, one module per command group.

``app`` builds the typer app and registers the groups; ``options`` and ``support`` hold what the
groups share (options, one-line errors, model loading, the crop-order syntax). The groups import
those two and never each other; the library never imports this package.
"""

from .app import app, main

__all__ = ["app", "main"]
