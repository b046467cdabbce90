"""Writing the visualisations: a PNG of the result and, optionally, a GIF of the optimisation, through
the project's picture writers (`fpa_export.painting.writers`: atomic, imageio v3, looping GIFs)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.images import to_hwc_array, to_uint8


def as_array(image: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) in [0, 1] → uint8 (H·scale, W·scale[, 3]), nearest-neighbour."""
    image = image[0] if image.dim() == 4 else image
    array = to_hwc_array(to_uint8(image))
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def write_png(path: str | Path, image: torch.Tensor, scale: int = 1) -> Path:
    from ..painting.writers import write_png as write

    return write(path, as_array(image, scale))


def write_gif(path: str | Path, frames: Sequence[torch.Tensor], duration_ms: int = 80,
              scale: int = 1, hold_last_ms: int = 1000) -> Path:
    """An endlessly looping GIF, `duration_ms` per frame (GIFs store multiples of 10 ms, ≥ 20 ms), the
    last frame held for `hold_last_ms`."""
    from ..painting.writers import write_gif as write

    if not frames:
        raise FpaError("no frames to write (the optimisation recorded none)")
    arrays = np.stack([as_array(frame, scale) for frame in frames])
    return write(path, arrays, fps=1000.0 / duration_ms, hold_last_ms=hold_last_ms)
