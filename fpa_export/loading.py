"""`load_generator`: from a checkpoint path (or the embedded default model) to a ready generator."""
from __future__ import annotations

import os
from typing import Optional

import torch

from fpa_export.models import FPAGenerator, default_checkpoint_path, load_checkpoint


def resolve_checkpoint(path: Optional[str | os.PathLike] = None):
    """The checkpoint to use: `path`, or the embedded default model when None."""
    return default_checkpoint_path() if path is None else path


def load_generator(path: Optional[str | os.PathLike] = None, device: str | torch.device = "cpu",
                   precision: Optional[str] = "fp32", requires_grad: bool = False) -> FPAGenerator:
    """An eval-mode generator with `.config` (FPAConfig; `.config.unet` holds the U-Net config when
    present), `.latent_size` and `forward(z)`: (B, latent_size) float32 → images (B, C, S, S) float32
    in [-1, 1].

    `path=None` loads the embedded default model. `precision` "bf16"/"fp16" casts the weights (None:
    fp32, the checkpoint's own, as `make_sampler(precision=None)` uses a model's own precision; the
    LSTM and projections then run in that precision; the delta rule and final tanh stay fp32); a
    device that cannot run it is refused with one line (`runtime.precision.check_precision`). Unlike
    the samplers, this generator is not probed against fp32 and keeps the checkpoint's own layers (the
    samplers fold the step input into the LSTM in low precision, `models.fold`). The parameters do
    not require grad unless `requires_grad=True`, so `gen(z).clamp(0, 1).numpy()` works as it is.
    Raises `models.CheckpointError` with a one-line message for anything that is not a valid
    checkpoint.
    """
    from fpa_export.common.devices import check_device
    from fpa_export.runtime.precision import check_precision, torch_dtype

    device = check_device(str(device))  # one line for a device this machine lacks
    precision = check_precision("fp32" if precision is None else precision, device)
    generator, _ = load_checkpoint(resolve_checkpoint(path), device=device)
    generator.requires_grad_(requires_grad)
    return generator.to(dtype=torch_dtype(precision)) if precision != "fp32" else generator
