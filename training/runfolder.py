"""Housekeeping of a run folder before a run writes into it (issue: nothing mixed, lost or leaked).

- `locked(out, is_main)`: the folder's advisory lock (`fpa_export.common.lock.folder_lock`), taken by
  the writing process (rank 0 under DDP) for the whole run, so a second `fpa-train` on the same `--out`
  is refused in one line instead of interleaving its writes with the first's.
- `sweep_stale_temp_files(out)`: removes temp files that a killed checkpoint, config, log or grid write
  left behind. Only ours: atomic writes name them `.<target>.<8 random chars>.tmp`
  (`fpa_export.common.atomic`), and only those whose target is a run-folder file and which are older
  than `min_age` seconds are removed; anything else in the folder is left alone.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

from fpa_export.common.atomic import sweep_stale_temps
from fpa_export.common.lock import folder_lock

RUN_FILES = re.compile(r"(latest\.pt|best\.pt|config\.json|log\.jsonl|step_\d+(_raw)?\.png)")
STALE_AFTER_S = 60.0


def locked(out: Path, is_main: bool):
    """The run folder's lock for the main process; a no-op context for the other DDP ranks."""
    return folder_lock(out, "run folder") if is_main else contextlib.nullcontext(out)


def sweep_stale_temp_files(out: Path, min_age: float = STALE_AFTER_S) -> list[Path]:
    """Delete our stale temp files of run files in `out` and `out/samples`; returns what was removed."""
    return [path for folder in (out, out / "samples") for path in sweep_stale_temps(folder, min_age, RUN_FILES)]
