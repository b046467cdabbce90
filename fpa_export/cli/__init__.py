"""Command-line interfaces (click): thin wrappers that parse, call one library function, print a line."""
from __future__ import annotations

import click

from fpa_export.models import DEFAULT_MODEL


class ModelPath(click.Path):
    """A model file argument (must exist, not a folder); `default` is the embedded model, as in fpa-fd
    and fpa-vis, and converts to None, as every command reads a model left out (a file of that name
    is `./default`)."""

    def __init__(self, path_type=None):
        super().__init__(exists=True, dir_okay=False, path_type=path_type)

    def convert(self, value, param, ctx):
        if value == DEFAULT_MODEL:
            return None
        return super().convert(value, param, ctx)
