"""Writing the visualisations: a picture of the result (.png or .jpg) and, optionally, an animation of
the optimisation (.gif, .png as animated PNG, or .mp4), through the project's writers
(`fpa_export.painting.writers`: atomic, the format follows the suffix or the name is refused)."""
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


def write_picture(path: str | Path, image: torch.Tensor, scale: int = 1) -> Path:
    """The image as PNG or JPEG, by the suffix of `path`."""
    from ..painting.writers import write_picture as write

    return write(path, as_array(image, scale))


def write_animation(path: str | Path, frames: Sequence[torch.Tensor], duration_ms: int = 80,
                    scale: int = 1, hold_last_ms: int = 1000) -> Path:
    """An endlessly looping animation (GIF, animated PNG or MP4 by the suffix), `duration_ms` per frame
    (GIFs store multiples of 10 ms, ≥ 20 ms), the last frame held for `hold_last_ms`."""
    from ..painting.writers import write_animation as write

    if not frames:
        raise FpaError("no frames to write (the optimisation recorded none)")
    arrays = np.stack([as_array(frame, scale) for frame in frames])
    return write(path, arrays, fps=1000.0 / duration_ms, hold_last_ms=hold_last_ms)
