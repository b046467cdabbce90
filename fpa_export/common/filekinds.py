"""What a file is by its first bytes, where a command must know before it reads or replaces it."""
from __future__ import annotations

import os


def looks_like_onnx(path: str | os.PathLike) -> bool:
    """Whether the file's first bytes are an ONNX ModelProto's (field 1, ir_version, then a string field)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(3)
    except OSError:
        return False
    return onnx_head(head)


def onnx_head(head: bytes) -> bool:
    """The first bytes of a serialised ONNX model: `ir_version` (tag 0x08, a one-byte varint), then one
    of the string fields that follow it (producer, domain, graph …)."""
    return len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a)
