"""Writing pictures and animations: PNG, GIF (imageio v3 + Pillow) and MP4 (the [video] extra).

GIF frame delays are stored in units of 10 ms, and browsers show delays under 20 ms as 100 ms, so a
frame lasts round(1000 / fps) ms rounded to 10 ms and at least 20 ms (at most 50 fps). The last frame
is held for `hold_last_ms`. The GIF loops forever (loop=0). Pillow merges identical consecutive frames
into one (adding their delays), which changes the frame count but not the animation. Greyscale frames
are stored exactly; RGB frames go through Pillow's 256-colour palette quantisation, as every GIF does.
Every file is written atomically.
"""
from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import numpy as np

from fpa_export.common.errors import FpaError, MissingExtra
from fpa_export.common.atomic import atomic_write

MIN_GIF_DELAY_MS = 20


def frame_delay_ms(fps: float) -> int:
    """Per-frame delay of a GIF at `fps`: a multiple of 10 ms, at least 20 ms."""
    if fps <= 0:
        raise FpaError(f"--fps must be positive, got {fps}")
    return max(MIN_GIF_DELAY_MS, int(round(100.0 / fps)) * 10)


def write_png(path: str | Path, picture: np.ndarray) -> Path:
    """uint8 (H, W) or (H, W, 3) → PNG, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def gif_bytes(frames: np.ndarray, fps: float, hold_last_ms: int) -> bytes:
    """uint8 frames (F, H, W) or (F, H, W, 3) → an endlessly looping GIF."""
    import imageio.v3 as iio

    delay = frame_delay_ms(fps)
    last = max(delay, int(round(hold_last_ms / 10.0)) * 10)
    durations = [delay] * (len(frames) - 1) + [last]
    return iio.imwrite("<bytes>", frames, extension=".gif", is_batch=True, duration=durations, loop=0)


def write_gif(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    data = gif_bytes(frames, fps, hold_last_ms)
    return atomic_write(path, lambda handle: handle.write(data))


def mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    """H.264 MP4 through imageio-ffmpeg; the last frame repeated to last `hold_last_ms`. Frames are
    made RGB and padded with grey to even sides (yuv420p needs them)."""
    if not mp4_available():
        raise MissingExtra("imageio-ffmpeg", "video", "for MP4 output")
    import imageio.v3 as iio

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    height, width = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), constant_values=128)
    extra = max(0, math.ceil(hold_last_ms * fps / 1000.0) - 1)
    frames = np.concatenate([frames, np.repeat(frames[-1:], extra, axis=0)])
    path = Path(path)
    temp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # ffmpeg writes a file, not a buffer
    try:
        iio.imwrite(temp, frames, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1,
                    output_params=["-pix_fmt", "yuv420p"])
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    return path
