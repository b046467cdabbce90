"""The error classes of fpa-export: what a command line turns into one line and a non-zero exit.

`FpaError` is the base of every error the project raises for a user's input (a bad file, an invalid
option, a refused run). It derives from `ValueError` so callers that caught `ValueError` keep working,
but the command lines catch `FpaError` itself — a bare `ValueError` from a real bug stays a traceback.
`MissingExtra` is an optional package that is not installed; its message carries the pip line.
"""
from __future__ import annotations


class FpaError(ValueError):
    """A problem with the user's input or files; the message is one line naming it (and the fix)."""


class MissingExtra(FpaError, ImportError):
    """An optional package is not installed: `MissingExtra("onnxruntime", "onnx", "to run .onnx graphs")`."""

    def __init__(self, package: str, extra: str | None, purpose: str = "", pip: str | None = None):
        self.package, self.extra = package, extra
        fix = pip or (f"pip install 'fpa-export[{extra}]'" if extra else f"pip install {package}")
        why = f" (needed {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{why}; install it with: {fix}")


def reraise_interrupt(err: BaseException) -> None:
    """Raise KeyboardInterrupt when `err` came from one: a library that catches Ctrl-C and raises its
    own error (an extension's failed import, an exporter's error) must not be reported as a missing
    package or a failure of ours. Otherwise return."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        seen.add(id(err))
        err = err.__cause__ or err.__context__


def not_a_file(path) -> str:
    """Why `path` cannot be read as a file, for a one-line error: missing, a folder, or not a regular
    file (a device, a pipe such as /dev/null)."""
    import os

    if not os.path.lexists(path):
        return f"{path}: no such file"
    if os.path.isdir(path):
        return f"{path}: a folder, not a file"
    return f"{path}: not a regular file"


def size_text(count: int) -> str:
    """A byte count as a message shows it: 1.5 GiB, 312 MiB, 40 KiB or 512 bytes."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    if count >= 2**20:
        return f"{count / 2**20:.0f} MiB"
    return f"{count / 2**10:.0f} KiB" if count >= 2**10 else f"{count} bytes"
