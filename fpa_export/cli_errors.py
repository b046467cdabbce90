"""One rule for every command line: a user's mistake is one line on stderr and a non-zero exit."""
from __future__ import annotations

import functools

import click

from models import CheckpointError, ConfigError


class UserError(click.ClickException):
    """A problem with the user's input; click prints 'Error: <message>' and exits with status 1."""


def friendly_errors(func):
    """Turn the library's validation errors into one-line CLI errors (no traceback)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (CheckpointError, ConfigError, ValueError, FileNotFoundError) as err:
            raise UserError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        except OSError as err:
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            raise UserError(f"{err.strerror or err}{where}")
        except KeyboardInterrupt:
            click.echo("Interrupted; finished outputs are kept.", err=True)
            raise SystemExit(130)
    return wrapper
