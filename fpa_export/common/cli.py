"""One rule for every command line: a user's mistake is one line on stderr and a non-zero exit.

Shared by every `fpa-*` command and `fpa-train`. What counts as the user's mistake is decided by the
error's class, once: the project's own `FpaError` (and its `MissingExtra`: an optional package to
install), a missing or unreadable file (`OSError`), and Ctrl-C. A bare `ValueError` or any other
exception is a bug and keeps its traceback. A mistake on the command line itself (an unknown option,
a value out of range, a missing argument) is one line too, naming the `--help` to read (`UsageLine`,
exit status 2 as click's own usage errors).

Run as a program (a console script or `python -m`: the command object called with no arguments, on
the main thread, not interactively), a command ends its process as soon as it is done (`Command`,
`Group`): other threads joined, `atexit` handlers run, stdout/stderr flushed, then `os._exit` with
the command's status, skipping the interpreter's teardown of every imported module (0.15-0.3 s after
`import torch`, measured: docs/SAMPLING.md). Every file a command writes is complete (atomic rename)
before it returns, so nothing is lost. Under a profiler or tracer (cProfile, coverage; `sys.monitoring`
tools on Python 3.12+) the process exits normally, so their reports are written. A call with arguments
(`main(["--n", "4"])` in a script, a notebook or a thread) and click's test runner (`.main()`) return
or raise as click does. A program run also collects cyclic garbage less often (`GC_THRESHOLDS`),
which shortens the start-up of every command that imports torch.
"""
from __future__ import annotations

import atexit
import functools
import gc
import os
import re
import signal
import sys
import threading
from typing import Optional

import click
from click.exceptions import NoArgsIsHelpError

from .errors import FpaError, size_text


# A program run collects cyclic garbage less often than Python's default (700, 10, 10): importing torch
# allocates millions of objects and the default young-generation collections cost 0.05-0.09 s of its
# 0.9 s (measured: docs/SAMPLING.md). Garbage is still collected, every 50,000 net allocations. A
# command class whose runs last hours (training) sets `gc_thresholds = None` and keeps the default.
GC_THRESHOLDS = (50_000, 20, 100)


class UsageLine(click.ClickException):
    """A mistake on the command line itself (an unknown option, a bad or missing value, an unknown
    subcommand) as one line, `Error: <what> (see: <command> --help)`, with click's usage status 2."""

    exit_code = 2


def _one_line(err: click.UsageError) -> click.UsageError:
    if isinstance(err, NoArgsIsHelpError):  # a group called bare: its help is the answer
        return err
    message = " ".join(err.format_message().split())  # click's messages may wrap
    hint = f" (see: {err.ctx.command_path} --help)" if err.ctx is not None else ""
    return UsageLine(message + hint)


class _EndsProcess:
    """Mixin for click commands: run as a program, the command ends its process when done; a usage
    mistake is one line (`UsageLine`) instead of click's usage text, hint and error."""

    gc_thresholds: Optional[tuple] = GC_THRESHOLDS

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:  # parsing: unknown option, invalid or missing value
            raise _one_line(err) from err

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a group's unknown or missing subcommand
            raise _one_line(err) from err

    def __call__(self, *args, **kwargs):
        if not _program_run(args, kwargs):
            return super().__call__(*args, **kwargs)
        if self.gc_thresholds:
            gc.set_threshold(*self.gc_thresholds)
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as stop:  # click's standalone mode always ends with SystemExit
            if _observed():
                raise
            end_process(stop.code)


def _program_run(args: tuple, kwargs: dict) -> bool:
    """Is this call the program itself: the command line from sys.argv (a console script, `python -m`),
    on the main thread, outside an interactive session? A call with arguments (a script, a notebook,
    a thread) returns or raises as click does."""
    return (not args and "args" not in kwargs and threading.current_thread() is threading.main_thread()
            and not sys.flags.interactive and not hasattr(sys, "ps1"))


def _observed() -> bool:
    """A profiler, tracer or monitoring tool (cProfile, coverage) is active: it writes its report in
    the normal exit, so the normal exit is kept."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: cProfile and coverage may use it
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))


class Command(_EndsProcess, click.Command):
    """A click command that ends its process quickly when run as a program (module docstring)."""


class Group(_EndsProcess, click.Group):
    """A click group that ends its process quickly when run as a program (module docstring); its
    subcommands are `Command`s (one-line usage errors) and take the group's `--version` too
    (`fpa-export onnx --version`)."""

    command_class = Command

    def add_command(self, cmd: click.Command, name: Optional[str] = None) -> None:
        version = next((param for param in self.params if "--version" in param.opts), None)
        if version is not None and not any("--version" in param.opts for param in cmd.params):
            cmd.params.append(version)
        super().add_command(cmd, name)


def end_process(code=0) -> None:
    """Exit now with `code` (as `sys.exit` reads it) once other threads, `atexit` and stdio are done.
    Called on the main thread (`_program_run`). The work is done: a Ctrl-C from here on is ignored, so
    it cannot interrupt an exit handler with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shutdown = getattr(threading, "_shutdown", None)  # CPython's own first exit step
    if shutdown is not None:
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
        if stream is None or getattr(stream, "closed", False):
            continue  # no stream (fd closed at start) or closed by the program: nothing to flush
        try:
            stream.flush()
        except OSError:  # a closed pipe, a full disk
            if stream is sys.stdout and status == 0:
                status = 120  # what Python itself exits with when stdout cannot be flushed
    os._exit(status & 0xFF)


class UserError(click.ClickException):
    """A problem with the user's input; click prints 'Error: <message>' and exits with status 1."""


def friendly_errors(func=None, *, catch: tuple = (), interrupted=
                    "Interrupted; finished outputs are kept."):
    """Turn validation errors (the library's, plus `catch`) into one-line CLI errors, never a traceback.

    Use bare (`@friendly_errors`) or configured (`@friendly_errors(catch=(TrainingError,), interrupted=...)`);
    Ctrl-C prints `interrupted` (a text, or a function of the command's keyword arguments that returns
    one: what is kept depends on how far the run got) and exits with status 130.
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
        except (MemoryError, RuntimeError) as err:
            line = out_of_memory(err)
            if not line:
                raise  # a bug stays a traceback
            raise UserError(line)
        except KeyboardInterrupt:
            click.echo(interrupted(kwargs) if callable(interrupted) else interrupted, err=True)
            raise SystemExit(130)
    return wrapper


_ALLOCATION = re.compile(r"(?:tried to allocate|Tried to allocate) ([\d.]+ ?[KMGT]?i?B|\d+ bytes)")


def out_of_memory(err: BaseException) -> str:
    """The one line for an allocation that failed ('' when `err` is something else): Python's
    MemoryError, torch's CPU allocator and CUDA's out-of-memory, with the size it asked for."""
    text = str(err)
    if not (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "CUDA out of memory" in text):
        return ""
    found = _ALLOCATION.search(text)
    size = found.group(1) if found else ""
    if size.endswith(" bytes"):
        size = size_text(int(size.split()[0]))
    asked = f" (one allocation of {size})" if size else ""
    return (f"out of memory{asked}; ask for less at once (a smaller batch, image or network), or use a "
            "machine with more memory")


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # `-h` works wherever `--help` does


def given(ctx: click.Context, name: str) -> bool:
    """Whether the option `name` (its parameter name) was set on the command line or from the
    environment, rather than left at its default."""
    return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT,
                                                  click.core.ParameterSource.DEFAULT_MAP)


def nonempty_path(ctx, param, value):
    """Callback of a path option: its value as a Path; an empty string, which would silently mean the
    current folder, is a usage error."""
    from pathlib import Path

    if value is None:
        return None
    if not str(value).strip():
        kind = getattr(param, "type", None)
        what = ("file" if getattr(kind, "dir_okay", True) is False else
                "folder" if getattr(kind, "file_okay", True) is False else "folder or file")
        raise click.BadParameter(f"an empty path; give a {what} name", ctx, param)
    return Path(value)


def check_applies(name: str, applies: bool, when: str, ctx: Optional[click.Context] = None) -> None:
    """An option given where this run would ignore it (`--jpeg-quality` with PNG files) is one line, not
    a silent no-op: `--jpeg-quality applies only with --format jpg` (ctx: the running command's)."""
    ctx = ctx or click.get_current_context()
    if not applies and given(ctx, name):
        flag = next((opt for param in ctx.command.params if param.name == name for opt in param.opts
                     if opt.startswith("--")), name)
        raise UsageLine(f"{flag} applies only {when} (see: {ctx.command_path} --help)")


def version_option(prog: str):
    """`--version` on a top-level command: prints `<prog> <package version>` (a `Group` passes it on to
    its subcommands)."""
    from .version import PACKAGE_VERSION

    return click.version_option(PACKAGE_VERSION, "--version", prog_name=prog, message="%(prog)s %(version)s")
