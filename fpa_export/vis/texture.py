"""Texture synthesis by Gram matching with a random VGG-19 (He, Wang & Hopcroft 2016, §3.2).

Gatys et al.'s layers (conv1_1 and pool1–pool4) and loss, with the paper's automatic per-layer weights
(inversely proportional to each layer's initial gradient magnitude, `losses.set_automatic_weights`),
without which a random network's loudest layer drowns the others.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from fpa_export.fd.features import RandomVGG19
from .losses import make_terms, set_automatic_weights, total_loss
from .optimize import Optimisation, lbfgs, white_noise

TEXTURE_LAYERS = ("conv1_1", "pool1", "pool2", "pool3", "pool4")


def synthesize_texture(source: torch.Tensor, network: Optional[RandomVGG19] = None,
                       layers: Sequence[str] = TEXTURE_LAYERS, size: Optional[int] = None,
                       steps: int = 200, init_seed: int = 0, frame_every: int = 0,
                       progress: bool = True) -> tuple[Optimisation, dict[str, float]]:
    """A new image (1, 3, size, size) with the Gram statistics of `source`; also the layer weights."""
    network = network or RandomVGG19()
    terms = make_terms(network, source, layers, "gram")
    start = white_noise(size or source.shape[-1], init_seed)
    weights = set_automatic_weights(network, terms, start)
    result = lbfgs(start, lambda x: total_loss(network, terms, x), steps=steps,
                   frame_every=frame_every, label="texture", progress=progress)
    return result, weights
