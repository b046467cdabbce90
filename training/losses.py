"""GAN losses of the official code (docs/MODEL.md §6), with its sign convention.

The discriminator pushes real logits below −1 and fake logits above +1; the generator minimises the mean
fake logit. Both heads (full image and 32×32) use the same losses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fpa_export.common.errors import FpaError


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 + D(real)) + relu(1 − D(fake)))."""
    return (F.relu(1 + real_logits) + F.relu(1 - fake_logits)).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(D(fake)): the generator wants its images to score low, like the reals."""
    return fake_logits.mean()


def gradient_penalty(real: torch.Tensor, outputs: list[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
    """mean over the batch of (‖∂ Σ_heads Σ D(real) / ∂real‖₂ − 1)², differentiable (double backward).

    `real` must require grad and `outputs` must have been computed from it. `scale` is the mixed-precision
    loss scale: the gradients are taken of the scaled outputs (so fp16 does not underflow), then unscaled.
    """
    grads = torch.autograd.grad(outputs=[o.sum() * scale for o in outputs], inputs=real,
                                create_graph=True)[0] / scale
    return ((grads.reshape(grads.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def mode_seeking_loss(fakes: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking regulariser (Mao et al., CVPR 2019; not in the FPA paper): 1 / (ratio + eps).

    The batch is split into two halves paired in order; ratio = mean |G(z₁) − G(z₂)| / mean |z₁ − z₂|
    (mean over pairs of per-pair L1 means). Minimising it asks different latents for different images,
    a direct counter to mode collapse. Needs at least two images.
    """
    half = fakes.shape[0] // 2
    if half == 0:
        raise FpaError("the mode-seeking loss needs a batch of at least 2 images")
    image_gap = (fakes[:half] - fakes[half:2 * half]).abs().flatten(1).mean(1)
    latent_gap = (latents[:half] - latents[half:2 * half]).abs().flatten(1).mean(1)
    return 1.0 / ((image_gap / latent_gap).mean() + eps)
