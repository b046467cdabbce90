"""JSON sidecars: what an exported file was built from, so artefacts are keyed by content, not existence.

`model.onnx` gets `model.onnx.json` (and `engine.plan` gets `engine.plan.json`) holding

    inputs      everything the artefact depends on: source sha256, spec, opset, exporter, versions
    output      {"sha256": …} of the artefact itself, so a modified or truncated file is rebuilt
    config      the FPAConfig dict (runtimes read it instead of a checkpoint)
    results     measured differences against PyTorch, timings, TensorRT version and GPU name

An artefact is reused only when its sidecar's `inputs` equal the new ones and its hash still matches.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
import tempfile
from typing import Optional

from fpa_export.common.errors import FpaError
from fpa_export.common.atomic import atomic_write
from fpa_export.models import FPAConfig, PACKAGE_VERSION

SIDECAR_SUFFIX = ".json"


class ExportError(FpaError):
    """An export that cannot be done or failed its verification; the message is one line."""


def sidecar_path(artefact: str | os.PathLike) -> Path:
    return Path(str(artefact) + SIDECAR_SUFFIX)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(*names: str) -> dict[str, Optional[str]]:
    """Installed versions of the named distributions (None when absent), plus Python and ours."""
    versions: dict[str, Optional[str]] = {"python": platform.python_version(),
                                          "fpa-export": PACKAGE_VERSION}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_sidecar(artefact: str | os.PathLike) -> Optional[dict]:
    """The sidecar dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(sidecar_path(artefact).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(artefact: str | os.PathLike, data: dict) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(sidecar_path(artefact), lambda handle: handle.write(text.encode("utf-8")))


def reusable(artefact: str | os.PathLike, inputs: dict) -> Optional[dict]:
    """The existing sidecar when `artefact` was built from exactly `inputs` and is unchanged."""
    artefact = Path(artefact)
    sidecar = read_sidecar(artefact)
    if sidecar is None or not artefact.is_file():
        return None
    if _normalised(sidecar.get("inputs")) != _normalised(inputs):
        return None
    if sidecar.get("output", {}).get("sha256") != sha256_file(artefact):
        return None
    return sidecar


def config_from_sidecar(artefact: str | os.PathLike) -> FPAConfig:
    """The model configuration recorded beside an exported file; ExportError when there is none."""
    sidecar = read_sidecar(artefact)
    if sidecar is None or "config" not in sidecar:
        raise ExportError(f"{artefact}: no readable sidecar {sidecar_path(artefact).name} with the model "
                          "config; re-export it with `fpa-export`")
    return FPAConfig.from_dict(sidecar["config"])


def _normalised(value):
    """JSON round trip, so tuples and lists (and key order) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def check_writable(out: Path) -> None:
    """Fail before the (slow) export when the output cannot be written: probe with a temporary file."""
    if out.is_dir():
        raise ExportError(f"{out}: is a directory; give a file name for the .onnx output")
    parent = out.parent
    for folder in (parent, *parent.parents):  # the nearest existing ancestor must be a writable folder
        if folder.exists():
            break
    if not folder.is_dir():
        raise ExportError(f"{out}: cannot create it, {folder} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ExportError(f"{out}: cannot write to {folder} ({err.strerror or err})") from None
