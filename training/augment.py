"""Optional DiffAugment for the discriminator's inputs (docs/MODEL.md §6; off in the official default).

With probability `prob` per call, a batch (differentiably; the trainer calls it separately for the
reals and the fakes, as the official code does) goes through the listed transforms in order:
- `flip`: the whole batch flipped left-right with probability 1/2 (the official wrapper's flip);
- `cutout`: zero a square of half the side at a random position, per sample;
- `translation`: shift by up to 1/8 of the side in x and y, zero-filled, per sample.
The default, `flip,cutout,translation`, is the official order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import AUG_TYPES  # noqa: E402,F401


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)  # (B, H, 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)  # (B, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2): the border is the zero fill
    flat = (rows * (w + 2) + cols).reshape(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.reshape(b, x.shape[1], -1).gather(2, flat).reshape_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, prob: float, types: tuple[str, ...] = AUG_TYPES) -> torch.Tensor:
    """Augment the batch with probability `prob` (Python RNG-free: uses torch's RNG only)."""
    if prob <= 0 or torch.rand(()).item() >= prob:
        return x
    for name in types:
        x = {"flip": random_flip, "translation": translation, "cutout": cutout}[name](x)
    return x


def random_flip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(3,)) if torch.rand(()).item() < 0.5 else x
