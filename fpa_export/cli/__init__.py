"""Command-line interfaces (click): thin wrappers that parse, call one library function, print a line."""
from __future__ import annotations

import os

import click

from fpa_export.models import DEFAULT_MODEL


class ModelPath(click.Path):
    """A model file argument (must exist, not a folder); `default`, when no file of that name is
    there, is the embedded model and converts to None, as every command reads a model left out."""

    def __init__(self, path_type=None):
        super().__init__(exists=True, dir_okay=False, path_type=path_type)

    def convert(self, value, param, ctx):
        if value == DEFAULT_MODEL and not os.path.lexists(value):
            return None
        return super().convert(value, param, ctx)
