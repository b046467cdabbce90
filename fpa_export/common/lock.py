"""One advisory lock per output folder: a second writer is refused with one line and touches nothing.

    with folder_lock(outdir, "sample folder"):               # alone (a run folder, --overwrite)
        ...write into outdir...
    with folder_lock(outdir, "sample folder", shared=True):  # beside other shared holders (shards)
        ...write this shard's files...

The lock is an `flock` on the folder itself (its directory file descriptor), so no lock file is left
among the outputs: an FID tool reading a sample folder sees only images and `samples.json`. The kernel
drops an flock when its process dies (kill -9 included), so a stale lock cannot exist: the next writer
simply takes it. Which process holds a busy lock is read from /proc/locks (Linux); elsewhere the message
says "another process".

Writers that share a folder's lock serialise their short read-modify-write of a shared file (the
shards' samples.json) with `brief_lock(path)`: a lock file that exists only while it is held.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator, Optional

from .errors import FpaError


class FolderBusy(FpaError):
    """Another live process is writing this folder."""


def _holder(fd: int) -> Optional[int]:
    """The pid holding an flock on the file behind `fd`, from /proc/locks (None if unknown)."""
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and device in fields and "->" not in fields:
            position = fields.index(device) - 1
            if fields[position].isdigit():
                return int(fields[position])
    return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder", shared: bool = False) -> Iterator[Path]:
    """Hold the folder's lock for the duration of the block (the folder is created if missing; a
    block that fails leaves no folder it created and left empty: a refused run leaves nothing).
    `shared`: writers that may work side by side (the shards of one sample folder) share the lock;
    only an exclusive holder excludes them, and an exclusive lock is refused while any is held."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            who = f"process {pid}" if pid is not None else "another process"
            raise FolderBusy(f"{folder}: this {what} is being written by {who}; "
                             "wait for it to finish or use another folder") from None
        try:
            yield folder
        except BaseException:
            if created:
                _remove_if_empty(folder)
            raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_if_empty(folder: Path) -> None:
    try:
        if not any(os.scandir(folder)):
            folder.rmdir()
    except OSError:  # not empty after all (another writer's file), or already gone
        pass


@contextlib.contextmanager
def brief_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` for a block of milliseconds, waiting for another
    holder; the file is created for the block and removed when it ends, so it is not left among the
    outputs (kill -9 inside the block leaves it, and the next holder removes it). A holder that
    locked a file another holder has since removed (or replaced) locks the one now at `path`."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue  # removed by the holder before us: lock the next one
            held = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                continue
            try:
                yield
            finally:
                path.unlink(missing_ok=True)  # while still holding it: waiters then retry
            return
        finally:
            os.close(fd)
