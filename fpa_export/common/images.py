"""Image conventions shared by training, sampling, GIFs and metrics (FPA_SPEC §6).

- Generator outputs live in [-1, 1] (tanh), but real images are fed in [0, 1]: the generator learns to
  paint in [0, 1] and, as in the paper, saving or scoring clamps to [0, 1] (negative values are black).
- uint8 conversion is floor(255·clamp(x, 0, 1) + 0.5), i.e. round-half-up — the rule of torchvision's
  `save_image`, which the official code used. `to_uint8` is the only place it is written.
- Real images are resized so the shorter side equals the target size (bilinear), then centre-cropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(…, C, H, W) float images → uint8 of the same shape: clamp to [0, 1], ×255, round half up."""
    return torch.floor(images.float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def to_hwc_array(image: torch.Tensor) -> np.ndarray:
    """One uint8 (C, H, W) tensor → a (H, W) or (H, W, 3) numpy array for Pillow/imageio."""
    array = image.detach().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))


def resize_center_crop(image, size: int):
    """A PIL image → size×size: shorter side resized to `size` (bilinear), then centre-cropped."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """Read one file → float (C, size, size) in [0, 1] (converted to 'L' or 'RGB' first)."""
    from PIL import Image

    with Image.open(path) as img:
        img = resize_center_crop(img.convert("L" if channels == 1 else "RGB"), size)
        array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted (so orders are reproducible)."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_image_batches(paths: list[Path], size: int, channels: int,
                       batch_size: int = 64) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield (batch (B, C, size, size) in [0, 1], number of unreadable files skipped in it)."""
    for start in range(0, len(paths), batch_size):
        images, skipped = [], 0
        for path in paths[start:start + batch_size]:
            try:
                images.append(load_image(path, size, channels))
            except (OSError, ValueError, SyntaxError):
                skipped += 1
        if images:
            yield torch.stack(images), skipped
        elif skipped:
            yield torch.empty(0, channels, size, size), skipped
