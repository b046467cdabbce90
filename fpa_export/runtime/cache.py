"""The export cache: graphs exported on first use of a checkpoint, keyed by content.

An entry is a folder named by the checkpoint's sha256, the export options and the package version:

    $FPA_EXPORT_CACHE/<sha256[:20]>-<graph>-<lstm>-<exporter>-<fp32|fp16>-v<version>/model.onnx (+ .json)

so a copied or renamed checkpoint reuses its export, and a new package version exports again. The
entry folder is locked (`folder_lock`) while it is exported: a second process exporting the same entry
waits for the first and then reuses its file, so both succeed and one valid file remains. The graph is
written atomically and its record (sidecar) after it; an entry is used only when the record's inputs
match and the graph's sha256 is the one recorded (or, without its sidecar, the graph's bytes are the
ones its embedded record was written with), so an interrupted export or a damaged graph is never used
(it is redone). An entry that is not a folder, or whose graph is not a file, was not made by an export:
it is refused in one line naming what to remove.

The graph's record holds the checkpoint's config and one-line description (`describe`: step, EMA), so
that with a filled cache a run learns both without loading the checkpoint — without importing torch
(`known_export`).

A cache folder that cannot be written, or that has no room for a graph (a full disk or quota), is
replaced by a per-user folder under the system temp dir, with one warning line. Temp files of our
atomic writes (`.<name>.<random>.tmp`) older than `STALE_TEMP_SECONDS` are swept from the cache when a
graph is exported into it. A lookup reads the cache, then its replacement (`cache_roots`), before
anything is exported: a full cache does not make every run export again.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
import re
import sys
import tempfile
import time
from typing import Optional

from fpa_export.common.errors import FpaError

GRAPH_NAME = "model.onnx"
STALE_TEMP_SECONDS = 15 * 60
LOCK_WAIT_SECONDS = 600


def cache_dir() -> Path:
    """Where graphs exported on demand live ($FPA_EXPORT_CACHE, else ~/.cache/fpa-export)."""
    base = os.environ.get("FPA_EXPORT_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fpa-export"


def usable_cache_dir() -> Path:
    """`cache_dir()` when it can be written, else a per-user temp folder (one warning line per run)."""
    wanted = cache_dir()
    if _writable(wanted):
        return wanted
    fallback = _fallback_dir()
    if not _writable(fallback, mode=0o700):  # private: see `cache_roots`
        raise FpaError(f"{wanted}: the export cache cannot be written, nor {fallback}; set "
                       "FPA_EXPORT_CACHE to a writable folder")
    if wanted not in _WARNED:
        _WARNED.add(wanted)
        sys.stderr.write(f"Warning: export cache {wanted} is not writable; using {fallback}\n")
    return fallback


_WARNED: set = set()  # unwritable caches already warned about in this process


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"fpa-export-cache-{os.getuid()}"


def cache_roots() -> list[Path]:
    """The folders a lookup reads, without creating anything: `cache_dir()`, then the temp folder that
    replaces it when it cannot be written (`usable_cache_dir`), each only if it exists."""
    primary, fallback = cache_dir(), _fallback_dir()
    roots = [primary] if primary.is_dir() else []
    if fallback != primary and fallback.is_dir() and _owned_privately(fallback):
        roots.append(fallback)
    return roots


def _owned_privately(folder: Path) -> bool:
    """The temp-dir replacement is read only when this user owns it and no one else may write it (in
    a shared temp dir another user could have made it first)."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _writable(folder: Path, mode: int = 0o777) -> bool:
    try:
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def sweep_stale_temps(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove our atomic-write temp files (`.<name>.<random>.tmp`) older than `older_than` seconds
    from `folder` and its entry folders; return how many were removed."""
    from fpa_export.common.atomic import sweep_stale_temps as sweep

    return sum(len(sweep(directory, older_than)) for directory in [folder, *_subfolders(folder)])


def _entries(folder: Path) -> list:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


def _subfolders(folder: Path):
    return [Path(e.path) for e in _entries(folder) if e.is_dir(follow_symlinks=False)]


def version_tag() -> str:
    """The package version as it appears in entry names (`v<version>`, file-name safe)."""
    from fpa_export.common.version import PACKAGE_VERSION

    return "v" + re.sub(r"[^A-Za-z0-9.]+", "_", str(PACKAGE_VERSION))


def entry_name(sha256: str, graph: str, lstm: str, exporter: str, fp16: bool) -> str:
    return f"{sha256[:20]}-{graph}-{lstm}-{exporter}-{'fp16' if fp16 else 'fp32'}-{version_tag()}"


def cached_graph(checkpoint: Path, sha256: str, graph: str = "image", lstm: str = "op",
                 exporter: str = "torchscript", fp16: bool = False) -> Path:
    """The exported graph of `checkpoint` (digest `sha256`) for these options, exported on first use."""
    name = entry_name(sha256, graph, lstm, exporter, fp16)
    for earlier in cache_roots():  # exported before: into the cache, or into the folder replacing it
        _check_entry(earlier / name, earlier / name / GRAPH_NAME)
        if _valid_record(earlier / name / GRAPH_NAME, sha256) is not None:
            return earlier / name / GRAPH_NAME
    root = usable_cache_dir()
    try:
        return _cached_in(root, checkpoint, sha256, graph, lstm, exporter, fp16)
    except OSError as err:
        fallback = _fallback_dir()
        if err.errno not in NO_ROOM or root == fallback or not _writable(fallback, mode=0o700):
            raise
        sys.stderr.write(f"Warning: export cache {root} has no room for the graph ({err.strerror}); "
                         f"using {fallback}\n")
        return _cached_in(fallback, checkpoint, sha256, graph, lstm, exporter, fp16)


NO_ROOM = (errno.ENOSPC, errno.EDQUOT)  # a full cache: the temp folder may lie on another disk


def _cached_in(root: Path, checkpoint: Path, sha256: str, graph: str, lstm: str, exporter: str,
               fp16: bool) -> Path:
    from fpa_export.common.lock import FolderBusy, folder_lock

    sweep_stale_temps(root)
    entry = root / entry_name(sha256, graph, lstm, exporter, fp16)
    out = entry / GRAPH_NAME
    _check_entry(entry, out)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            with folder_lock(entry, "export cache entry"):
                if _valid_record(out, sha256) is None:  # another process may have just finished it
                    _export(checkpoint, out, graph, lstm, exporter, fp16)
                return out
        except FolderBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # another process is exporting this very entry: wait, then reuse it


def _check_entry(entry: Path, out: Path) -> None:
    """A cache entry that is not a folder, or whose graph is not a file, was made by something else than
    an export (which writes neither): one line naming it, nothing removed."""
    for path, kind, is_kind in ((entry, "a folder", os.path.isdir), (out, "a file", os.path.isfile)):
        if os.path.lexists(path) and not is_kind(path):
            raise FpaError(f"{path}: a damaged export cache entry (this should be {kind}); remove "
                           f"{entry} and run again, or set FPA_EXPORT_CACHE to another folder")


def known_export(sha256: str) -> Optional[dict]:
    """{"config": …, "describe": str or None} of a checkpoint with this digest, from any valid entry of
    the cache; None when the cache holds none (then the checkpoint itself must be read)."""
    prefix = f"{sha256[:20]}-"
    entries = [entry for root in cache_roots() for entry in sorted(_subfolders(root))]
    for entry in entries:  # none when there is no cache folder
        record = _valid_record(entry / GRAPH_NAME, sha256) if entry.name.startswith(prefix) else None
        if record is not None:
            describe = record.get("describe")  # absent from records of older versions
            return {"config": record["config"],
                    "describe": describe if isinstance(describe, str) else None}
    return None


def _valid_record(out: Path, sha256: str) -> Optional[dict]:
    """The graph exists and its record (a sidecar that records the graph's own sha256, or the record
    embedded in it: `read_export_record`) names this checkpoint."""
    from fpa_export.export.onnx_meta import GraphModified
    from fpa_export.export.sidecar import read_export_record

    try:
        record = read_export_record(out)  # None for a missing file; "inputs" is a dict when well formed
    except GraphModified:  # a damaged entry is exported again
        return None
    return record if record is not None and record["inputs"].get("checkpoint_sha256") == sha256 else None


def _export(checkpoint: Path, out: Path, graph: str, lstm: str, exporter: str, fp16: bool) -> None:
    from fpa_export.export import export_onnx

    export_onnx(checkpoint, out, graph=graph, lstm=lstm, exporter=exporter, fp16=fp16, force=True)
