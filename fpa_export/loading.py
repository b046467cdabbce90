"""`load_generator`: from a checkpoint path (or the embedded default model) to a ready generator."""
from __future__ import annotations

import os
from typing import Optional

import torch

from fpa_export.models import FPAGenerator, default_checkpoint_path, load_checkpoint


def resolve_checkpoint(path: Optional[str | os.PathLike] = None):
    """The checkpoint to use: `path`, or the embedded default model when None."""
    return default_checkpoint_path() if path is None else path


def load_generator(path: Optional[str | os.PathLike] = None,
                   device: str | torch.device = "cpu") -> FPAGenerator:
    """An eval-mode generator with `.config` (FPAConfig; `.config.unet` holds the U-Net config when
    present), `.latent_size` and `forward(z)`: (B, latent_size) → images (B, C, S, S) in [-1, 1].

    `path=None` loads the embedded default model. Raises `models.CheckpointError` with a one-line
    message for anything that is not a valid checkpoint.
    """
    generator, _ = load_checkpoint(resolve_checkpoint(path), device=device)
    return generator
