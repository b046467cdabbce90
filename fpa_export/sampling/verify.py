"""`--verify` on resume: re-derive a spread of the files already in a folder and compare them.

By default a rerun checks that every existing file of its shard decodes completely to an image of the
model's size and channels (`imagefiles.is_valid`), and that samples.json names the same model, precision
seed and format; it does not look at what the images show. `--verify` also repaints up to
`VERIFY_FILES` existing files (spread evenly over the indices present) and compares them with the files:
identical bytes pass; otherwise the decoded pixels must agree as closely as two runtimes of one model do
(the precision probe's tolerance: ≥ 99 % of values within 2 levels, mean ≤ 0.5 level). A valid image of
other content fails, and the run stops before writing anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fpa_export.runtime.precision import MAX_MEAN_LEVELS, MIN_WITHIN, agreement
from fpa_export.common.images import to_hwc
from .imagefiles import decode, encode, file_name
from .manifest import FolderMismatch

VERIFY_FILES = 32


def spread(indices: Sequence[int], count: int = VERIFY_FILES) -> list[int]:
    """Up to `count` of `indices` (sorted), evenly spread, first and last included."""
    indices = sorted(indices)
    if len(indices) <= count:
        return indices
    step = (len(indices) - 1) / (count - 1)
    return sorted({indices[round(k * step)] for k in range(count)})


def verify_existing(outdir: Path, present: Sequence[int], paint, fmt: str, jpeg_quality: int) -> int:
    """Repaint a spread of `present` indices with `paint(indices) → uint8 (B, C, S, S)` and compare;
    FolderMismatch naming the first file that differs. Returns how many files were checked."""
    chosen = spread(present)
    if not chosen:
        return 0
    fresh = to_hwc(paint(chosen))
    for index, image in zip(chosen, fresh):
        path = outdir / file_name(index, fmt)
        data = path.read_bytes()
        if data == encode(image, fmt, jpeg_quality):
            continue
        expected = decode(encode(image, fmt, jpeg_quality)) if fmt == "jpg" else image
        found = decode(data)
        figures = agreement(torch.tensor(expected), torch.tensor(np.asarray(found))) \
            if found.shape == expected.shape else None
        if figures is None or figures["within_2_levels"] < MIN_WITHIN \
                or figures["mean_levels"] > MAX_MEAN_LEVELS:
            raise FolderMismatch(f"{path}: --verify repainted it and got another image; the folder "
                                 "holds images this model, seed and precision did not paint (use "
                                 "another --outdir or --overwrite)")
    return len(chosen)
