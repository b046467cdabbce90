"""Housekeeping of a run folder before a run writes into it (issue: nothing mixed, lost or leaked).

- `locked(out, is_main)`: the folder's advisory lock (`fpa_export.common.lock.folder_lock`), taken by
  the writing process (rank 0 under DDP) for the whole run, so a second `fpa-train` on the same `--out`
  is refused in one line instead of interleaving its writes with the first's.
- `sweep_stale_temp_files(out)`: removes temp files that a killed checkpoint, config, log or grid write
  left behind. Only ours: atomic writes name them `.<target>.<8 random chars>.tmp`
  (`fpa_export.common.atomic`), and only those whose target is a run-folder file and which are older
  than `min_age` seconds are removed; anything else in the folder is left alone.
- `check_fresh(out)`: a new run replaces the files of a run of ours stopped before its first latest.pt,
  never a folder's files of the same names that are not a run's.
- `run_record(out)`: the run's config.json, as a dict; `read_latest(out)`: the run's latest.pt.
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Optional

from fpa_export.common.atomic import sweep_stale_temps
from fpa_export.common.errors import FpaError
from fpa_export.common.lock import folder_lock

RUN_FILES = re.compile(r"(latest\.pt|best\.pt|config\.json|log\.jsonl|step_\d+(_raw)?\.png)")
STALE_AFTER_S = 60.0


def locked(out: Path, is_main: bool):
    """The run folder's lock for the main process; a no-op context for the other DDP ranks."""
    return folder_lock(out, "run folder") if is_main else contextlib.nullcontext(out)


def sweep_stale_temp_files(out: Path, min_age: float = STALE_AFTER_S) -> list[Path]:
    """Delete our stale temp files of run files in `out` and `out/samples`; returns what was removed."""
    return [path for folder in (out, out / "samples") for path in sweep_stale_temps(folder, min_age, RUN_FILES)]


def run_record(out: Path) -> Optional[dict]:
    """The run's config.json as a dict, or None when it is missing, unreadable or not a run's."""
    try:
        record = json.loads((Path(out) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("run"), dict) else None


def check_fresh(out: Path) -> None:
    """Before a new run writes into `out`: the run files there (config.json, log.jsonl, best.pt, sample
    grids) are replaced only when they are a run's of ours that stopped before its first latest.pt,
    known by its config.json, which a new run writes before any other file. Anything else of those
    names is a user's or another tool's: refused in one line, nothing touched."""
    out = Path(out)
    found = [name for name in ("config.json", "log.jsonl", "best.pt") if (out / name).exists()]
    grid = next(out.glob("samples/step_*.png"), None)
    found += [f"samples/{grid.name}"] if grid is not None else []
    if found and run_record(out) is None:
        raise FpaError(f"{out}: holds {', '.join(found)}, which a new run would overwrite, and is not a run "
                       "folder of fpa-train (no run config.json); pick a new --out")


def read_latest(out: Path) -> dict:
    """The run's latest.pt, read as every checkpoint is, with a step and a train_state a resume can
    load (`trainer.state_problem`); a damaged one is one line that, when the run has a best.pt, says
    how to resume from that instead."""
    from fpa_export.models import CheckpointError, read_checkpoint
    from .trainer import state_problem

    path = Path(out) / "latest.pt"
    try:
        ckpt = read_checkpoint(path)
        step, state = ckpt.get("step"), ckpt.get("train_state")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{path}: its step is {step!r}, not a whole number ≥ 0 (edited?)")
        if state is not None and not isinstance(state, dict):
            raise CheckpointError(f"{path}: its train_state is not a dict (edited?)")
        problem = state_problem(state) if state else None
        if problem:
            raise CheckpointError(f"{path}: {problem} (edited, or not written by fpa-train?)")
        return ckpt
    except CheckpointError as err:
        if not (Path(out) / "best.pt").is_file():
            raise
        raise CheckpointError(f"{err}; the run's best.pt can be resumed instead: copy it over latest.pt "
                              "(the run then continues from best.pt's step)") from None
