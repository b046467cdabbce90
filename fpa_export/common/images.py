"""Image conventions shared by training, sampling, GIFs and metrics (docs/MODEL.md §6).

- Generator outputs live in [-1, 1] (tanh), but real images are fed in [0, 1]: the generator learns to
  paint in [0, 1] and, as in the paper, saving or scoring clamps to [0, 1] (negative values are black).
- uint8 conversion is floor(255·clamp(x, 0, 1) + 0.5), i.e. round-half-up — the rule of torchvision's
  `save_image`, which the official code used. `to_uint8` is the only place it is written.
- Real images go through the official transform, torchvision's `Resize(S)` then `CenterCrop(S)`, with
  the sizes and offsets computed exactly as torchvision computes them (`resize_center_crop`; torchvision
  itself is not imported). Pillow's bilinear resize is antialiased, as torchvision's PIL path is.
- Files that cannot be decoded, or that hold more pixels than `MAX_PIXELS` (decompression bombs), raise
  `UnreadableImage`; folder readers skip and count them instead of stopping.

torch is imported only by the functions that take or return tensors (sampling an exported graph uses
the numpy ones and never imports it).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import FpaError

# Read from folders (case-insensitive). The official code globs jpg, jpeg, png and tiff; webp, bmp and
# .tif are a superset.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb warning limit (≈ 9459²)


class UnreadableImage(FpaError, OSError):
    """A file that cannot be used as an image: undecodable, truncated or oversized."""


def to_uint8(images):
    """(…, C, H, W) float images → uint8 of the same shape: clamp to [0, 1], ×255, round half up.
    A torch tensor gives a tensor, a numpy array an array: the same float32 operations, the same bytes."""
    if isinstance(images, np.ndarray):
        scaled = np.clip(images.astype(np.float32, copy=False), np.float32(0), np.float32(1))
        return np.floor(scaled * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    import torch

    return torch.floor(images.float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def to_hwc(pictures: np.ndarray) -> np.ndarray:
    """uint8 (…, C, H, W) → (…, H, W) for greyscale or (…, H, W, 3), contiguous, as Pillow, imageio
    and the PNG/JPEG encoders expect. The one CHW → HWC conversion of the project."""
    if pictures.shape[-3] == 1:
        return np.ascontiguousarray(pictures[..., 0, :, :])
    return np.ascontiguousarray(np.moveaxis(pictures, -3, -1))


def to_hwc_array(image) -> np.ndarray:
    """One uint8 (C, H, W) tensor → a (H, W) or (H, W, 3) numpy array for Pillow/imageio."""
    return to_hwc(image.detach().cpu().numpy())


# -- grids: tiles separated and framed by 2-px padding of grey 0.5, as torchvision's make_grid draws
# the paper's figures; R×K tiles of side S give (R·(S+2)+2) × (K·(S+2)+2) pixels.
GRID_PADDING = 2
GRID_PAD_VALUE = 128  # to_uint8(0.5): grey 0.5, rounded half up


def grid(tiles: np.ndarray, padding: int = GRID_PADDING, pad_value: int = GRID_PAD_VALUE) -> np.ndarray:
    """uint8 tiles (R, K, C, S, S) → one picture (C, R·(S+p)+p, K·(S+p)+p)."""
    rows, cols, channels, height, width = tiles.shape
    out = np.full((channels, rows * (height + padding) + padding, cols * (width + padding) + padding),
                  pad_value, dtype=np.uint8)
    for r in range(rows):
        for k in range(cols):
            top, left = padding + r * (height + padding), padding + k * (width + padding)
            out[:, top:top + height, left:left + width] = tiles[r, k]
    return out


def arrange(tiles: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (N, C, S, S) → (rows, columns, C, S, S), the last row filled up with grey tiles."""
    rows = -(-len(tiles) // columns)
    filler = [np.full_like(tiles[0], GRID_PAD_VALUE)] * (rows * columns - len(tiles))
    return np.stack(list(tiles) + filler).reshape(rows, columns, *tiles.shape[1:])


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(size)`: the shorter side becomes `size`, the longer
    `int(size * long / short)` (truncated, as torchvision does)."""
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """(left, top) of torchvision's `CenterCrop(size)`: int(round((side − size) / 2)), Python rounding."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def resize_center_crop(image, size: int):
    """A PIL image → size×size: torchvision's `Resize(size)` (bilinear) then `CenterCrop(size)`."""
    from PIL import Image

    new_w, new_h = resized_size(*image.size, size)
    if (new_w, new_h) != image.size:  # torchvision returns the image unchanged in that case too
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = crop_offsets(new_w, new_h, size)
    return image.crop((left, top, left + size, top + size))


def load_image_array(path: str | Path, size: int, channels: int) -> np.ndarray:
    """Read one file → uint8 (size, size) or (size, size, 3), through the official transform.
    Raises UnreadableImage (undecodable, truncated, or more than MAX_PIXELS pixels)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UnreadableImage(f"{path}: {img.width}×{img.height} pixels is over the "
                                          f"limit of {MAX_PIXELS}")
                img = resize_center_crop(_eight_bit(img).convert("L" if channels == 1 else "RGB"), size)
                return np.asarray(img, dtype=np.uint8).copy()
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: cannot be decoded ({type(err).__name__})") from None


def _eight_bit(img):
    """A 16-bit greyscale image (Pillow's modes I;16* and, holding values over 255, I) as 8-bit L,
    scaled 65535 → 255; Pillow's own convert would clip it to white. Other modes as they are."""
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode == "I"):
        return img
    values = np.asarray(img, dtype=np.int64)
    if img.mode == "I" and values.max(initial=0) <= 255:
        return img  # 32-bit integers that hold 8-bit values
    return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8))


def load_image(path: str | Path, size: int, channels: int):
    """Read one file → a float tensor (C, size, size) in [0, 1] (`ToTensor` of the official transform)."""
    import torch

    array = load_image_array(path, size, channels)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted (so orders are reproducible)."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_image_batches(paths: list[Path], size: int, channels: int,
                       batch_size: int = 64) -> Iterator[tuple[object, int]]:
    """Yield (tensor batch (B, C, size, size) in [0, 1], number of unreadable or oversized files skipped)."""
    import torch

    for start in range(0, len(paths), batch_size):
        images, skipped = [], 0
        for path in paths[start:start + batch_size]:
            try:
                images.append(load_image(path, size, channels))
            except UnreadableImage:
                skipped += 1
        if images:
            yield torch.stack(images), skipped
        elif skipped:
            yield torch.empty(0, channels, size, size), skipped


def check_outside(out, image_dir) -> None:
    """Refuse a folder to write that is `image_dir` or inside it: every image under `image_dir` is read
    (recursively), so what is written there would be read back as data."""
    source, target = Path(image_dir).resolve(), Path(out).resolve()
    if target == source or source in target.parents:
        raise FpaError(f"{out}: the folder to write is inside the images read ({image_dir}); give a "
                       "folder outside it")

