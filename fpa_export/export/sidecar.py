"""JSON sidecars: what an exported file was built from, so artefacts are keyed by content, not existence.

`model.onnx` gets `model.onnx.json` (and `engine.plan` gets `engine.plan.json`) holding

    inputs      everything the artefact depends on: source sha256, spec, opset, exporter, versions
    output      {"sha256": …} of the artefact itself, so a modified or truncated file is rebuilt
    config      the FPAConfig dict (runtimes read it instead of a checkpoint)
    results     measured differences against PyTorch, timings, TensorRT version and GPU name

An artefact is reused only when its sidecar's `inputs` equal the new ones and its hash still matches.
An .onnx file also carries the same record in its own metadata (`onnx_meta.py`); `read_export_record`
is the one reader every command uses: the sidecar when it describes this very file (records its sha256,
its config is its spec's, its figures are numbers and, for an .onnx, it says what the record inside
the file says), else the embedded record, so a graph without its sidecar, with a sidecar of another
graph or with one edited since, is still understood as what it is.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Optional

from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.common.atomic import atomic_write_json
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
    """The sidecar dict, or None when it is missing or unreadable (bad JSON, too deeply nested)."""
    try:
        data = json.loads(sidecar_path(artefact).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def has_our_sidecar(artefact: str | os.PathLike) -> bool:
    """Whether the sidecar of `artefact` is one fpa-export wrote (`_parses`), edited since or not, and
    not another tool's or a user's JSON of that name."""
    return _parses(read_sidecar(artefact))  # ours even when edited since: it may be replaced


_RECORDS: dict = {}  # (file and sidecar identities) → record: one hash per file per process
_RECORDS_KEPT = 32


def read_export_record(path: str | os.PathLike) -> Optional[dict]:
    """What an exported file was built from: its sidecar when present, well-formed and recording this
    file's sha256; else, for an .onnx, the record embedded in its metadata (with "output" filled in
    from the file as read and "record_source": "metadata") once the file's other bytes are shown to be
    the exported ones (`onnx_meta.payload_sha256`; `GraphModified`, one line, when they are not);
    None when neither exists.

    Remembered for this process by the file's and the sidecar's identity (device, inode, size, mtime):
    a run that reads one graph's record several times hashes the graph once, and a file replaced since
    (an atomic write is a new inode) is read and hashed again."""
    path = Path(path)
    if not path.is_file():
        return None
    key = (str(path.resolve()), _identity(path), _identity(sidecar_path(path)))
    if key not in _RECORDS:
        if len(_RECORDS) >= _RECORDS_KEPT:
            _RECORDS.pop(next(iter(_RECORDS)))
        _RECORDS[key] = _read_export_record(path)
    return copy.deepcopy(_RECORDS[key])


def _identity(path: Path) -> Optional[tuple]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read_export_record(path: Path) -> Optional[dict]:
    digest = sha256_file(path)
    sidecar = read_sidecar(path)
    if _well_formed(sidecar) and isinstance(sidecar.get("output"), dict) \
            and sidecar["output"].get("sha256") == digest and _agrees_with_embedded(path, sidecar):
        return {**sidecar, "record_source": "sidecar"}
    if path.suffix.lower() != ".onnx":
        return None
    from .onnx_meta import read_embedded_record

    record = read_embedded_record(path)  # GraphModified (one line) for a changed graph
    if not _well_formed(record):
        return None
    output = {"sha256": digest, "bytes": path.stat().st_size}
    return {**record, "output": output, "record_source": "metadata"}


RECORD_FIELDS = ("inputs", "config", "describe", "results")  # what a sidecar repeats of the graph's record


def _agrees_with_embedded(path: Path, sidecar: dict) -> bool:
    """False when an .onnx file's own record (`onnx_meta`) says otherwise than its sidecar about what
    it is: the sidecar was edited, and the file's record is believed. True for other files and for
    graphs of versions that embedded no record. Reads the metadata only (no second hash)."""
    if path.suffix.lower() != ".onnx":
        return True
    from .onnx_meta import RECORD_KEY, read_metadata

    try:
        embedded = json.loads((read_metadata(path) or {})[RECORD_KEY])
    except (KeyError, ValueError, RecursionError):
        return True
    return not isinstance(embedded, dict) or all(
        _normalised(embedded.get(key)) == _normalised(sidecar.get(key)) for key in RECORD_FIELDS)


def _parses(record) -> bool:
    """A record whose spec and config parse: one of ours (a foreign JSON is not one)."""
    return _parsed(record) is not None


def _parsed(record):
    """(ExportSpec, FPAConfig) of a record, or None when they do not parse."""
    from .spec import ExportSpec

    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
        return None
    try:
        return ExportSpec.from_dict(record["inputs"]["spec"]), FPAConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return None


def _well_formed(record) -> bool:
    """A record that parses and agrees with itself: the config is the spec's, and the tensors the spec
    lists are the ones that config gives (a hand-edited record of another size is not one)."""
    parsed = _parsed(record)
    if parsed is None:
        return False
    spec, config = parsed
    claimed, derived = record["inputs"]["spec"], spec.to_dict()
    if _normalised(config.to_dict()) != _normalised(spec.config.to_dict()):
        return False
    try:
        return _results_readable(record.get("results", {})) and all(
            _normalised(claimed.get(key, derived[key])) == _normalised(derived[key])
            for key in ("inputs", "outputs"))
    except (TypeError, ValueError, RecursionError):
        return False


def _results_readable(results) -> bool:
    """The measured figures commands print: {"verification": {output: {"max_abs_diff" | "max_levels":
    a number, …}}, …}; anything else (an edit) is not what an export wrote."""
    if not isinstance(results, dict):
        return False
    report = results.get("verification", {})
    number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    return isinstance(report, dict) and all(
        isinstance(entry, dict) and all(number(entry.get(key, 0)) for key in ("max_abs_diff", "max_levels"))
        for entry in report.values())


def spec_from_record(path: str | os.PathLike):
    """The ExportSpec of an exported file (sidecar or embedded record); ExportError when there is none."""
    from .spec import ExportSpec

    return ExportSpec.from_dict(record_or_fail(path)["inputs"]["spec"])


def write_sidecar(artefact: str | os.PathLike, data: dict) -> Path:
    return atomic_write_json(sidecar_path(artefact), data)


def reusable(artefact: str | os.PathLike, inputs: dict) -> Optional[dict]:
    """The existing sidecar when `artefact` was built from exactly `inputs` and is unchanged."""
    from .onnx_meta import GraphModified

    try:
        record = read_export_record(artefact)  # checks the recorded sha256 against the file
    except GraphModified:  # changed since its export: built again
        return None
    if record is None or _normalised(record.get("inputs")) != _normalised(inputs):
        return None
    return record


def config_from_sidecar(artefact: str | os.PathLike) -> FPAConfig:
    """The model configuration of an exported file (from its sidecar or, for an .onnx, its own
    metadata); ExportError when there is none."""
    return FPAConfig.from_dict(record_or_fail(artefact)["config"])


def record_or_fail(artefact: str | os.PathLike, tool: str = "fpa-export") -> dict:
    """`read_export_record`, or a one-line ExportError naming the file and the command to re-export."""
    record = read_export_record(artefact)
    if record is None:
        if not Path(artefact).is_file():
            raise ExportError(not_a_file(artefact))
        from .onnx_meta import read_metadata

        if Path(artefact).suffix.lower() == ".onnx" and read_metadata(artefact) is None:
            raise ExportError(f"{artefact}: not an fpa-export file, nor any readable ONNX file (damaged, "
                              f"truncated or extended since its export?); re-export it with `{tool}`")
        raise ExportError(f"{artefact}: not an fpa-export file (no sidecar {sidecar_path(artefact).name} "
                          f"matching it and no record in the file); re-export it with `{tool}`")
    return record


def _normalised(value):
    """JSON round trip, so tuples and lists (and key order) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def check_writable(out: Path) -> None:
    """Fail before the (slow) export when the output or its sidecar cannot be written (one line, an
    ExportError), so that an artefact is never left without its sidecar."""
    from fpa_export.common.atomic import check_writable as probe

    sidecar = sidecar_path(out)
    if os.path.lexists(sidecar) and not sidecar.is_file():
        raise ExportError(f"{not_a_file(sidecar)}, where the sidecar of {Path(out).name} belongs; move it "
                          "away or give another output name")
    try:
        probe(out, ".onnx output" if Path(out).suffix.lower() == ".onnx" else "output")
    except ExportError:
        raise
    except FpaError as err:
        raise ExportError(str(err)) from None
