"""Atomic writes: a crash or Ctrl-C at any moment leaves the old file or the new one, never half.

Every file the project writes goes through `atomic_write` (temp file beside the target, fsync, rename).
Temp files are named `.<name>.<random>.tmp`, so a later run can tell ours from anything else.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"
STALE_AFTER_S = 15 * 60  # a temporary this old is a killed writer's: a live write is younger


def atomic_write(path: str | os.PathLike, write, exclusive: bool = False) -> Path:
    """Call `write(file_object)` on a temporary file beside `path`, fsync it, then rename over `path`.
    `exclusive`: only if `path` does not exist yet (a hard link, which fails with FileExistsError when
    another process got there first), so of two such writers exactly one succeeds."""
    path = Path(path)
    try:
        return _replace_atomically(path, write, exclusive)
    except OSError as err:
        if err.errno is None or (err.filename is not None
                                 and not Path(err.filename).name.startswith(f".{path.name}.")):
            raise
        # an error on our temporary file, or a write's error that names no file (a full disk), is one
        # on the target, as the user knows it
        raise type(err)(err.errno, err.strerror, str(path)) from None


def _replace_atomically(path: Path, write, exclusive: bool) -> Path:
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, exclusive: bool = False) -> Path:
    """`data` to `path`, atomically (`exclusive`: see `atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data), exclusive)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True, indent: int = 2,
                      exclusive: bool = False) -> Path:
    """`obj` as indented JSON (one trailing newline) to `path`, atomically (`exclusive`: see
    `atomic_write`)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"), exclusive)


def refuse_special(path: Path) -> None:
    """A device, FIFO or socket at `path` is never replaced by a regular file (as root, `-o /dev/null`
    would otherwise replace the system's device): FpaError, one line. Folders fail on their own."""
    import stat

    from .errors import FpaError, not_a_file

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there (or a dangling link): the write creates a file
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FpaError(f"{not_a_file(path)} (a device, pipe or socket): give a file name to write")


def check_writable(out: str | os.PathLike, what: str = "output") -> None:
    """Fail before slow work when `out` (a file to be written) cannot be: probe its nearest existing
    folder with a temporary file. Raises a one-line FpaError. Then remove the temporaries that killed
    writes of `out` itself left beside it (`sweep_stale_temps`), so a kill -9 leaves nothing for good."""
    from .errors import FpaError

    out = Path(out)
    if out.is_dir():
        raise FpaError(f"{out}: is a directory; give a file name for the {what}")
    refuse_special(out)
    for folder in (out.parent, *out.parent.parents):  # the nearest existing ancestor must be a folder
        if folder.exists():
            break
    if not folder.is_dir():
        raise FpaError(f"{out}: cannot create it, {folder} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise FpaError(f"{out}: cannot write to {folder} ({err.strerror or err})") from None
    sweep_stale_temps(out.parent, STALE_AFTER_S, re.compile(re.escape(out.name)))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when paths `a` and `b` name one file (the same inode where both exist, else the same
    resolved path): `ckpt.pt`, `./ckpt.pt` and a hard link to it are one file."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return Path(a).resolve() == Path(b).resolve()


def check_outputs(outputs: dict[str, Any], inputs: dict[str, Any] | None = None, error=None) -> None:
    """Refuse, in one line and before any work, a command whose outputs would overwrite one of its
    inputs or each other: `outputs` and `inputs` map a description ("the graph", "the checkpoint")
    to a path or None (not given). The one rule every command's file arguments go through; `error`
    is the FpaError subclass raised (a layer's own, e.g. ExportError)."""
    from .errors import FpaError

    error = error or FpaError
    given = [(what, path) for what, path in outputs.items() if path is not None]
    for what, path in given:
        for source, original in (inputs or {}).items():
            if original is not None and same_file(path, original):
                raise error(f"{path}: {what} would overwrite {source}; give another file name")
    for number, (what, path) in enumerate(given):
        for other, other_path in given[number + 1:]:
            if same_file(path, other_path):
                raise error(f"{path}: {what} and {other} name the same file, so one would "
                            "overwrite the other; give two file names")


def check_replaceable(path: str | os.PathLike, what: str, is_ours: Callable[[Path], bool], how: str,
                      error=None) -> None:
    """Refuse, before any work, an output that would replace an existing file which is not `what` this
    command writes there (a training run's latest.pt under a conversion, a document under a graph):
    `is_ours(path)` judges an existing file; `how` says how to replace it anyway ("pass --force").
    `error`: as for `check_outputs`."""
    from .errors import FpaError

    path = Path(path)
    if path.is_file() and not is_ours(path):
        raise (error or FpaError)(f"{path}: exists and is not {what}, so it is kept; give another file "
                                  f"name, or {how}")


def check_suffix(path: str | os.PathLike, suffixes: tuple[str, ...], what: str, error=None) -> None:
    """Refuse an output whose name does not end in one of `suffixes` (e.g. a graph written as
    `model.pt`, statistics written over `ckpt.pt`): every command then reads files by what they are.
    `error`: as for `check_outputs`."""
    from .errors import FpaError

    error = error or FpaError
    name = Path(path).name.lower()
    if not name.endswith(tuple(s.lower() for s in suffixes)):
        raise error(f"{path}: a {what} is written as {' or '.join(suffixes)}; give a name ending "
                    f"in {suffixes[0]}")


# `.<target>.<8 random characters>.tmp`: the temporary file `atomic_write` names (tempfile.mkstemp).
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def sweep_stale_temps(folder: str | os.PathLike, older_than_s: float, target: re.Pattern | None = None,
                      now: float | None = None) -> list[Path]:
    """Remove, from `folder` (not below it), our atomic-write temporaries older than `older_than_s`
    whose target name fully matches `target` (any target when None); returns what was removed.
    Leftovers of a killed writer only: a live writer's temporary is younger than the threshold.
    Never raises (an unreadable folder or a file that vanished is skipped)."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if match is None or (target is not None and not target.fullmatch(match.group("target"))):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and \
                    now - entry.stat(follow_symlinks=False).st_mtime >= older_than_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed
