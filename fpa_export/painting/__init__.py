"""Visualising the painting (docs/MODEL.md §4): GIFs, MP4s and step grids of rank-by-rank generation.

    from fpa_export.painting import PaintingJob, open_painter, render_painting
    render_painting(open_painter("ckpt.pt"), PaintingJob(seeds=range(8)), gif=Path("painting.gif"))
"""
from .frames import PaintingFrames, display_frames, paint, rescale_to_final
from .layout import MODES, animation, grid, sample_grid, step_grid, to_hwc, upscale
from .render import PaintingJob, PaintingOutputs, auto_scale, open_painter, render_painting
from .writers import (animation_format, apng_bytes, frame_delay_ms, gif_bytes, mp4_available, picture_format,
                      write_animation, write_apng, write_gif, write_mp4, write_picture, write_png)

__all__ = ["PaintingFrames", "display_frames", "paint", "rescale_to_final", "MODES", "animation",
           "grid", "sample_grid", "step_grid", "to_hwc", "upscale", "PaintingJob", "PaintingOutputs",
           "open_painter", "render_painting", "auto_scale", "frame_delay_ms", "gif_bytes", "mp4_available",
           "write_gif", "write_mp4", "write_png", "animation_format", "picture_format", "apng_bytes",
           "write_animation", "write_apng", "write_picture"]
