"""`render_painting`: a model's painting as an animated GIF, an MP4 and the paper's step grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from fpa_export.common.errors import FpaError
from .frames import PaintingFrames, paint
from .layout import MODES, animation, animation_size, picture_size, step_grid, to_hwc
from .writers import (MAX_DELAY_MS, animation_format, check_output, picture_format, write_animation,
                      write_mp4, write_picture)

MAX_SCALE = 16              # as fpa-vis --scale
MIN_FPS = 0.02              # a frame of 50 s at most (MAX_DELAY_MS: a minute)
MAX_SIDE = 65_535           # pixels a side: the largest GIF or JPEG picture
MAX_MEMORY = 4 << 30        # bytes a painting may hold at once: frames, tiles and pictures


@dataclass
class PaintingJob:
    """What to draw (the options of `fpa-gif`)."""
    seeds: Sequence[int] = (0,)
    index: int = 0                # image index under each seed, as in `fpa-sample --seed S`
    mode: str = "partial"         # partial | updates | both
    fps: float = 8.0
    scale: int = 0                # nearest-neighbour factor; 0 = enough for tiles of ≥ 64 px
    hold_last_ms: int = 1500
    columns: int = 8              # samples per row of the animation
    truncation: float = 1.0

    def check(self) -> None:
        if self.mode not in MODES:
            raise FpaError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if not self.seeds:
            raise FpaError("give at least one seed")
        if self.index < 0 or self.scale < 0 or self.hold_last_ms < 0 or self.columns < 1:
            raise FpaError("--index, --scale and --hold-last must be ≥ 0, columns ≥ 1")
        if self.scale > MAX_SCALE:
            raise FpaError(f"--scale is at most {MAX_SCALE}, got {self.scale}")
        if not MIN_FPS <= self.fps or self.hold_last_ms > MAX_DELAY_MS:
            raise FpaError(f"--fps must be at least {MIN_FPS:g} and --hold-last at most {MAX_DELAY_MS} ms "
                           f"(the longest delay a GIF frame can hold), got {self.fps:g} and "
                           f"{self.hold_last_ms}")

    def check_size(self, config, movie: bool = True, grid: bool = False) -> None:
        """Refuse, before any painting, a painting whose pictures exceed `MAX_SIDE` pixels a side or
        whose frames and pictures would need more than `MAX_MEMORY` (too many seeds, too large a
        --scale)."""
        side = config.image_size * (self.scale or auto_scale(config.image_size))
        count, frames = len(self.seeds), config.num_steps + (config.unet is not None)
        pixels = count * config.num_steps * config.channels * config.image_size ** 2
        needed = 2 * pixels * 4 * 2  # updates and partial sums in float32, drawn and displayed
        needed += 2 * count * frames * config.channels * side ** 2  # their uint8 tiles, upscaled
        pictures = []
        if movie:
            width, height = animation_size(count, self.columns, self.mode, side)
            pictures.append(("animation frames", width, height))
            needed += frames * width * height * config.channels
        if grid:
            width, height = picture_size(2 * count, frames, side)
            pictures.append(("step grid", width, height))
            needed += width * height * config.channels
        for what, width, height in pictures:
            if max(width, height) > MAX_SIDE:
                raise FpaError(f"the {what} would be {width}×{height} px, more than {MAX_SIDE:,} px a "
                               "side: use fewer seeds, more --columns or a smaller --scale")
        if needed > MAX_MEMORY:
            raise FpaError(f"{count} seed(s) in tiles of {side} px need about {needed / 2**30:.1f} GiB "
                           f"(at most {MAX_MEMORY >> 30} GiB): use fewer seeds or a smaller --scale")


@dataclass
class PaintingOutputs:
    frames: PaintingFrames
    written: dict[str, Path] = field(default_factory=dict)   # "gif" | "mp4" | "grid" → path
    frame_count: int = 0
    frame_size: tuple[int, int] = (0, 0)                     # (width, height) in pixels


def auto_scale(image_size: int, tile: int = 64) -> int:
    """The smallest nearest-neighbour factor that makes tiles at least `tile` pixels (the paper's
    grids show 64-px images)."""
    return max(1, -(-tile // image_size))


def open_painter(model=None, backend: str = "auto", device: str = "cpu", precision=None):
    """A Sampler with painting steps, from the one factory (`fpa_export.runtime.make_sampler`): torch
    for checkpoints, the graph's runtime for exported steps graphs; a graph without steps is refused
    before anything is painted."""
    from fpa_export.runtime.factory import make_sampler

    return make_sampler(model, backend=backend, device=device, precision=precision, purpose="steps")


def _check_suffixes(animation: Optional[Path], grid: Optional[Path], mp4: Optional[Path]) -> None:
    """Refuse a file name whose suffix is not its format's before anything is painted or written."""
    if animation is not None:
        animation_format(animation)
    if grid is not None:
        picture_format(grid)
    if mp4 is not None and animation_format(mp4) != "mp4":
        raise FpaError(f"{mp4}: --mp4 needs a .mp4 name")


def render_painting(sampler, job: PaintingJob, gif: Optional[Path] = None, grid: Optional[Path] = None,
                    mp4: Optional[Path] = None, inputs: Optional[dict] = None) -> PaintingOutputs:
    """Paint `job.seeds` with `sampler` and write whichever of gif / grid / mp4 is given; `gif` is any
    animation (.gif, .png as animated PNG, .mp4) and `grid` a .png or .jpg, by their suffixes.
    Outputs that name one file, or a file of `inputs` (description → path), or that would land in a
    sample folder or replace a file not written here (`writers.check_output`), are refused first."""
    from fpa_export.common.atomic import check_outputs, check_writable

    job.check()
    _check_suffixes(gif, grid, mp4)
    check_outputs({"the animation": gif, "the step grid": grid, "the video": mp4}, inputs)
    job.check_size(sampler.config, movie=gif is not None or mp4 is not None, grid=grid is not None)

    for target in (gif, grid, mp4):  # a read-only folder fails now, not after the painting
        if target is not None:
            check_writable(target)
            check_output(target)
    frames = paint(sampler, job.seeds, job.index, job.truncation)
    scale = job.scale or auto_scale(sampler.config.image_size)
    outputs = PaintingOutputs(frames)
    if gif is not None or mp4 is not None:
        movie = to_hwc(animation(frames, job.mode, job.columns, scale))
        outputs.frame_count, outputs.frame_size = len(movie), (movie.shape[2], movie.shape[1])
        if mp4 is not None:  # first: a missing video extra fails before anything is written
            outputs.written["mp4"] = write_mp4(mp4, movie, job.fps, job.hold_last_ms)
        if gif is not None:
            outputs.written["gif"] = write_animation(gif, movie, job.fps, job.hold_last_ms)
    if grid is not None:
        outputs.written["grid"] = write_picture(grid, to_hwc(step_grid(frames, scale)))
    return outputs
