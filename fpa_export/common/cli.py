"""One rule for every command line: a user's mistake is one line on stderr and a non-zero exit.

Shared by every `fpa-*` command and `fpa-train`. What counts as the user's mistake is decided by the
error's class, once: the project's own `FpaError` (and its `MissingExtra`: an optional package to
install), a missing or unreadable file (`OSError`), and Ctrl-C. A bare `ValueError` or any other
exception is a bug and keeps its traceback.

Run as a program (a console script or `python -m`, which call the command object), a command ends its
process as soon as it is done (`Command`, `Group`): other threads joined, `atexit` handlers run,
stdout/stderr flushed, then `os._exit` with the command's status, skipping the interpreter's teardown
of every imported module (0.15-0.3 s after `import torch`, measured: docs/SAMPLING.md). Every file a
command writes is complete (atomic rename) before it returns, so nothing is lost. Under a profiler or
tracer (cProfile, coverage) the process exits normally, so their reports are written; click's test
runner calls `.main()` and is unaffected. A program run also collects cyclic garbage less often
(`GC_THRESHOLDS`), which shortens the start-up of every command that imports torch.
"""
from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import threading

import click

from .errors import FpaError


# A program run collects cyclic garbage less often than Python's default (700, 10, 10): importing torch
# allocates millions of objects and the default young-generation collections cost 0.05-0.09 s of its
# 0.9 s (measured: docs/SAMPLING.md). Garbage is still collected, every 50,000 net allocations.
GC_THRESHOLDS = (50_000, 20, 100)


class _EndsProcess:
    """Mixin for click commands: `command()` (how a program runs it) ends the process when done."""

    def __call__(self, *args, **kwargs):
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as stop:  # click's standalone mode always ends with SystemExit
            if sys.getprofile() is not None or sys.gettrace() is not None:
                raise
            end_process(stop.code)


class Command(_EndsProcess, click.Command):
    """A click command that ends its process quickly when run as a program (module docstring)."""


class Group(_EndsProcess, click.Group):
    """A click group that ends its process quickly when run as a program (module docstring)."""


def end_process(code=0) -> None:
    """Exit now with `code` (as `sys.exit` reads it) once other threads, `atexit` and stdio are done."""
    shutdown = getattr(threading, "_shutdown", None)  # CPython's own first exit step
    if shutdown is not None and threading.current_thread() is threading.main_thread():
        shutdown()  # threading's exit hooks (idle executor workers told to stop), then joins the rest
    else:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # CPython's own exit step: logging, weakref finalizers, temp folders
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or detached (a closed pipe, say)
            if stream is sys.stdout and status == 0:
                status = 120  # what Python itself exits with when stdout cannot be flushed
    os._exit(status & 0xFF)


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
