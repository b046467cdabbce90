"""One rule for every command line: a user's mistake is one line on stderr and a non-zero exit.

Shared by every `fpa-*` command and `fpa-train`. What counts as the user's mistake is decided by the
error's class, once: the project's own `FpaError` (and its `MissingExtra`: an optional package to
install), a missing or unreadable file (`OSError`), and Ctrl-C. A bare `ValueError` or any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools

import click

from .errors import FpaError


class UserError(click.ClickException):
    """A problem with the user's input; click prints 'Error: <message>' and exits with status 1."""


def friendly_errors(func=None, *, catch: tuple = (), interrupted: str = "Interrupted; finished outputs are kept."):
    """Turn validation errors (the library's, plus `catch`) into one-line CLI errors, never a traceback.

    Use bare (`@friendly_errors`) or configured (`@friendly_errors(catch=(TrainingError,), interrupted=...)`);
    Ctrl-C prints `interrupted` and exits with status 130.
    """
    if func is None:
        return functools.partial(friendly_errors, catch=catch, interrupted=interrupted)
    expected = (FpaError, *catch)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except expected as err:
            raise UserError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        except OSError as err:
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            raise UserError(f"{err.strerror or err}{where}")
        except KeyboardInterrupt:
            click.echo(interrupted, err=True)
            raise SystemExit(130)
    return wrapper


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # `-h` works wherever `--help` does


def version_option(prog: str):
    """`--version` on a top-level command: prints `<prog> <package version>`."""
    from .version import PACKAGE_VERSION

    return click.version_option(PACKAGE_VERSION, "--version", prog_name=prog, message="%(prog)s %(version)s")
