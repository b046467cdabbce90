"""One advisory lock per output folder: a second writer is refused with one line and touches nothing.

    with folder_lock(outdir, "sample folder"):
        ...write into outdir...

The lock is `flock` on `<folder>/.fpa-export.lock`, which holds the writer's process id. The kernel
drops an flock when its process dies (kill -9 included), so a stale lock file is simply taken over:
there is no "lock left behind" to clean up. The file itself stays (deleting it would race).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .errors import FpaError

LOCK_NAME = ".fpa-export.lock"


class FolderBusy(FpaError):
    """Another live process is writing this folder."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold the folder's lock for the duration of the block (the folder is created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(f"{folder}: this {what} is being written by process {_holder(path)}; "
                         "wait for it to finish or use another folder") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
