"""Builders of whole official-layout checkpoints for the converter's tests (docs/MODEL.md §7).

They write what the official `Trainer.save` writes, around a generator of ours, so the converter can be
tested without the official code. Test fixtures only: nothing in the package imports this file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from fpa_export.common.atomic import atomic_write
from fpa_export.convert.keys import OFFICIAL_VERSION, is_alias, official_generator_state_dict
from fpa_export.models import FPAGenerator


def official_checkpoint(generator: FPAGenerator, raw_generator: Optional[FPAGenerator] = None,
                        optimizer_state: bool = True) -> dict:
    """A dict laid out like the official `Trainer.save`: {'GAN', 'version', 'G_scaler', 'D_scaler',
    'G_opt', 'D_opt'}. `generator` becomes the EMA weights `GE.`, `raw_generator` (default: the same)
    the trained weights `G.`. The discriminator `D.` (duplicated as `D_aug.D.`) is a placeholder of a
    few tensors, so the official code could not resume training from this file; the generator tensors
    are exact."""
    ema = official_generator_state_dict(generator)
    raw = ema if raw_generator is None else official_generator_state_dict(raw_generator)
    discriminator = _placeholder_discriminator(generator.config.channels)
    gan: dict[str, torch.Tensor] = {}
    # The official GAN registers G, D, GE, then D_aug (a wrapper holding the same D).
    for prefix, part in (("G.", raw), ("D.", discriminator), ("GE.", ema), ("D_aug.D.", discriminator)):
        gan.update({prefix + key: value for key, value in part.items()})
    return {
        "GAN": gan,
        "version": OFFICIAL_VERSION,
        "G_scaler": {},  # GradScaler(enabled=False).state_dict(): the official default is amp off
        "D_scaler": {},
        "G_opt": _adam_state([v for k, v in raw.items() if not is_alias(k)], optimizer_state),
        "D_opt": _adam_state(list(discriminator.values()), optimizer_state),
    }


def save_official_checkpoint(path: str | os.PathLike, generator: FPAGenerator, **kwargs) -> Path:
    """Write `official_checkpoint(generator, **kwargs)` with torch.save, as the official code does."""
    ckpt = official_checkpoint(generator, **kwargs)
    return atomic_write(path, lambda handle: torch.save(ckpt, handle))


def _placeholder_discriminator(channels: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = {"residual_layers.0.0.branches.0.0.weight": (8, channels, 4, 4),
              "residual_layers.0.0.branches.0.0.bias": (8,),
              "to_logits.3.weight": (1, 8, 4, 4), "to_logits.3.bias": (1,)}
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def _adam_state(tensors: list[torch.Tensor], with_state: bool) -> dict:
    """A real Adam state dict (lr 2e-4, betas (0.5, 0.9), as the official optimisers)."""
    params = [torch.nn.Parameter(t.detach().clone()) for t in tensors]
    optimizer = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.9))
    if with_state:
        for param in params:
            param.grad = torch.full_like(param, 1e-3)
        optimizer.step()
    return optimizer.state_dict()
