"""The frames of a painting (docs/MODEL.md §4): per-step rank-1 updates and partial sums, made visible.

Raw frames are nearly black early on (one rank-1 update is tiny next to the finished canvas), so, as
in the paper, every frame x of a sample is rescaled to the Frobenius norm of THAT sample's final canvas
W_T before the activation:

    x ← x · ‖W_T‖ / ‖x‖        (norms over C×S×S of one sample; a zero frame stays zero)

then squashed with tanh whenever the model's image is (a final tanh, or the tanh before a U-Net), and
shown in [0, 1] like a saved sample (`fpa_export.common.images.to_uint8` clamps negatives to black). The official
code took these norms over the whole batch, which makes one sample's frames depend on the others; here
they are per sample, so the frames of seed 3 are the same whether or not seed 4 is drawn beside it.
The last partial sum is W_T itself (scale 1), so the last frame of a model without U-Net is its sample
image (up to float rounding: within one uint8 level). U-Net models get one more frame: the refined
image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAConfig
from fpa_export.sampling.latents import latents_for

EPS = 1e-12


@dataclass
class PaintingFrames:
    """Display-ready frames of B samples, values in [-1, 1] like images."""
    updates: torch.Tensor             # (B, T, C, S, S) rescaled rank-1 updates
    partials: torch.Tensor            # (B, T, C, S, S) rescaled partial sums; [:, -1] is the painting
    refined: Optional[torch.Tensor]   # (B, C, S, S) the U-Net's image, None without a U-Net
    config: FPAConfig


def rescale_to_final(frames: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """frames (B, T, C, S, S) · ‖canvas_b‖ / ‖frame_bt‖, per sample b and step t."""
    target = canvas.flatten(1).norm(dim=1)  # (B,)
    norms = frames.flatten(2).norm(dim=2)  # (B, T)
    scale = target[:, None] / norms.clamp_min(EPS)  # (B, T)
    return frames * scale[:, :, None, None, None]


def uses_tanh(config: FPAConfig) -> bool:
    """Frames are squashed like the painted image: by the final tanh, or the one before a U-Net."""
    return config.out_tanh or (config.unet is not None and config.unet.pre_tanh)


def display_frames(updates: torch.Tensor, partials: torch.Tensor, config: FPAConfig,
                   refined: Optional[torch.Tensor] = None) -> PaintingFrames:
    """Raw (B, T, C, S, S) updates and partial sums → rescaled, squashed PaintingFrames."""
    canvas = partials[:, -1]  # W_T (B, C, S, S)
    updates, partials = rescale_to_final(updates, canvas), rescale_to_final(partials, canvas)
    if uses_tanh(config):
        updates, partials = torch.tanh(updates), torch.tanh(partials)
    return PaintingFrames(updates, partials, refined, config)


def paint(sampler, seeds: Sequence[int], index: int = 0, truncation: float = 1.0) -> PaintingFrames:
    """Frames of image `index` of each seed (the file {index:06d}.png of `fpa-sample --seed S`)."""
    config = sampler.config
    z = torch.cat([latents_for([index], seed, sampler.latent_size, truncation) for seed in seeds])
    with torch.inference_mode():
        updates, partials = sampler.steps(z)  # (B, T, C, S, S) each
        refined = None
        if config.unet is not None:
            try:
                refined = sampler(z)  # (B, C, S, S)
            except NotImplementedError:
                raise FpaError("a U-Net model's refined frame needs its image graph: give the "
                                 "checkpoint (with --backend onnx to run it in onnxruntime)") from None
    return display_frames(updates.float(), partials.float(), config, refined)
