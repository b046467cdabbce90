"""sha256 of files, remembered by (path, size, mtime_ns, inode, ctime_ns) so a large checkpoint is not
re-hashed each run.

The memo is a small JSON file in the export cache folder (`digests.json`); a file whose size or
modification time changed is hashed again, and so is one rewritten or replaced with its old size and
mtime put back (`cp -p`, `touch -r`, a coarse-mtime file system): that changes its inode or ctime.
The memo is an optimisation only: when it cannot be read or written the digest is simply computed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fpa_export.export.sidecar import sha256_file as sha256_of  # the one file hash of the project

MEMO_NAME = "digests.json"
MEMO_LIMIT = 512   # entries kept (the most recent), so the memo stays small


def file_sha256(path: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """The sha256 of `path`, from the memo when its size, mtime, inode and ctime are those recorded."""
    path = Path(path)
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
    memo_path = _memo_path(memo_dir)
    memo = _read(memo_path)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    value = sha256_of(path)
    memo.pop(key, None)
    memo[key] = {"stamp": stamp, "sha256": value}
    _write(memo_path, dict(list(memo.items())[-MEMO_LIMIT:]))
    return value


def _memo_path(memo_dir: Path | None) -> Path:
    if memo_dir is None:
        from .cache import cache_dir

        memo_dir = cache_dir()
    return Path(memo_dir) / MEMO_NAME


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, memo: dict) -> None:
    from fpa_export.common.atomic import atomic_write_json

    try:
        atomic_write_json(path, memo, sort_keys=False, indent=0)
    except OSError:
        pass  # a read-only cache: the digest is still right, only not remembered
