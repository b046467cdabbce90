"""The export record inside the .onnx file itself, so a graph that lost its JSON sidecar still says what
it is: which model config, which export spec, which package version, which checkpoint (sha256) and how
closely it matched PyTorch.

Written with onnx at export time into the ModelProto's `metadata_props` (key `fpa_export.record`: the
whole record as JSON; a few short keys beside it for people browsing the file in a model viewer) and
its `doc_string` (a readable paragraph). Read back with a few lines of protobuf wire-format parsing
that seek past the graph, so running an exported graph never imports onnx (start-up time) and never
builds an onnxruntime session just to learn its config.

Last, `fpa_export.payload_sha256` is the sha256 of everything else in the file as stored (every
top-level field, the record included, but the readable doc_string): a graph that lost its sidecar can
still show that its bytes and its record are the ones exported (`payload_sha256`), so a graph or a
record damaged or edited after its export is not believed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import BinaryIO, Optional

from fpa_export.common.errors import FpaError

RECORD_KEY = "fpa_export.record"
PAYLOAD_KEY = "fpa_export.payload_sha256"
DOC_STRING_FIELD = 6          # ModelProto.doc_string (onnx.proto)
METADATA_FIELD = 14           # ModelProto.metadata_props: repeated StringStringEntryProto {1: key, 2: value}
MAX_FIELD_BYTES = 16 << 20    # a metadata entry larger than this is not ours: treat the file as foreign


class GraphModified(FpaError):
    """An .onnx file whose contents changed after its export record was written into it."""


class _Malformed(Exception):
    """The bytes are not a protobuf message (a garbage or truncated file)."""


def embed_record(model, record: dict) -> None:
    """Write `record` into `model` (an onnx.ModelProto): metadata_props and doc_string."""
    spec = record.get("inputs", {}).get("spec", {})
    props = {
        RECORD_KEY: json.dumps(record, sort_keys=True),
        "fpa_export.version": str(record.get("inputs", {}).get("versions", {}).get("fpa-export")),
        "fpa_export.graph": str(spec.get("graph")),
        "fpa_export.checkpoint_sha256": str(record.get("inputs", {}).get("checkpoint_sha256")),
        "fpa_export.verification": verification_summary(record.get("results", {})),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = describe(record)
    serialized = model.SerializeToString()  # the payload: everything but doc_string and this entry
    entry = model.metadata_props.add()
    entry.key, entry.value = PAYLOAD_KEY, payload_sha256(io.BytesIO(serialized), len(serialized))


def payload_sha256(handle: BinaryIO, size: int) -> str:
    """sha256 of the raw bytes of every top-level field of a serialized ModelProto, in file order,
    except doc_string and the PAYLOAD_KEY entry of metadata_props (the record is included): what
    `embed_record` records under PAYLOAD_KEY. `_Malformed` for bytes that are not a protobuf message."""
    digest = hashlib.sha256()
    while handle.tell() < size:
        start = handle.tell()
        field, wire = _tag(handle)
        if wire == 2:
            length = _varint(handle)
            if length > size - handle.tell():
                raise _Malformed
            body, end = handle.tell(), handle.tell() + length
        else:
            _skip(handle, wire)
            body = end = handle.tell()
        handle.seek(start)
        if field == DOC_STRING_FIELD:
            handle.seek(end)
        elif field == METADATA_FIELD and wire == 2:
            if length > MAX_FIELD_BYTES:
                raise _Malformed
            raw = _read_exactly(handle, end - start)  # tag, length and the entry, read once
            if _entry(raw[body - start:])[0] != PAYLOAD_KEY:
                digest.update(raw)
        else:
            while handle.tell() < end:  # the graph: tens of MB, hashed in blocks
                digest.update(_read_exactly(handle, min(1 << 20, end - handle.tell())))
    return digest.hexdigest()


def _read_exactly(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise _Malformed
    return data


def payload_matches(path: str | os.PathLike, metadata: dict[str, str]) -> bool:
    """True when the file's payload is the one its metadata records, or when it records none (graphs
    of earlier versions); False for a graph changed after its export, or one that cannot be read."""
    recorded = metadata.get(PAYLOAD_KEY)
    if recorded is None:
        return True
    try:
        with open(path, "rb") as handle:
            return payload_sha256(handle, os.fstat(handle.fileno()).st_size) == recorded
    except (OSError, _Malformed, UnicodeDecodeError):
        return False


def verification_summary(results: dict) -> str:
    """'image: max abs diff 2.4e-07 vs PyTorch' per output, or 'not verified'."""
    report = results.get("verification") or {}
    if not results.get("verified") or not report:
        return "not verified"
    parts = [f"{name}: {r['max_levels']} uint8 level(s)" if "max_levels" in r
             else f"{name}: max abs diff {r.get('max_abs_diff', float('nan')):.2g}"
             for name, r in sorted(report.items())]
    return "; ".join(parts) + " vs PyTorch (onnxruntime, batch 1 and 7, fixed seeds)"


def describe(record: dict) -> str:
    """A paragraph for the ModelProto doc_string."""
    inputs = record.get("inputs", {})
    spec = inputs.get("spec", {})
    shapes = ", ".join(f"{t['name']} {t['dtype']} {tuple(t['shape'])}"
                       for t in spec.get("inputs", []) + spec.get("outputs", []))
    return (f"Fast Weight Painter (Irie & Schmidhuber, ICLR 2023), {spec.get('graph')} graph: {shapes}. "
            f"Exported by fpa-export {inputs.get('versions', {}).get('fpa-export')} with the "
            f"{inputs.get('exporter')} exporter, opset {inputs.get('opset')}, from checkpoint sha256 "
            f"{inputs.get('checkpoint_sha256')}. Verification: "
            f"{verification_summary(record.get('results', {}))}. "
            f"The full record (model config, export spec, versions) is the JSON in "
            f"metadata_props['{RECORD_KEY}'].")


def read_metadata(path: str | os.PathLike) -> Optional[dict[str, str]]:
    """metadata_props of an .onnx file as a dict (plus 'doc_string' under that key when set), or None
    when the file is not a readable protobuf message."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _top_level(handle, size)
    except (OSError, _Malformed, UnicodeDecodeError):
        return None


def read_embedded_record(path: str | os.PathLike) -> Optional[dict]:
    """The record `embed_record` wrote into an .onnx file, or None (no record, or not valid JSON);
    GraphModified when the file is not what was exported with it (`payload_matches`)."""
    metadata = read_metadata(path)
    if not metadata or RECORD_KEY not in metadata:
        return None
    if not payload_matches(path, metadata):
        raise GraphModified(f"{path}: the graph's contents are not the ones it was exported with "
                            "(damaged or edited since); export it again")
    try:
        record = json.loads(metadata[RECORD_KEY])
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _top_level(handle: BinaryIO, size: int) -> dict[str, str]:
    """Walk the ModelProto's fields, reading only doc_string and metadata_props."""
    found: dict[str, str] = {}
    while handle.tell() < size:
        field, wire = _tag(handle)
        if wire != 2:
            _skip(handle, wire)
            continue
        length = _varint(handle)
        if length > size - handle.tell():
            raise _Malformed
        if field not in (DOC_STRING_FIELD, METADATA_FIELD):
            handle.seek(length, io.SEEK_CUR)
            continue
        if length > MAX_FIELD_BYTES:
            raise _Malformed
        data = handle.read(length)
        if field == DOC_STRING_FIELD:
            found["doc_string"] = data.decode("utf-8")
        else:
            key, value = _entry(data)
            found[key] = value
    return found


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    stream, parts = io.BytesIO(data), {1: b"", 2: b""}
    while stream.tell() < len(data):
        field, wire = _tag(stream)
        if wire != 2:
            _skip(stream, wire)
            continue
        length = _varint(stream)
        chunk = stream.read(length)
        if len(chunk) != length:
            raise _Malformed
        parts[field] = chunk
    return parts[1].decode("utf-8"), parts[2].decode("utf-8")


def _tag(stream: BinaryIO) -> tuple[int, int]:
    tag = _varint(stream)
    field, wire = tag >> 3, tag & 7
    if field == 0:
        raise _Malformed
    return field, wire


def _skip(stream: BinaryIO, wire: int) -> None:
    if wire == 0:
        _varint(stream)
    elif wire in (1, 5):
        if len(stream.read(8 if wire == 1 else 4)) != (8 if wire == 1 else 4):
            raise _Malformed
    else:  # groups (3, 4) do not occur in ONNX; 6 and 7 do not exist
        raise _Malformed


def _varint(stream: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise _Malformed
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _Malformed
