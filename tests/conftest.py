"""Shared test fixtures: tiny configs (8×8 images, 4 steps, hidden 16) so the suite runs in seconds."""
from __future__ import annotations

import pytest
import torch

from fpa_export.models import FPAConfig, FPAGenerator, UNetConfig

torch.set_num_threads(1)  # two cores, several test processes: keep each one lean and deterministic


def tiny_config(**changes) -> FPAConfig:
    base = dict(image_size=8, channels=3, num_steps=4, latent_size=8, mini_latent_size=2,
                input_size=6, hidden_size=16)
    base.update(changes)
    return FPAConfig(**base)


def tiny_unet_config(channels: int = 3) -> UNetConfig:
    return UNetConfig(channels=channels, dim=8, dim_mults=(1, 2), resnet_groups=4, attn_heads=2,
                      attn_dim_head=4)


TINY_VARIANTS = {
    "v2": dict(),
    "v1": dict(input_generator="v1"),
    "grey": dict(channels=1),
    "v2_unet": dict(unet=tiny_unet_config(3)),
}


def make_generator(seed: int = 0, **changes) -> FPAGenerator:
    torch.manual_seed(seed)
    return FPAGenerator(tiny_config(**changes)).eval()


@pytest.fixture(params=sorted(TINY_VARIANTS))
def tiny_variant(request):
    """(name, config changes) for v1, v2, greyscale and U-Net tiny models."""
    return request.param, TINY_VARIANTS[request.param]


def flat_images(folder, values, shape):
    """`folder` (created) holding `k.png` for each k: an image of `shape` filled with `values[k]`;
    returns the folder. Stand-in real images for the real-image folder and statistics."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for k, value in enumerate(values):
        Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(folder / f"{k}.png")
    return folder
