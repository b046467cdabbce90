"""Writing pictures and animations: PNG/JPEG, GIF and APNG (imageio v3 + Pillow), MP4 (the [video] extra).

The file's suffix decides its format, or the write is refused before anything is computed or written
(`picture_format`, `animation_format`): a `.png` never receives GIF data. Animations: `.gif`, `.png` /
`.apng` (animated PNG: exact colours, millisecond delays) and `.mp4`; pictures: `.png`, `.jpg`/`.jpeg`.

GIF frame delays are stored in units of 10 ms, and browsers show delays under 20 ms as 100 ms, so a
frame lasts round(1000 / fps) ms rounded to 10 ms and at least 20 ms (at most 50 fps). The last frame
is held for `hold_last_ms`; no frame is held more than a minute (`MAX_DELAY_MS`). The GIF loops forever (loop=0). Pillow merges identical consecutive frames
into one (adding their delays), which changes the frame count but not the animation. Greyscale frames
are stored exactly; RGB frames go through Pillow's 256-colour palette quantisation, as every GIF does.
Every file is written atomically and carries the mark SOFTWARE, so a later write replaces only
files written here (`check_output`).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from fpa_export.common.errors import FpaError, MissingExtra
from fpa_export.common.optional import available
from fpa_export.common.atomic import atomic_write

MIN_GIF_DELAY_MS = 20
MAX_DELAY_MS = 60_000  # a frame's delay (--fps, --hold-last): a GIF stores at most 655.35 s per frame
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
ANIMATION_FORMATS = {".gif": "gif", ".png": "apng", ".apng": "apng", ".mp4": "mp4"}
JPEG_QUALITY = 95
SOFTWARE = "fpa-export"  # the mark of every picture and animation written here (`made_here`)
MP4_SCAN = 4 << 20  # bytes read at each end of an existing .mp4 to find the mark (never all of a video)


def made_here(path: str | Path) -> bool:
    """Whether the file carries our mark: a PNG's Software text, a GIF's or JPEG's comment, the MP4
    comment. An output is replaced only when it does (`check_output`)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":  # the comment sits in the metadata box, at the start or the end
        try:
            with open(path, "rb") as handle:
                head = handle.read(MP4_SCAN)
                handle.seek(max(0, path.stat().st_size - MP4_SCAN))
                return SOFTWARE.encode() in head or SOFTWARE.encode() in handle.read(MP4_SCAN)
        except OSError:
            return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            tag = image.info.get("Software") or image.info.get("comment") or b""
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return False
    return (tag.decode("utf-8", "replace") if isinstance(tag, bytes) else str(tag)) == SOFTWARE


def check_output(path: str | Path) -> None:
    """Before any work: a picture or animation is never written into a sample folder (FID tools would
    read it as a sample) nor over a file that it did not write (a photo, a sample, notes): one line."""
    from fpa_export.common.atomic import check_replaceable
    from fpa_export.sampling.manifest import enclosing_sample_folder

    path = Path(path)
    folder = enclosing_sample_folder(path)
    if folder is not None:
        raise FpaError(f"{path}: inside the sample folder {folder}, whose images FID tools read as "
                       "samples; write it elsewhere")
    check_replaceable(path, "a picture or animation written by fpa-export", made_here, "delete it first")


def _format(path: str | Path, formats: dict, what: str, names: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        shown = f"'{suffix}'" if suffix else "no suffix"
        raise FpaError(f"{path}: {shown} is no {what} format we write; name it {names}")
    return formats[suffix]


def picture_format(path: str | Path) -> str:
    """Pillow's format name for a picture path (PNG or JPEG), or a one-line FpaError."""
    return _format(path, PICTURE_FORMATS, "picture", ".png or .jpg")


def animation_format(path: str | Path) -> str:
    """'gif', 'apng' or 'mp4' for an animation path, or a one-line FpaError."""
    return _format(path, ANIMATION_FORMATS, "animation", ".gif, .png (animated PNG) or .mp4")


def frame_delay_ms(fps: float) -> int:
    """Per-frame delay of a GIF at `fps`: a multiple of 10 ms, at least 20 ms."""
    if fps <= 0:
        raise FpaError(f"--fps must be positive, got {fps}")
    return max(MIN_GIF_DELAY_MS, int(round(100.0 / fps)) * 10)


def write_picture(path: str | Path, picture: np.ndarray) -> Path:
    """uint8 (H, W) or (H, W, 3) → PNG or JPEG (quality 95) by the suffix, atomically."""
    from PIL import Image

    image_format = picture_format(path)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=image_format, **_mark(image_format))
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _mark(image_format: str) -> dict:
    """Pillow save options that carry SOFTWARE (and JPEG's quality)."""
    if image_format == "JPEG":
        return {"quality": JPEG_QUALITY, "comment": SOFTWARE}
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    return {"pnginfo": info}


def write_png(path: str | Path, picture: np.ndarray) -> Path:
    """uint8 (H, W) or (H, W, 3) → PNG, atomically; a path not ending in .png is refused."""
    if picture_format(path) != "PNG":
        raise FpaError(f"{path}: a PNG must be named .png")
    return write_picture(path, picture)


def write_animation(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    """uint8 frames (F, H, W[, 3]) → GIF, animated PNG or MP4, chosen by the suffix of `path`."""
    writer = {"gif": write_gif, "apng": write_apng, "mp4": write_mp4}[animation_format(path)]
    return writer(path, frames, fps, hold_last_ms)


def gif_bytes(frames: np.ndarray, fps: float, hold_last_ms: int) -> bytes:
    """uint8 frames (F, H, W) or (F, H, W, 3) → an endlessly looping GIF."""
    import imageio.v3 as iio

    delay = frame_delay_ms(fps)
    last = max(delay, int(round(hold_last_ms / 10.0)) * 10)
    durations = [delay] * (len(frames) - 1) + [last]
    return iio.imwrite("<bytes>", frames, extension=".gif", is_batch=True, duration=durations, loop=0,
                       comment=SOFTWARE.encode())


def write_gif(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    """A looping GIF, atomically; a path not ending in .gif is refused."""
    if animation_format(path) != "gif":
        raise FpaError(f"{path}: a GIF must be named .gif")
    data = gif_bytes(frames, fps, hold_last_ms)
    return atomic_write(path, lambda handle: handle.write(data))


def apng_bytes(frames: np.ndarray, fps: float, hold_last_ms: int) -> bytes:
    """uint8 frames (F, H, W) or (F, H, W, 3) → an endlessly looping animated PNG. Delays are whole
    milliseconds (no 10-ms units as in GIF); colours are exact (no palette)."""
    from PIL import Image

    if fps <= 0:
        raise FpaError(f"--fps must be positive, got {fps}")
    delay = int(round(1000.0 / fps))
    durations = [delay] * (len(frames) - 1) + [max(delay, int(hold_last_ms))]
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PNG", save_all=True, append_images=images[1:], duration=durations,
                   loop=0, **_mark("PNG"))
    return buffer.getvalue()


def write_apng(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    """An animated PNG, atomically; a path not ending in .png or .apng is refused."""
    if animation_format(path) != "apng":
        raise FpaError(f"{path}: an animated PNG must be named .png or .apng")
    data = apng_bytes(frames, fps, hold_last_ms)
    return atomic_write(path, lambda handle: handle.write(data))


def mp4_available() -> bool:
    return available("imageio_ffmpeg")


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, hold_last_ms: int) -> Path:
    """H.264 MP4 through imageio-ffmpeg; the last frame repeated to last `hold_last_ms`. Frames are
    made RGB and padded with grey to even sides (yuv420p needs them). The pixel format is given once,
    as imageio's `pixelformat` (also passing `-pix_fmt` in output_params made ffmpeg warn about
    multiple -pix_fmt options)."""
    if animation_format(path) != "mp4":
        raise FpaError(f"{path}: an MP4 must be named .mp4")
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
                    pixelformat="yuv420p", output_params=["-metadata", f"comment={SOFTWARE}"])
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    return path
