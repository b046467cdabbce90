"""Optional warm-up before the GAN: Implicit Maximum Likelihood Estimation (Li & Malik, 2018).

Not in the FPA paper. For every real image of a batch, the generator draws a pool of `pool` × batch
latents (no gradients), picks the sample nearest to that real image in pixel space (squared L2), and is
trained to move that sample onto the real one. Every real image pulls some sample towards itself, so
no mode of the data can be dropped — the opposite failure to a GAN's mode collapse — at the price of
blurrier images, which the GAN steps that follow sharpen.
"""
from __future__ import annotations

import torch


def nearest_latents(generate, reals: torch.Tensor, latents: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The latent (one row of `latents`) whose image is nearest to each real image; no gradients."""
    with torch.no_grad():
        images = torch.cat([generate(part).float().flatten(1) for part in latents.split(chunk)])
        distances = torch.cdist(reals.float().flatten(1), images)  # (B, pool)
    return latents[distances.argmin(dim=1)]


def imle_loss(generate, reals: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel distance between each real image and its nearest sample, differentiable."""
    chosen = nearest_latents(generate, reals, latents)
    return (generate(chosen).float() - reals.float()).pow(2).mean()
