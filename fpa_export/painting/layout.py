"""Tiling frames into pictures: the paper's step grid, animation frames, sample grids.

Tiles are separated (and framed) by 2-px padding of grey 0.5, as torchvision's `make_grid` draws the
paper's figures: a grid of R×K tiles of side S is (R·(S+2)+2) × (K·(S+2)+2) pixels, so the 2 × 16 step
grid of 64-px images is 134 × 1058. Everything here works on uint8 (values from `to_uint8`).
"""
from __future__ import annotations


import numpy as np

from fpa_export.common.errors import FpaError
from fpa_export.common.images import (GRID_PAD_VALUE as PAD_VALUE, GRID_PADDING, arrange, grid, to_hwc,  # noqa: F401
                                      to_uint8)
from .frames import PaintingFrames

MODES = ("partial", "updates", "both")


def sample_grid(images: np.ndarray, columns: int = 8, scale: int = 1) -> np.ndarray:
    """uint8 images (N, C, S, S) → one padded grid picture (C, H, W), tiles upscaled by `scale`."""
    return grid(arrange(upscale(images, scale), min(columns, len(images))))


def _uint8(frames: PaintingFrames, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 updates, partials (B, T, C, kS, kS) and refined images, upscaled by k = `scale`."""
    refined = None if frames.refined is None else upscale(to_uint8(frames.refined).numpy(), scale)
    return (upscale(to_uint8(frames.updates).numpy(), scale),
            upscale(to_uint8(frames.partials).numpy(), scale), refined)


def step_grid(frames: PaintingFrames, scale: int = 1) -> np.ndarray:
    """The paper's static figure (C, H, W): per sample two rows × T columns — rank-1 updates on top,
    partial sums below — plus one column for a U-Net's refined image (below a grey tile). Tiles are
    upscaled by `scale` before the 2-px padding is drawn."""
    updates, partials, refined = _uint8(frames, scale)  # (B, T, C, S, S)
    if refined is not None:
        updates = np.concatenate([updates, np.full_like(updates[:, :1], PAD_VALUE)], axis=1)
        partials = np.concatenate([partials, refined[:, None]], axis=1)
    rows = np.stack([updates, partials], axis=1)  # (B, 2, T', C, S, S)
    return grid(rows.reshape(-1, *rows.shape[2:]))


def animation(frames: PaintingFrames, mode: str = "partial", columns: int = 8,
              scale: int = 1) -> np.ndarray:
    """Animation frames (F, C, H, W): frame t tiles step t of every sample, up to `columns` samples
    per row. partial: W_t; updates: x_t; both: x_t above W_t (the paper's layout). U-Net models end
    with one frame of the refined image (below a grey tile in `both`). Tiles upscaled by `scale`."""
    if mode not in MODES:
        raise FpaError(f"mode must be one of {MODES}, got {mode!r}")
    updates, partials, refined = _uint8(frames, scale)  # (B, T, C, S, S)
    steps = [(updates[:, t], partials[:, t]) for t in range(updates.shape[1])]
    if refined is not None:
        steps.append((np.full_like(refined, PAD_VALUE), refined))
    columns = min(columns, updates.shape[0])
    return np.stack([_frame(update, partial, mode, columns) for update, partial in steps])


def _frame(update: np.ndarray, partial: np.ndarray, mode: str, columns: int) -> np.ndarray:
    if mode != "both":
        return grid(arrange(partial if mode == "partial" else update, columns))
    top, bottom = arrange(update, columns), arrange(partial, columns)  # (R, K, C, S, S) each
    return grid(np.stack([top, bottom], axis=1).reshape(-1, *top.shape[1:]))


def picture_size(rows: int, columns: int, side: int) -> tuple[int, int]:
    """(width, height) in pixels of a padded grid of rows × columns tiles of `side` px (`grid`)."""
    return (columns * (side + GRID_PADDING) + GRID_PADDING, rows * (side + GRID_PADDING) + GRID_PADDING)


def animation_size(samples: int, columns: int, mode: str, side: int) -> tuple[int, int]:
    """(width, height) of each frame `animation` draws for `samples` samples of `side` px."""
    columns = min(columns, samples)
    rows = -(-samples // columns) * (2 if mode == "both" else 1)
    return picture_size(rows, columns, side)


def upscale(pictures: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (…, H, W) by an integer factor (pixels stay crisp)."""
    if scale == 1:
        return pictures
    return pictures.repeat(scale, axis=-2).repeat(scale, axis=-1)

