"""The export cache: graphs exported on first use of a checkpoint, keyed by content.

An entry is a folder named by the checkpoint's sha256, the export options and the package version:

    $FPA_EXPORT_CACHE/<sha256[:20]>-<graph>-<lstm>-<exporter>-<fp32|fp16>-v<version>/model.onnx (+ .json)

so a copied or renamed checkpoint reuses its export, and a new package version exports again. The
entry folder is locked (`folder_lock`) while it is exported: a second process exporting the same entry
waits for the first and then reuses its file, so both succeed and one valid file remains. The graph is
written atomically and its record (sidecar) after it; an entry is used only when the record's inputs
match and the graph's sha256 is the one recorded, so an interrupted export is never used (it is redone).

Beside the graph, `checkpoint.json` holds the checkpoint's one-line description (`describe`: step, EMA),
so that with a filled cache a run learns the model's config (from the graph's record) and description
without loading the checkpoint — without importing torch (`known_export`).

A cache folder that cannot be written is replaced by a per-user folder under the system temp dir, with
one warning line. Temp files of our atomic writes (`.<name>.<random>.tmp`) older than
`STALE_TEMP_SECONDS` are swept from the cache when it is used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import re
import sys
import tempfile
import time
from typing import Optional

from fpa_export.common.errors import FpaError

GRAPH_NAME = "model.onnx"
DESCRIPTION_NAME = "checkpoint.json"
STALE_TEMP_SECONDS = 15 * 60
LOCK_WAIT_SECONDS = 600


def cache_dir() -> Path:
    """Where graphs exported on demand live ($FPA_EXPORT_CACHE, else ~/.cache/fpa-export)."""
    base = os.environ.get("FPA_EXPORT_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fpa-export"


def usable_cache_dir() -> Path:
    """`cache_dir()` when it can be written, else a per-user temp folder (one warning line)."""
    wanted = cache_dir()
    if _writable(wanted):
        return wanted
    fallback = Path(tempfile.gettempdir()) / f"fpa-export-cache-{os.getuid()}"
    if not _writable(fallback):
        raise FpaError(f"{wanted}: the export cache cannot be written, nor {fallback}; set "
                       "FPA_EXPORT_CACHE to a writable folder")
    sys.stderr.write(f"Warning: export cache {wanted} is not writable; using {fallback}\n")
    return fallback


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
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


def entry_name(sha256: str, graph: str, lstm: str, exporter: str, fp16: bool) -> str:
    from fpa_export.common.version import PACKAGE_VERSION

    version = re.sub(r"[^A-Za-z0-9.]+", "_", str(PACKAGE_VERSION))
    return f"{sha256[:20]}-{graph}-{lstm}-{exporter}-{'fp16' if fp16 else 'fp32'}-v{version}"


def cached_graph(checkpoint: Path, sha256: str, graph: str = "image", lstm: str = "op",
                 exporter: str = "torchscript", fp16: bool = False) -> Path:
    """The exported graph of `checkpoint` (digest `sha256`) for these options, exported on first use."""
    from fpa_export.common.lock import FolderBusy, folder_lock

    root = usable_cache_dir()
    sweep_stale_temps(root)
    entry = root / entry_name(sha256, graph, lstm, exporter, fp16)
    out = entry / GRAPH_NAME
    if _valid_entry(out, sha256):
        return out
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            with folder_lock(entry, "export cache entry"):
                if not _valid_entry(out, sha256):  # another process may have just finished it
                    _export(checkpoint, out, graph, lstm, exporter, fp16, sha256)
                return out
        except FolderBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # another process is exporting this very entry: wait, then reuse it


def known_export(sha256: str) -> Optional[dict]:
    """{"config": …, "describe": str or None} of a checkpoint with this digest, from any valid entry of
    the cache; None when the cache holds none (then the checkpoint itself must be read)."""
    root = cache_dir()
    prefix = f"{sha256[:20]}-"
    for entry in sorted(_subfolders(root)) if root.is_dir() else []:
        if not entry.name.startswith(prefix):
            continue
        record = _valid_record(entry / GRAPH_NAME, sha256)
        if record is not None:
            return {"config": record["config"], "describe": _description(entry, sha256)}
    return None


def _description(entry: Path, sha256: str) -> Optional[str]:
    try:
        data = json.loads((entry / DESCRIPTION_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("checkpoint_sha256") == sha256 \
            and isinstance(data.get("describe"), str):
        return data["describe"]
    return None


def _valid_entry(out: Path, sha256: str) -> bool:
    return _valid_record(out, sha256) is not None


def _valid_record(out: Path, sha256: str) -> Optional[dict]:
    """The graph exists and its record (a sidecar that records the graph's own sha256, or the record
    embedded in it: `read_export_record`) names this checkpoint."""
    from .modelfile import export_record

    record = export_record(out)
    if not out.is_file() or not isinstance(record, dict):
        return None
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    return record if inputs.get("checkpoint_sha256") == sha256 else None


def _export(checkpoint: Path, out: Path, graph: str, lstm: str, exporter: str, fp16: bool,
            sha256: str) -> None:
    from fpa_export.common.atomic import atomic_write_json
    from fpa_export.export import export_onnx
    from fpa_export.models import describe, read_checkpoint
    export_onnx(checkpoint, out, graph=graph, lstm=lstm, exporter=exporter, fp16=fp16, force=True)
    atomic_write_json(out.parent / DESCRIPTION_NAME, {"checkpoint_sha256": sha256,
                                                       "describe": describe(read_checkpoint(checkpoint))})
