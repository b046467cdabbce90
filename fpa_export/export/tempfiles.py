"""Sweep the temporary files that killed exports leave behind.

Every file an export writes goes through `fpa_export.common.atomic.atomic_write`, whose temporary file
is `.<name>.<8 random characters>.tmp` beside the target. A process killed mid-write (kill -9, power
loss) leaves that file; nothing else would ever remove it. The next export into the same folder
removes the ones that are certainly ours and certainly abandoned: the name must be that pattern with
`<name>` ending in an export suffix (.onnx, .plan, .engine, .trt, or their .json sidecars), and the
file must be at least `STALE_AFTER_S` old — a concurrent export writing right now is younger than that.
"""
from __future__ import annotations

import os
from pathlib import Path
import re

from fpa_export.common.atomic import STALE_AFTER_S, TEMP_NAME, sweep_stale_temps

_EXPORT_TARGET = re.compile(r".+\.(onnx|plan|engine|trt)(\.json)?")


def is_export_temporary(name: str) -> bool:
    """Whether a file name is an atomic-write temporary of an export artefact or sidecar."""
    match = TEMP_NAME.fullmatch(name)
    return bool(match and _EXPORT_TARGET.fullmatch(match.group("target")))


def sweep_stale_temporaries(folder: str | os.PathLike, older_than_s: float = STALE_AFTER_S,
                            now: float | None = None) -> list[Path]:
    """Remove export temporaries in `folder` older than `older_than_s`; returns what was removed.
    Never fails an export: an unreadable folder or a file that vanished is skipped."""
    return sweep_stale_temps(folder, older_than_s, _EXPORT_TARGET, now)
